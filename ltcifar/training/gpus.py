"""One device per queue worker: `dvc queue start -j N` runs N experiments at once but assigns no
GPUs, so each worker would pick ``cuda:0``, or on the CPU start a torch thread per core (N × cores).

DVC tells a stage no worker number (each experiment runs in its own temp copy), so a worker holds
an exclusive ``flock`` on ``<slots>/slot<k>.lock`` until it exits (the kernel frees it even on a
kill); the k-th concurrent stage gets the k-th device. ``LTCIFAR_WORKER=<k>`` (SLURM) skips this.
"""

import fcntl
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads only when a device is chosen: slot claims stay instant
    import torch

SLOTS = Path(os.environ.get("LTCIFAR_SLOTS", Path(tempfile.gettempdir()) / "ltcifar-slots"))
_held: list[int] = []  # file descriptors of claimed slots: closing one frees its slot


def visible_devices(env: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs this process may use, by ``CUDA_VISIBLE_DEVICES`` (ids or UUIDs), else all."""
    env = os.environ if env is None else env
    if (listed := env.get("CUDA_VISIBLE_DEVICES")) is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def claim_slot(slots: Path = SLOTS, limit: int = 256) -> int:
    """The lowest slot no live process holds; held for this process's lifetime."""
    slots.mkdir(parents=True, exist_ok=True)
    for k in range(limit):
        fd = os.open(slots / f"slot{k}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _held.append(fd)
        return k
    raise RuntimeError(f"all {limit} slots under {slots} are held")


def pick_device(devices: list[str], worker: int) -> str:
    return devices[worker % len(devices)] if devices else "cpu"


def cpu_threads(workers: int, cores: int | None = None) -> int:
    """Threads per worker: ``workers`` concurrent workers share the cores, never oversubscribed."""
    cores = cores or len(os.sched_getaffinity(0))
    return max(1, cores // max(1, workers))


def pin_worker(env: Mapping[str, str] | None = None, slots: Path = SLOTS) -> "torch.device":
    """This worker's device, and on the CPU with ``LTCIFAR_WORKERS=N`` (``-j N``) torch's threads:
    cores // N. Call before the first CUDA call: with ``CUDA_VISIBLE_DEVICES`` set, the chosen GPU
    becomes the only visible one, ``cuda:0`` (the driver reads the variable once); unset, counting
    the GPUs has fixed the variable, so the chosen one becomes torch's current device instead."""
    import torch

    env = os.environ if env is None else env
    devices = visible_devices(env)
    worker = int(env["LTCIFAR_WORKER"]) if "LTCIFAR_WORKER" in env else claim_slot(slots)
    device = pick_device(devices, worker)
    if device == "cpu":
        if "LTCIFAR_WORKERS" in env:  # else torch's (or OMP_NUM_THREADS's) choice stands
            torch.set_num_threads(cpu_threads(int(env["LTCIFAR_WORKERS"])))
        return torch.device("cpu")
    if "CUDA_VISIBLE_DEVICES" in env:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
        return torch.device("cuda", 0)
    torch.cuda.set_device(int(device))
    return torch.device("cuda", int(device))
