"""Per-epoch DVCLive logs of a training run that always match its history, even after a kill."""

import shutil
from collections.abc import Callable
from pathlib import Path

from dvclive import Live


def dvclive_logger(
    run: str, seed: int, root: Path = Path("logs")
) -> tuple[Live, Callable[[int, dict[str, float]], None]]:
    """A DVCLive logger for ``root/<run>/seed<seed>``, so `dvc plots` and `dvc exp show` see
    the curves, started from an empty folder.

    The engine replays a resumed run's history into the logger, so the folder is a pure function
    of that history: what a killed run left there (rows for epochs past its last checkpoint, a
    torn last line) is deleted, not trusted. dvclive clears its own files only without
    ``DVCLIVE_RESUME`` in the environment, which overrides ``resume=False`` and would append
    the replay to the old rows; deleting the folder first holds either way.
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
