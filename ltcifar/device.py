"""Which device a stage runs on, how it is named in the metrics, and every choice that differs
between the CPU and CUDA (autocast, compile, SGD kernel, determinism flags, DDP backend,
SyncBatchNorm), each a named function of the device type and the settings it needs, so that
every setting is read whichever device runs: a setting read only on CUDA's branch would fail
on a GPU alone. Their CUDA choices are tested on the CPU by naming the device type."""

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import cast

import torch

from ltcifar.errors import PipelineError


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """The card's or CPU's model name, so every reported number says which machine made it."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    models = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
    return f"cpu: {models[0] if models else 'unknown'} ({torch.get_num_threads()} threads)"


def compiled(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """``compile: always`` wraps the model in torch.compile (tens of seconds to compile);
    ``never``, the default, runs it eager: default-mode compiling made these small nets' steps
    slower on an H200 (docs/speed.md)."""
    # torch.compile of a module returns a module; its stub says a callable
    return cast(torch.nn.Module, torch.compile(model)) if mode == "always" else model


def autocast_dtype(device_type: str, precision: str) -> torch.dtype | None:
    """The autocast dtype of a ``precision`` on a kind of device, None for fp32. ``auto`` is
    bf16 on CUDA, whose tensor cores run it at full speed, and fp32 on the CPU, where most cores
    emulate bf16; ``bf16`` is bf16 on every device."""
    if precision == "bf16" or (precision == "auto" and device_type == "cuda"):
        return torch.bfloat16
    return None


def autocast_for(device: torch.device, precision: str) -> AbstractContextManager:
    """The autocast context of a forward pass (``autocast_dtype``), or none."""
    dtype = autocast_dtype(device.type, precision)
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def sgd_kernel(device_type: str) -> dict[str, bool]:
    """SGD's fused kernel on CUDA (one launch per step), the foreach one on the CPU."""
    return {"fused": True} if device_type == "cuda" else {"foreach": True}


def set_determinism(device_type: str, deterministic: bool) -> None:
    """``deterministic``: cuBLAS's workspace setting (read when CUDA first calls cuBLAS; without
    it a deterministic CUDA run raises), and on CUDA cuDNN's autotuner off and deterministic
    kernels only; the CPU's kernels are deterministic already, so it changes nothing there."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if device_type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.use_deterministic_algorithms(deterministic)


def process_group_backend(device_type: str) -> str:
    """The collective backend of DDP: NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if device_type == "cuda" else "gloo"


def syncs_batchnorm(device_type: str, world_size: int) -> bool:
    """Whether BatchNorm normalises over the global batch: with several ranks on CUDA only
    (SyncBatchNorm does not run on CPU tensors)."""
    return world_size > 1 and device_type == "cuda"


@contextmanager
def out_of_memory_hint(what: str) -> Iterator[None]:
    """Out of device memory as one line naming the setting to lower: ``eval_batch_size`` is not in
    the fingerprint (it changes nothing learnt), so the run resumes; ``batch_size`` is a new run."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not isinstance(e, torch.OutOfMemoryError) and "can't allocate memory" not in str(e):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PipelineError(
            f"{what} ran out of memory ({first}); lower eval_batch_size (validation and "
            "testing; the run resumes from its last checkpoint) or batch_size (training; a new "
            "run), e.g. dvc exp run -S +eval_batch_size=256"
        ) from e
