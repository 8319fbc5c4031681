"""Per-epoch DVCLive logs of a training run that always match its history, even after a kill."""

import shutil
from collections.abc import Callable
from pathlib import Path

from dvclive import Live


def dvclive_logger(
    run: str, seed: int, root: Path = Path("logs")
) -> tuple[Live, Callable[[int, dict[str, float]], None]]:
    """A DVCLive logger in an emptied ``root/<run>/seed<seed>``: the engine replays a resumed run's
    history into it, so what a killed run left (rows past its checkpoint, a torn line) is deleted,
    not trusted, even if ``DVCLIVE_RESUME`` overrides ``resume=False`` (it would append)."""
    log_dir = root / run / f"seed{seed}"
    shutil.rmtree(log_dir, ignore_errors=True)
    live = Live(str(log_dir), save_dvc_exp=False, dvcyaml=None, report=None)

    def log(epoch: int, row: dict[str, float]) -> None:
        live.step = epoch
        for key, value in row.items():
            live.log_metric(key, value)
        live.next_step()

    return live, log
