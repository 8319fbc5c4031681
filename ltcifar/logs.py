"""Per-epoch DVCLive logs of a training run that always match its history, even after a kill."""

import shutil
from collections.abc import Callable
from pathlib import Path

from dvclive import Live


def dvclive_logger(
    run: str, seed: int, root: Path = Path("logs")
) -> tuple[Live, Callable[[int, dict[str, float]], None]]:
    """A DVCLive logger (for `dvc plots`, `dvc exp show`) in an emptied ``root/<run>/seed<seed>``.

    The engine replays a resumed run's history into the logger, so the folder is a pure function
    of that history: what a killed run left there (rows past its last checkpoint, a torn last
    line) is deleted, not trusted. Deleting it here also holds under ``DVCLIVE_RESUME``, which
    overrides ``resume=False`` and would append the replay to the old rows.
    """
    log_dir = root / run / f"seed{seed}"
    shutil.rmtree(log_dir, ignore_errors=True)
    live = Live(str(log_dir), save_dvc_exp=False, dvcyaml=None, report=None)

    def log(epoch: int, row: dict[str, float]) -> None:
        live.step = epoch
        for key, value in row.items():
            live.log_metric(key, value)
        live.next_step()

    return live, log
