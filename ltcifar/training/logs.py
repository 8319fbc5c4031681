"""Per-epoch DVCLive logs of a training run that always match its history, even after a kill."""

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ltcifar.data.lt_index import member


def dvclive_logger(
    run: str, seed: int, root: Path = Path("logs"), draw: int | None = None
) -> tuple[Any, Callable[[int, dict[str, float]], None]]:
    """A DVCLive logger in an emptied ``root/<run>/seed<seed>`` (``draw<d>_seed<seed>`` for a
    draw of a split with draws, ``lt_index.member``): the engine replays a resumed run's
    history into it, so what a killed run left (rows past its checkpoint, a torn line) is deleted,
    not trusted, even if ``DVCLIVE_RESUME`` overrides ``resume=False`` (it would append).

    Without DVCLive installed (the stages run by hand on a machine without DVC, as
    ``benchmarks/gpu_study.sh`` does) the run trains unlogged: (None, a no-op), said once."""
    log_dir = root / run / member(seed, draw)
    shutil.rmtree(log_dir, ignore_errors=True)
    try:
        from dvclive import Live  # imports DVC itself: half a second
    except ImportError:
        print(f"{run} seed {seed}: dvclive is not installed, so no per-epoch logs in {log_dir}")
        return None, lambda epoch, row: None
    live = Live(str(log_dir), save_dvc_exp=False, dvcyaml=None, report=None)

    def log(epoch: int, row: dict[str, float]) -> None:
        live.step = epoch
        for key, value in row.items():
            live.log_metric(key, value)
        live.next_step()

    return live, log
