"""Reading and writing the resolved configs in ``configs/``, without importing the validator.

Training and evaluation depend on their run's config file, not on params.yaml, so they import
this small module rather than ``ltcifar.config``: an edit to the validator reruns the cheap
``configs`` stage, and then only the runs whose resolved config actually changed.
"""

import json
import re
from pathlib import Path

from ltcifar.catalog import OFF
from ltcifar.errors import PipelineError

CONFIGS = Path("configs")


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
