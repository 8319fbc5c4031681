"""benchmarks/train_speed.py: the three loops run and report, and --estimate sums the runs."""

import re
import subprocess
import sys
from pathlib import Path

import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_speed.py"
RESULT = re.compile(
    r"RESULT engine_vs_reference=(\d+\.\d\d) engine_vs_bare=(\d+\.\d\d) "
    r"engine_img_s=(\d+) device=(\S+)"
)


def run(*args: str, cwd: Path | None = None) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()


def test_measure_prints_result_line() -> None:
    # one thread: two torch threads on a busy 2-core machine run ~20x slower
    lines = run(
        *"--images 512 --batch 64 --device cpu --reference-images 256 --threads 1".split(),
        *"--bare-warmup 1 --bare-steps 3".split(),
    )
    m = RESULT.fullmatch(lines[-1])
    assert m, lines[-1]
    assert all(float(v) > 0 for v in m.groups()[:3])
    assert any(line.startswith("reference") for line in lines)


def test_estimate_sums_every_run(tmp_path: Path) -> None:
    """The repo's params.yaml with its runs replaced by two on CIFAR-10's exp100 split."""
    params = yaml.safe_load((SCRIPT.parents[1] / "params.yaml").read_text())
    full = params["profiles"]["full"]
    full["splits"]["exp100"] = {
        "dataset": "cifar10",
        "shape": "exp",
        "n_max": 5000,
        "imbalance": 100,
        "sampling": "ldam",
        "val_policy": "exact",
    }
    full["recipe"], full["force"] = {}, {}
    backbone = next(
        (b["run"] for p in params["profiles"].values() if (b := p["backbone"])["source"] == "run"),
        "ce",
    )  # a profile whose backbone is a run needs that run to exist
    params.update(split="exp100", model="auto", loss="cross_entropy", sampler="instance")
    params.update(mixup="none", seeds=[0, 1], transfer_runs={})
    params["recipe"].update(model="resnet20", epochs=7)
    params["runs"] = {backbone: {"split": "exp100", "seeds": [0, 1, 2], "epochs": 3}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    lines = run("--estimate", "--img-s", "1000", "--params", str(path), cwd=tmp_path)
    images = 12406 * (7 * 2 + 3 * 3)  # the exp100 split's training images x epochs x seeds
    assert lines[-1] == f"ESTIMATE total_images={images} total_minutes={images / 1000 / 60:.2f}"
