"""A resumed run's DVCLive logs hold one row per epoch, whatever a killed run left behind."""

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ltcifar.training.engine import train
from ltcifar.training.logs import dvclive_logger
from tests.conftest import make_split, recipe


class Killed(Exception):
    pass


def steps_per_metric(log_dir: Path) -> dict[str, list[str]]:
    metrics = log_dir / "plots" / "metrics"
    return {
        str(tsv.relative_to(metrics).with_suffix("")): [
            row["step"] for row in csv.DictReader(tsv.open(), delimiter="\t")
        ]
        for tsv in metrics.rglob("*.tsv")
    }


@pytest.mark.parametrize("resume_env", [None, "true"])
def test_leftover_log_dir_ends_with_one_row_per_epoch(tmp_path: Path, monkeypatch, resume_env):
    """DVCLIVE_RESUME makes dvclive keep old rows, whatever ``resume=False`` says."""
    monkeypatch.chdir(tmp_path)
    if resume_env is None:
        monkeypatch.delenv("DVCLIVE_RESUME", raising=False)
    else:
        monkeypatch.setenv("DVCLIVE_RESUME", resume_env)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (80, 8, 8, 3), dtype=np.uint8), rng.integers(0, 2, 80)
    data = make_split(x, y, 16, 2)
    cfg = recipe(epochs=3, checkpoint_every=2)
    ckpt, log_dir = tmp_path / "ckpt.pt", tmp_path / "logs" / "r" / "seed0"

    _, log = dvclive_logger("r", 0)

    def killed_after_logging_epoch_two(epoch: int, row: dict) -> None:
        log(epoch, row)
        if epoch == 2:  # logged, but the last checkpoint holds epochs 0 and 1 only
            raise Killed

    with pytest.raises(Killed):
        train(cfg, data, 0, torch.device("cpu"), ckpt_path=ckpt, log=killed_after_logging_epoch_two)
    loss_tsv = log_dir / "plots" / "metrics" / "train" / "loss.tsv"
    assert loss_tsv.read_text().count("\n") == 4  # header and epochs 0..2
    with loss_tsv.open("a") as f:
        f.write("junk\trow\n7\t0.")  # and a torn last line
    (loss_tsv.parent / "stale_metric.tsv").write_text("step\tstale_metric\n0\t1\n")

    live, log = dvclive_logger("r", 0)
    result = train(cfg, data, 0, torch.device("cpu"), ckpt_path=ckpt, log=log)
    live.end()

    logged = steps_per_metric(log_dir)
    assert sorted(logged) == sorted(result.history[0])
    assert all(steps == ["0", "1", "2"] for steps in logged.values()), logged


def test_without_dvclive_a_run_trains_unlogged(tmp_path, monkeypatch, capsys):
    """The stages run by hand where DVC is not installed (the GPU study kit): no logs, one line."""
    monkeypatch.setitem(sys.modules, "dvclive", None)  # `import dvclive` raises ImportError
    (tmp_path / "r" / "seed0").mkdir(parents=True)
    live, log = dvclive_logger("r", 0, root=tmp_path)
    log(0, {"train/loss": 1.0})
    assert live is None and not (tmp_path / "r" / "seed0").exists()
    assert "dvclive is not installed" in capsys.readouterr().out
