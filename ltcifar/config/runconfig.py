"""Reading and writing the resolved configs in ``configs/``, without importing the validator.

Training and evaluation depend on their run's config file, not on params.yaml, so they import
this small module rather than ``ltcifar.config.params``: an edit to the validator reruns the cheap
``configs`` stage, and then only the runs whose resolved config actually changed.

A run, second stage, split or backbone outside the active profile still has its DVC stage
(``dvc.yaml`` expands every run; DVC cannot filter by profile), so its config says
``{"skipped": <why>}``: the stage then writes a placeholder for each output (``write_skipped``)
and returns before importing torch, training or scoring anything.
"""

import json
import re
import shutil
from pathlib import Path

from ltcifar.config.catalog import OFF
from ltcifar.errors import PipelineError
from ltcifar.files import write_text_atomic

CONFIGS = Path("configs")
SKIPPED = "skipped"  # the key of a config whose stage is outside the active profile
NOTE = "skipped.txt"  # the placeholder a skipped stage leaves in each output folder
OUTSIDE = {
    "run": "not one of the active profile's runs",
    "second": "not one of the active profile's second stages",
    "split": "not a split of the active profile",
    "backbone": "the active profile trains no transfer run",
}


def dumps(obj: object) -> str:
    """JSON with one key per line and each flat list on one line, so ``git diff`` is readable."""
    text = json.dumps(obj, indent=2)
    flat = re.sub(
        r"\[([^\[\]{}]*)\]", lambda m: "[" + re.sub(r"\n\s*", " ", m.group(1)).strip() + "]", text
    )
    return flat + "\n"


def read_config(name: str, root: Path = CONFIGS) -> dict:
    """One stage config, e.g. ``splits.json``; missing means the configs stage has not run."""
    path = root / name
    if not path.is_file():
        raise PipelineError(f"{path} not found; run `dvc repro configs` first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PipelineError(f"{path} is not valid JSON ({e}); run `dvc repro configs`") from e


def read_run_config(run: str, root: Path = CONFIGS) -> dict:
    """A run's resolved config, with the off values of the features it does not use."""
    return {**OFF, **read_config(f"runs/{run}.json", root)}


def skipped(cfg: dict) -> str | None:
    """Why a stage's config puts it outside the active profile, or None if it is inside."""
    return cfg.get(SKIPPED)


def write_skipped(
    name: str, why: str, folders: tuple[Path, ...] = (), files: dict[Path, str] | None = None
) -> None:
    """The outputs of a stage outside the active profile, so that DVC finds them all: each
    folder emptied but for a one-line ``NOTE``, each file with the given text. Nothing else is
    read or written."""
    for folder in folders:
        if folder.is_dir():
            shutil.rmtree(folder)
        write_text_atomic(folder / NOTE, f"{name}: {why}; nothing was trained or scored\n")
    for path, text in (files or {}).items():
        write_text_atomic(path, text)
    print(f"{name}: skipped, {why}")
