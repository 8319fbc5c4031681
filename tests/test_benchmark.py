"""benchmarks/train_speed.py: the three loops run and report, and --estimate sums the runs:
every run of params.yaml with its resolved config, and the backbone's pretraining."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # every test here runs stages in subprocesses

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_speed.py"
RESULT = re.compile(
    r"RESULT engine_vs_reference=(\d+\.\d\d) engine_vs_bare=(\d+\.\d\d) "
    r"engine_img_s=(\d+) device=(\S+)"
)
# The full profile's exp100 split (CIFAR-10-LT, 12406 training images) and the quick profile's
# three Fashion-MNIST splits, pinned here so that the expected totals below follow from them.
CIFAR_EXP100 = {
    "dataset": "cifar10",
    "shape": "exp",
    "n_max": 5000,
    "imbalance": 100,
    "sampling": "ldam",
    "val_policy": "exact",
}
FASHION_SPLITS = {
    # 1000 + 9 x 100 = 1900 training images (val_policy reserve keeps n_max: 6000 per class)
    "step": {"dataset": "fashion_mnist", "shape": "step", "n_max": 1000, "n_min": 100, "k": 1,
             "val_per_class": 20},
    # sum of int(1000 x 0.01^(i/9)), i = 0..9: 2478
    "exp100": {"dataset": "fashion_mnist", "shape": "exp", "n_max": 1000, "imbalance": 100,
               "sampling": "ldam", "val_policy": "exact"},
    # 10 x 300 = 3000
    "balanced": {"dataset": "fashion_mnist", "shape": "none", "n_max": 300, "val_per_class": 20,
                 "seed": 1},
}  # fmt: skip


def run(*args: str, cwd: Path | None = None) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()


def rows(lines: list[str]) -> dict[str, dict[str, str]]:
    """The estimate's table, by run name."""
    head = lines.index(next(ln for ln in lines if ln.startswith("run ")))
    keys = lines[head].replace("cost x", "cost").split()
    table = {}
    for ln in lines[head + 1 :]:
        if ln.startswith("total:"):
            break
        cells = dict(zip(keys, ln.split(), strict=True))
        table[cells["run"]] = cells
    return table


def repo_params() -> dict:
    return yaml.safe_load((SCRIPT.parents[1] / "params.yaml").read_text())


def estimate(tmp_path: Path, params: dict, profile: str) -> list[str]:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    args = ("--estimate", "--img-s", "1000", "--params", str(path), "--profile", profile)
    return run(*args, "--model", "resnet20", cwd=tmp_path)


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
    """Profile full, its runs replaced: two on CIFAR-10's exp100 split and one transfer run,
    which takes the backbone's model and fine-tuning recipe (tv_resnet18, 10 epochs). The
    ImageNet backbone is only fetched, so it adds no training row."""
    params = repo_params()
    full = params["profiles"]["full"]
    full["splits"]["exp100"] = CIFAR_EXP100
    full["recipe"], full["budget"] = {}, {}
    assert full["backbone"]["weights"] == "imagenet"
    assert full["backbone"]["recipe"]["epochs"] == 10
    params.update(split="exp100", loss="cross_entropy", sampler="instance", mixup="none")
    params.update(seeds=[0, 1])
    params["recipe"].update(model="resnet20", epochs=7)
    params["runs"] = {
        "ce": {"split": "exp100", "seeds": [0, 1, 2], "epochs": 3, "warmup_epochs": 1}
    }
    params["second_stages"] = {}
    params["transfer_runs"] = {"tl": {"split": "balanced", "finetune": "linear", "seeds": [0]}}
    lines = estimate(tmp_path, params, "full")
    # exp100's training images x epochs x seeds; tl: CIFAR-100's 500 - 50 val per class
    images = 12406 * (7 * 2 + 3 * 3) + 100 * 450 * 10 * 1
    assert lines[-1].startswith(f"ESTIMATE total_images={images} ")
    table = rows(lines)
    assert sorted(table) == ["candidate", "ce", "tl"]
    tl = table["tl"]
    assert (tl["model"], tl["ep"], tl["nets"], tl["img/ep"]) == ("tv_resnet18", "10", "1", "45000")
    minutes = sum(float(r["min"]) for r in table.values())
    total = float(lines[-1].split("total_minutes=")[1])
    assert total == pytest.approx(minutes, abs=0.1)  # the rows are rounded to 0.1 min


def test_the_committed_full_profile_fits_an_hour_at_the_assumed_gpu_rate() -> None:
    """docs/speed.md: the full profile is sized to under an hour on one GPU by the estimate at
    an assumed 25,000 img/s for ResNet-20 (not measured). Multiply-adds are counted, not timed,
    so the estimate is the same on every machine; observed 56.9 min."""
    lines = run("--estimate", "--img-s", "25000", "--profile", "full", cwd=SCRIPT.parents[1])
    assert float(lines[-1].split("total_minutes=")[1]) < 60  # the hour it was sized to


def test_estimate_counts_the_pretrained_backbone(tmp_path: Path) -> None:
    """Profile quick pretrains its backbone (weights: pretrain, on the step split): that run is
    counted, and each transfer run at its mode's cost (linear: 1/3 of scratch's)."""
    params = repo_params()
    quick = params["profiles"]["quick"]
    quick["splits"] = FASHION_SPLITS
    quick["budget"] = {"epochs": 2, "seeds": [0]}
    quick["backbone"] = {"model": "resnet20", "weights": "pretrain", "split": "step"}
    params.update(split="step", loss="cross_entropy", sampler="instance", mixup="none")
    params["runs"] = {"ce": {"split": "exp100"}}
    params["second_stages"] = {}
    params["transfer_runs"] = {
        "tl": {"split": "balanced", "finetune": "linear"},
        "ts": {"split": "balanced", "finetune": "scratch"},
    }
    lines = estimate(tmp_path, params, "quick")
    images = 2 * (1900 + 1900 + 2478 + 3000 + 3000)  # backbone, candidate, ce, tl, ts
    assert lines[-1].startswith(f"ESTIMATE total_images={images} ")
    table = rows(lines)
    assert list(table) == ["backbone", "candidate", "ce", "tl", "ts"]
    bb = table["backbone"]
    assert (bb["split"], bb["model"], bb["ep"], bb["nets"], bb["img/ep"]) == (
        "step",
        "resnet20",
        "2",
        "1",
        "1900",
    )
    assert {r["model"] for r in table.values()} == {"resnet20"}
    cost = {name: float(r["cost"]) for name, r in table.items()}
    assert cost["ts"] == cost["ce"] == cost["backbone"] > 0
    assert cost["tl"] == pytest.approx(cost["ts"] / 3, abs=0.01)
    # the same file under profile full: ImageNet weights, no backbone row
    assert "backbone" not in rows(estimate(tmp_path, params, "full"))


def test_estimate_prices_only_the_runs_a_profile_names() -> None:
    """The real-CIFAR-10 study's long profile (400 epochs, 3 seeds x 3 long-tailed draws, no
    backbone) names three runs on the JPEG copy's exp100 split: only they are priced, and
    BalPoE's three experts (the stem and first stage shared) cost more than twice one ResNet-32."""
    study = "studies/cifar10_lt.params.yaml"
    lines = run("--estimate", "--img-s", "1000", "--params", study, "--profile", "long",
                cwd=SCRIPT.parents[1])  # fmt: skip
    table = rows(lines)
    assert sorted(table) == ["exp_balanced_softmax", "exp_balpoe", "exp_ldam_drw"]
    assert lines[-1].startswith(f"ESTIMATE total_images={3 * 400 * 3 * 3 * 12406} ")
    assert table["exp_balpoe"]["nets"] == "9"
    assert float(table["exp_balpoe"]["cost"]) > 2 * float(table["exp_ldam_drw"]["cost"])
