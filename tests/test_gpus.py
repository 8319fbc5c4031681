"""GPU pinning for queued sweeps, on fake device lists: no GPU needed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ltcifar.training import gpus

ROOT = Path(__file__).resolve().parents[1]


def test_visible_devices_follow_cuda_visible_devices():
    assert gpus.visible_devices({"CUDA_VISIBLE_DEVICES": "3, 5"}) == ["3", "5"]
    assert gpus.visible_devices({"CUDA_VISIBLE_DEVICES": "GPU-ab12,GPU-cd34"}) == [
        "GPU-ab12",
        "GPU-cd34",
    ]
    assert gpus.visible_devices({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert gpus.visible_devices({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_round_robin_and_cpu_threads():
    devices = ["3", "5"]
    assert [gpus.pick_device(devices, k) for k in range(5)] == ["3", "5", "3", "5", "3"]
    assert gpus.pick_device([], 2) == "cpu"
    assert gpus.cpu_threads(workers=2, cores=16) == 8
    assert gpus.cpu_threads(workers=3, cores=16) == 5
    assert gpus.cpu_threads(workers=4, cores=2) == 1  # never 0


def test_slots_are_distinct_while_held_and_reused_when_freed(tmp_path):
    # Earlier tests may hold slots of the default folder (a stage run in-process claims one):
    # release only this test's own descriptors, found after those.
    before = len(gpus._held)
    first, second = gpus.claim_slot(tmp_path), gpus.claim_slot(tmp_path)
    assert (first, second) == (0, 1)
    os.close(gpus._held.pop(before))  # the first worker exits
    assert gpus.claim_slot(tmp_path) == 0
    for fd in gpus._held[before:]:
        os.close(fd)
    del gpus._held[before:]


def test_concurrent_processes_get_different_slots(tmp_path):
    """Like two queue workers: a live process's slot is skipped; a dead one's is free again."""
    code = (
        "import sys, time; from pathlib import Path; from ltcifar.training.gpus import claim_slot; "
        "print(claim_slot(Path(sys.argv[1])), flush=True); time.sleep(30)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", code, str(tmp_path)]
    a = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert a.stdout.readline().strip() == "0"
        b = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
        assert b.stdout.readline().strip() == "1"
        b.kill()
        b.wait()
    finally:
        a.kill()
        a.wait()
    c = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    assert c.stdout.readline().strip() == "0"  # the kernel freed the killed workers' locks
    c.kill()
    c.wait()


def test_pin_worker_exposes_one_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    env = {"CUDA_VISIBLE_DEVICES": "3,5", "LTCIFAR_WORKER": "1"}
    assert gpus.pin_worker(env, tmp_path) == torch.device("cuda:0")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"


def test_pin_worker_without_cuda_visible_devices_sets_the_current_device(monkeypatch, tmp_path):
    chosen = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert gpus.pin_worker({"LTCIFAR_WORKER": "6"}, tmp_path) == torch.device("cuda", 2)
    assert chosen == [2]


@pytest.mark.parametrize(("workers", "expected"), [("1", 16), ("4", 4), (None, 3)])
def test_pin_worker_on_cpu_sets_threads(monkeypatch, tmp_path, workers, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)))
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        env = {"CUDA_VISIBLE_DEVICES": "", "LTCIFAR_WORKER": "0"}
        if workers is not None:
            env["LTCIFAR_WORKERS"] = workers
        assert gpus.pin_worker(env, tmp_path) == torch.device("cpu")
        assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(threads)
