"""Helpers every test file may use: a recipe with small defaults, a split from arrays, the
module-scoped ``tiny`` split, and a dead process id. Import the plain helpers from here
(``from tests.conftest import recipe``); pytest finds the fixtures by itself."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ltcifar.config.catalog import SPLIT, defaults
from ltcifar.config.records import RunConfig, SplitConfig
from ltcifar.config.schema import validate
from ltcifar.data.split_data import SplitData

FASHION = Path("/usr/share/datasets/fashion-mnist")
# The files whose fixtures run a whole `dvc repro` or `dvc exp run` (minutes each), slowest first.
# They are collected first, so that under `pytest -n 2 --dist loadfile` the workers start on them
# and the short files fill in behind, rather than one of them running alone at the end.
WHOLE_PIPELINES = ("test_rehearsal", "test_pipeline", "test_team", "test_profiles")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = item.path.stem
        return WHOLE_PIPELINES.index(module) if module in WHOLE_PIPELINES else len(WHOLE_PIPELINES)

    items.sort(key=rank)  # stable: each file keeps its own order


def recipe(**over) -> RunConfig:
    """The catalogue's recipe, shrunk to a few steps of tiny runs (per-step warm-up, x0.1): a
    run config carrying every setting."""
    cfg = defaults()
    cfg.update(
        name="t",
        split="s",
        loss="cross_entropy",
        sampler="instance",
        mixup="none",
        model="resnet20",
        head="linear",
        epochs=3,
        batch_size=32,
        warmup_epochs=1,
        warmup="step",
        milestones=[2],
        gamma=0.1,
        checkpoint_every=1,
        eval_batch_size=256,
    )
    cfg.update(over)
    return RunConfig(**cfg)


def split_spec(**spec) -> SplitConfig:
    """A split as ``configs/splits.json`` gives it: ``spec`` over the catalogue's defaults."""
    full = validate(spec, SPLIT)
    if full["draws"] is not None:  # the draws replace the seed, as params.yaml's check does
        full["seed"] = None
    return SplitConfig(**full)


def make_split(x: np.ndarray, y: np.ndarray, n_val: int, num_classes: int) -> SplitData:
    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    mean = t(x.reshape(-1, x.shape[-1]).mean(0).astype(np.float32)).view(1, -1, 1, 1)
    std = t(x.reshape(-1, x.shape[-1]).std(0).astype(np.float32)).view(1, -1, 1, 1)
    return SplitData(
        x=t(x[n_val:]),
        y=t(y[n_val:]),
        x_val=t(x[:n_val]),
        y_val=t(y[:n_val]),
        counts=torch.bincount(t(y[n_val:]), minlength=num_classes),
        mean=mean,
        std=std,
        classes=[str(i) for i in range(num_classes)],
    )


@pytest.fixture(scope="module")
def tiny() -> SplitData:
    """192 16x16 images of 4 classes, 32 of them for validation, learnable in a few steps."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 192)
    x = (rng.integers(0, 60, (192, 16, 16, 3)) + 50 * y[:, None, None, None]).astype(np.uint8)
    return make_split(x, y, 32, 4)


def strip_speed(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "img_per_s"} for row in history]


def dead_pid() -> int:
    """The id of a process that has exited (its temporaries are orphans)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
