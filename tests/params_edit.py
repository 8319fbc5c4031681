"""Tests' helpers for the repository's params.yaml with an edit applied: loaded, or the
one-line error its validation gives."""

import copy
from pathlib import Path

import pytest
import yaml

from ltcifar.config.params import load
from ltcifar.config.schema import ParamsError

PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"


def repo_params() -> dict:
    return yaml.safe_load(PARAMS.read_text())


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def load_modified(tmp_path: Path, raw: dict, edit) -> dict:
    data = copy.deepcopy(raw)
    edit(data)
    return load(write(tmp_path, data))


def error_of(tmp_path: Path, raw: dict, edit) -> str:
    with pytest.raises(ParamsError) as err:
        load_modified(tmp_path, raw, edit)
    return str(err.value)
