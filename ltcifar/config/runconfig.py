"""Reading and writing the resolved configs in ``configs/``, without importing the validator.

Training and evaluation depend on their run's config file, not on params.yaml, so they import
this small module rather than ``ltcifar.config.params``: an edit to the validator reruns the cheap
``configs`` stage, and then only the runs whose resolved config actually changed.

A run, second stage, split or backbone outside the active profile still has its DVC stage
(``dvc.yaml`` expands every run; DVC cannot filter by profile), so its config says
``{"skipped": <why>}``: the stage then writes a placeholder for each output (``write_skipped``)
and returns before importing torch, training or scoring anything.

Stages read typed records (``records``), one reader per file; the files stay plain JSON.
"""

import json
import re
import shutil
from pathlib import Path

from ltcifar.config.records import (
    ArchiveSource,
    EvaluateConfig,
    ImageFolderSource,
    ImagenetBackbone,
    PretrainBackbone,
    R,
    RunConfig,
    SecondConfig,
    Skipped,
    SplitConfig,
    parse,
)
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
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PipelineError(f"{path} is not valid JSON ({e}); run `dvc repro configs`") from e
    if not isinstance(raw, dict):
        raise PipelineError(f"{path} is not a JSON object; run `dvc repro configs`")
    return raw


def _or_skipped(cls: type[R], raw: object, where: str) -> R | Skipped:
    """``raw`` as a ``cls`` record, or as ``Skipped`` if it puts its stage outside the profile."""
    if isinstance(raw, dict) and SKIPPED in raw:
        return parse(Skipped, raw, where)
    return parse(cls, raw, where)


def read_run_config(run: str, root: Path = CONFIGS) -> RunConfig | Skipped:
    """A run's resolved config (the features it does not use at their off values)."""
    name = f"runs/{run}.json"
    return _or_skipped(RunConfig, read_config(name, root), str(root / name))


def read_second_config(second: str, root: Path = CONFIGS) -> SecondConfig | Skipped:
    name = f"second/{second}.json"
    return _or_skipped(SecondConfig, read_config(name, root), str(root / name))


def read_splits(root: Path = CONFIGS) -> dict[str, SplitConfig | Skipped]:
    """Every split of the active profile, and a placeholder of each one it does not define."""
    where = root / "splits.json"
    return {
        name: _or_skipped(SplitConfig, spec, f"{where}: split {name}")
        for name, spec in read_config("splits.json", root).items()
    }


def read_download(root: Path = CONFIGS) -> dict[str, ArchiveSource | ImageFolderSource]:
    """Each dataset of the active profile: catalogued archives, or an image folder."""
    where, sources = root / "download.json", {}
    for name, spec in read_config("download.json", root).items():
        source: ArchiveSource | ImageFolderSource
        if isinstance(spec, dict) and spec.get("kind") == "image_folder":
            source = parse(ImageFolderSource, spec, f"{where}: {name}")
        else:
            source = parse(ArchiveSource, spec, f"{where}: {name}")
        sources[name] = source
    return sources


def read_backbone(root: Path = CONFIGS) -> ImagenetBackbone | PretrainBackbone | Skipped:
    path = root / "backbone.json"
    return backbone_record(read_config("backbone.json", root), str(path))


def backbone_record(raw: dict, where: str) -> ImagenetBackbone | PretrainBackbone | Skipped:
    """A backbone config (``runs.backbone_config``) as the record of its kind."""
    if SKIPPED in raw:
        return parse(Skipped, raw, where)
    if raw.get("weights") == "imagenet":
        return parse(ImagenetBackbone, raw, where)
    nested = {
        "split_spec": parse(SplitConfig, raw.get("split_spec"), f"{where}: split_spec"),
        "run": parse(RunConfig, raw.get("run"), f"{where}: run"),
    }
    return parse(PretrainBackbone, {**raw, **nested}, where)


def read_evaluate(root: Path = CONFIGS) -> EvaluateConfig:
    return parse(EvaluateConfig, read_config("evaluate.json", root), str(root / "evaluate.json"))


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
