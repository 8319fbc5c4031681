"""Kill tests: a stage killed at any point and run again ends exactly where an uninterrupted run
does.

What is injected: SIGKILL (no ``finally``, no ``atexit``) sent to ``python -m stages.<stage>``
at a seeded random moment of its run, for ``download``, ``prepare``, ``lt_index``, ``train`` and
``evaluate``; and SIGKILL from inside ``torch.save`` (``train``: a checkpoint or the model) or
``os.replace`` (``download``, ``prepare``, ``lt_index``), through a wrapper that patches them,
once an output's temporary file is written, either torn to half its size or whole but not yet
renamed. The stage is then run again to completion, and its
outputs must be complete (no temporaries left, no file missing) and equal those of a run never
interrupted: bytes for raw files, splits and CSVs, parsed arrays for ``.npz``, tensors and
fields for models, values (not wall-clock columns) for DVCLive logs, parsed JSON for metrics.
On the CPU a resumed training run is bit-identical to an uninterrupted one.

The project is a temporary copy (``ltcifar/``, ``stages/``, a shrunk ``params.yaml``) on tiny
Fashion-MNIST IDX files from ``tests/archives.py``: 3 epochs, ``checkpoint_every: 1``.
``KILL_POINTS`` random kills per stage by default; the long version:
``LTCIFAR_KILL_POINTS=20 pytest -s tests/test_kill.py``.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.archives import md5_of, write_fashion_idx

pytestmark = pytest.mark.slow  # every test here runs stages in subprocesses

ROOT = Path(__file__).resolve().parents[1]
KILL_POINTS = int(os.environ.get("LTCIFAR_KILL_POINTS", "2"))  # random kills per stage
SEED = 11
STAGES = ("download", "prepare", "lt_index", "train", "evaluate")
OUTPUTS = {
    "download": ("data/raw",),
    "prepare": ("data/prepared",),
    "lt_index": ("data/splits",),
    "train": ("models", "logs", "checkpoints"),
    "evaluate": ("metrics",),
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
INJECTED: Counter = Counter()  # stage -> kills that landed
IDENTICAL: Counter = Counter()  # stage -> of those, reruns identical to the uninterrupted run

# Runs a stage with torch.save (KILL_AT_SAVE) or os.replace (KILL_AT_REPLACE) patched to
# SIGKILL the process at its N-th call, once the temporary file is written but before it is
# renamed, leaving it torn to half its size (KILL_MODE=torn) or whole (KILL_MODE=whole).
HOOK = """
import os, runpy, signal, sys

MODE, calls = os.environ["KILL_MODE"], [0]
def die(tmp):
    if MODE == "torn":
        os.truncate(tmp, os.path.getsize(tmp) // 2)
    os.kill(os.getpid(), signal.SIGKILL)
if "KILL_AT_SAVE" in os.environ:
    import torch
    AT, real_save = int(os.environ["KILL_AT_SAVE"]), torch.save
    def save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        calls[0] += 1
        if calls[0] == AT:
            die(f)
    torch.save = save
elif "KILL_AT_WRITE_TEXT" in os.environ:
    import pathlib
    AT, real_write = int(os.environ["KILL_AT_WRITE_TEXT"]), pathlib.Path.write_text
    def write_text(self, data, *args, **kwargs):
        calls[0] += 1
        if calls[0] == AT:
            real_write(self, data[: len(data) // 2], *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        return real_write(self, data, *args, **kwargs)
    pathlib.Path.write_text = write_text
else:
    AT, real_replace = int(os.environ["KILL_AT_REPLACE"]), os.replace
    def replace(src, dst, *args, **kwargs):
        calls[0] += 1
        if calls[0] == AT:
            die(src)
        real_replace(src, dst, *args, **kwargs)
    os.replace = replace
module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def _params(raw_dir: Path) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    quick = params["profiles"]["quick"]
    step = {"dataset": "fashion_mnist", "shape": "step", "n_max": 20, "n_min": 4, "k": 1,
            "val_per_class": 2}  # fmt: skip
    quick["splits"] = {"step": step}
    quick["budget"].update(epochs=3, batch_size=16, checkpoint_every=1, seeds=[0])
    params["profiles"]["full"]["splits"] = {"step": params["profiles"]["full"]["splits"]["step"]}
    params.update(split="step", runs={}, transfer_runs={}, second_stages={})
    files = sorted(raw_dir.iterdir())
    params["download"]["fashion_mnist"] = {
        "sources": [str(raw_dir)],
        "md5": {f.name: [md5_of(f)] for f in files},
    }
    return params


def _stage(root: Path, stage: str, hook: dict | None = None) -> subprocess.Popen:
    args = ["candidate"] if stage in ("train", "evaluate") else []
    if hook is None:
        cmd = [sys.executable, "-m", f"stages.{stage}", *args]
    else:
        cmd = [sys.executable, "killhook.py", f"stages.{stage}", *args]
    env = {**ENV, **{k: str(v) for k, v in (hook or {}).items()}}
    return subprocess.Popen(
        cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _finish(root: Path, stage: str) -> None:
    proc = _stage(root, stage)
    _, err = proc.communicate()
    assert proc.returncode == 0, err


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    """The project after one uninterrupted run of every stage, and each stage's duration."""
    root = tmp_path_factory.mktemp("reference")
    raw = tmp_path_factory.mktemp("archives")
    write_fashion_idx(raw, n_train=400, n_test=60)
    for name in ("ltcifar", "stages"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "params.yaml").write_text(yaml.safe_dump(_params(raw), sort_keys=False))
    (root / "killhook.py").write_text(HOOK)
    _finish(root, "configs")
    seconds = {}
    for stage in STAGES:
        t0 = time.perf_counter()
        _finish(root, stage)
        seconds[stage] = time.perf_counter() - t0
    return root, seconds


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    print(
        f"\nkill tests: {sum(IDENTICAL.values())}/{sum(INJECTED.values())} killed runs "
        "identical after a rerun"
    )
    for stage in sorted(INJECTED):
        print(f"  {stage}: {IDENTICAL[stage]}/{INJECTED[stage]}")


def _before(reference: Path, stage: str, dest: Path) -> Path:
    """A copy of the reference project as it was just before ``stage`` ran."""
    shutil.copytree(reference, dest, ignore=shutil.ignore_patterns("__pycache__"))
    for later in STAGES[STAGES.index(stage) :]:
        for out in OUTPUTS[later]:
            shutil.rmtree(dest / out, ignore_errors=True)
    return dest


def _files(root: Path, stage: str) -> dict[str, Path]:
    return {
        str(p.relative_to(root)): p
        for out in OUTPUTS[stage]
        for p in sorted((root / out).rglob("*"))
        if p.is_file()
    }


def _tsv_values(path: Path) -> list[list[str]]:
    """A DVCLive TSV without its wall-clock column."""
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    drop = rows[0].index("timestamp") if "timestamp" in rows[0] else None
    return [[c for i, c in enumerate(r) if i != drop] for r in rows]


def _same(a: Path, b: Path) -> bool:
    if a.suffix == ".npz":
        with np.load(a) as x, np.load(b) as y:
            return x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files)
    if a.suffix == ".pt":
        x, y = torch.load(a, weights_only=False), torch.load(b, weights_only=False)
        sx, sy = x.pop("state_dict"), y.pop("state_dict")
        return x == y and sx.keys() == sy.keys() and all(torch.equal(sx[k], sy[k]) for k in sx)
    if a.stem == "img_per_s":
        return True  # throughput: wall-clock, never equal between two runs
    if a.suffix == ".tsv":
        return _tsv_values(a) == _tsv_values(b)
    if a.suffix == ".json":
        x, y = json.loads(a.read_text()), json.loads(b.read_text())
        for d in (x, y):  # DVCLive's summary: drop the wall-clock throughput
            d.pop("img_per_s", None)
        return x == y
    return a.read_bytes() == b.read_bytes()


def _check(root: Path, reference: Path, stage: str) -> None:
    got, want = _files(root, stage), _files(reference, stage)
    assert sorted(got) == sorted(want), "a file is missing, extra or a leftover temporary"
    for rel in want:
        assert _same(got[rel], want[rel]), rel


def _kill_and_rerun(root: Path, reference: Path, stage: str, hook=None, delay=None) -> None:
    proc = _stage(root, stage, hook)
    try:
        proc.wait(timeout=delay)
        killed = proc.returncode == -signal.SIGKILL
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = True
    if killed:
        INJECTED[stage] += 1
    _finish(root, stage)
    _check(root, reference, stage)
    if killed:
        IDENTICAL[stage] += 1


@pytest.mark.parametrize("stage", STAGES)
def test_stage_killed_at_random_points_reruns_to_the_same_outputs(reference, tmp_path, stage):
    ref, seconds = reference
    rng = random.Random(f"{SEED}-{stage}")
    for i in range(KILL_POINTS):
        root = _before(ref, stage, tmp_path / f"kill{i}")
        _kill_and_rerun(root, ref, stage, delay=rng.uniform(0.05, 1.0) * seconds[stage])


# torch.save calls of the tiny run: checkpoints after epochs 1, 2, 3, then the model.
SAVES = [(1, "torn"), (2, "whole"), (3, "torn"), (4, "torn"), (4, "whole")]


@pytest.mark.parametrize(("at", "mode"), SAVES, ids=[f"save{a}-{m}" for a, m in SAVES])
def test_train_killed_while_writing_a_checkpoint_resumes_bit_identically(
    reference, tmp_path, at, mode
):
    ref, _ = reference
    root = _before(ref, "train", tmp_path / "project")
    _kill_and_rerun(root, ref, "train", hook={"KILL_AT_SAVE": at, "KILL_MODE": mode})


# os.replace calls: download renames its 4 files one by one; prepare and lt_index one each.
RENAMES = [
    ("download", 1, "torn"),
    ("download", 3, "whole"),
    ("prepare", 1, "torn"),
    ("prepare", 1, "whole"),
    ("lt_index", 1, "torn"),
]


@pytest.mark.parametrize(
    ("stage", "at", "mode"), RENAMES, ids=[f"{s}-{a}-{m}" for s, a, m in RENAMES]
)
def test_data_stage_killed_before_a_rename_reruns_to_the_same_outputs(
    reference, tmp_path, stage, at, mode
):
    ref, _ = reference
    root = _before(ref, stage, tmp_path / "project")
    _kill_and_rerun(root, ref, stage, hook={"KILL_AT_REPLACE": at, "KILL_MODE": mode})


def test_evaluate_killed_while_writing_metrics_leaves_old_or_new_file(reference, tmp_path):
    ref, _ = reference
    root = tmp_path / "project"
    shutil.copytree(ref, root, ignore=shutil.ignore_patterns("__pycache__"))
    # evaluate writes per_class.csv, confusion.csv, then metrics/candidate.json: the third
    proc = _stage(root, "evaluate", hook={"KILL_AT_WRITE_TEXT": 3, "KILL_MODE": "torn"})
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    old = (ref / "metrics/candidate.json").read_text()
    assert (root / "metrics/candidate.json").read_text() == old  # torn in its temporary only
    json.loads(old)


def test_saved_model_bytes_do_not_depend_on_the_process(tmp_path):
    from ltcifar.training.checkpoints import save_atomic

    save_atomic({"w": torch.ones(2)}, tmp_path / "seed0.pt")
    with zipfile.ZipFile(tmp_path / "seed0.pt") as z:
        assert str(os.getpid()) not in z.namelist()[0], z.namelist()[0]
