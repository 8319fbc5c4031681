"""The GPU study kit's CPU path, on a tiny JPEG image folder packed like the CIFAR-10 copy:
`benchmarks/gpu_study.sh` runs every stage module by hand, trains the first stages in parallel,
and prints one table with every run it was given."""

import copy
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from study_params import shortened  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_study.sh"
CLASSES = [f"c{i}" for i in range(10)]


def pack(tmp_path: Path) -> Path:
    """train/<class>/NNNN.jpg (24 a class) and test/<class>/NNNN.jpg (4), 32x32, as a .tar.gz."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "jpeg"
    for part, n in (("train", 24), ("test", 4)):
        for c, cls in enumerate(CLASSES):
            (folder / part / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 40, (32, 32, 3)) + 20 * c
                Image.fromarray(pixels.astype(np.uint8)).save(folder / part / cls / f"{i:04d}.jpg")
    tar = tmp_path / "cifar10-jpeg.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        for part in ("train", "test"):
            t.add(folder / part, arcname=part)
    return tar


def tiny_params(tmp_path: Path) -> Path:
    """The study's params, its gpu profile shrunk to this folder and one epoch."""
    params = yaml.safe_load((ROOT / "studies" / "cifar10_lt.params.yaml").read_text())
    gpu = params["profiles"]["gpu"]
    exp = {"dataset": "cifar10_jpeg", "shape": "exp", "n_max": 20, "imbalance": 10,
           "sampling": "ldam", "val_policy": "exact", "val_per_class": 2}  # fmt: skip
    gpu["splits"] = {"exp100": exp}
    gpu["budget"].update(epochs=1, warmup_epochs=0, milestones=[1, 1], batch_size=16)
    gpu["recipe"]["eval_batch_size"] = 64
    for name in params["second_stages"]:
        params["second_stages"][name]["batch_size"] = 16
    params["download"]["cifar10_jpeg"]["sha256"] = ""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(copy.deepcopy(params), sort_keys=False))
    return path


def run_kit(tmp_path: Path, **names: str) -> subprocess.CompletedProcess:
    """The kit on the CPU, on the tiny folder and params; ``names``: RUNS and SECOND if given."""
    out, data, params = tmp_path / "out", pack(tmp_path), tiny_params(tmp_path)
    env = {**os.environ, "PY": sys.executable, "DEVICE": "cpu", "DATA": str(data), "OUT": str(out),
           "PARAMS": str(params), "OMP_NUM_THREADS": "1", "BUDGET": "900", **names}  # fmt: skip
    return subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True)


def table_rows(stdout: str) -> list[str]:
    return [ln for ln in stdout.splitlines() if ln.startswith("| `")]


@pytest.mark.slow
def test_cpu_path_trains_every_run_and_prints_the_table(tmp_path):
    out = tmp_path / "out"
    proc = run_kit(tmp_path, RUNS="exp_ce exp_balanced_softmax exp_ldam_drw exp_balpoe")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = table_rows(proc.stdout)
    names = ["exp_ce", "exp_balanced_softmax", "exp_ldam_drw", "exp_balpoe", "exp_ce_crt",
             "exp_ce_lws", "exp_ce_tau_norm", "exp_ce_posthoc_la"]  # fmt: skip
    assert [ln.split("`")[1] for ln in table] == names, proc.stdout[-3000:]
    assert not any("not finished" in ln for ln in table)
    assert all(ln.split(" | ")[3] == "1" for ln in table)  # the epochs column
    assert "Training device: cpu" in proc.stdout
    for name in names:
        assert (out / "metrics" / f"{name}.json").is_file(), name
    assert (out / "REPORT.md").is_file()
    assert "FAILED" not in proc.stdout


@pytest.mark.slow
def test_a_failed_run_or_second_stage_fails_the_call_naming_it(tmp_path):
    """A run that fails (here: no such run) and a second stage that fails (here: its first run
    was not trained) keep their table rows, as not finished, and the call exits 1 naming both."""
    proc = run_kit(tmp_path, RUNS="exp_nosuch", SECOND="exp_ce_posthoc_la")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = table_rows(proc.stdout)
    assert [ln.split("`")[1] for ln in rows] == ["exp_nosuch", "exp_ce_posthoc_la"], rows
    assert all("not finished" in ln for ln in rows)
    (failed,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("## FAILED: ")]
    assert "train_exp_nosuch" in failed and "second_exp_ce_posthoc_la" in failed, failed
    assert proc.stdout.rstrip().endswith(failed)


def test_a_shortened_schedule_keeps_the_milestones_fractions():
    """EPOCHS=150 on the gpu profile (the catalogue's 200 epochs, lr steps at 160 and 180): the
    steps move to 120 and 135; the other profiles and the budget's seeds are left alone."""
    params = yaml.safe_load((ROOT / "studies" / "cifar10_lt.params.yaml").read_text())
    before = copy.deepcopy(params)
    out = shortened(params, "gpu", 150)
    expected = {**before["profiles"]["gpu"]["budget"], "epochs": 150, "milestones": [120, 135]}
    assert out["profiles"]["gpu"]["budget"] == expected
    assert out["profiles"]["long"] == before["profiles"]["long"]
    long = shortened(copy.deepcopy(before), "long", 100)["profiles"]["long"]["budget"]
    assert (long["epochs"], long["milestones"]) == (100, [80, 90])
