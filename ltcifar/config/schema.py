"""Validation of params.yaml against the catalogue's settings (``ltcifar.config.params`` composes
the structure and its cross-checks): a typo anywhere fails the very first stage with one line
naming the key, the value and the allowed choices or range, before a byte is written.
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import yaml

from ltcifar.config.catalog import REQUIRED, Setting
from ltcifar.errors import PipelineError


class ParamsError(PipelineError, ValueError):
    """A params.yaml value that the pipeline cannot use; the message names key and choices."""


@dataclass(frozen=True)
class MapOf:
    """A mapping from user-chosen names (runs, splits, files) to a sub-schema or a Setting;
    ``doc``, as a Setting's, its line in the reference."""

    schema: Any
    required: bool = True
    doc: str = ""


def did_you_mean(word: Any, choices: Iterable[Any]) -> str:
    """The end of a refusal of a mistyped key or value: the closest choice, or nothing."""
    if not isinstance(word, str):
        return ""
    close = get_close_matches(word, [str(c) for c in choices], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_scalar(key: str, value: Any, kind: Any) -> Any:
    if isinstance(kind, tuple):
        if value not in kind:
            raise ParamsError(
                f"{key} = {value!r} is not allowed; choose one of: {', '.join(map(str, kind))}"
                + did_you_mean(value, kind)
            )
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is not bool and isinstance(value, bool) or not isinstance(value, kind):
        raise ParamsError(f"{key} = {value!r} must be of type {kind.__name__}")
    if kind is float and not math.isfinite(value):
        raise ParamsError(f"{key} = {value} must be a finite number")
    return value


def _check_setting(key: str, value: Any, spec: Setting) -> Any:
    """A setting's value, typed (ints as floats where floats are meant) and within its ranges."""
    if spec.list_of:
        if not isinstance(value, list):
            raise ParamsError(f"{key} = {value!r} must be a list")
        value = [_check_scalar(f"{key}[{i}]", v, spec.kind) for i, v in enumerate(value)]
    else:
        value = _check_scalar(key, value, spec.kind)
    for rng in spec.ranges:
        if not rng.test(value):
            raise ParamsError(f"{key}{f' = {value}' if rng.show else ''} {rng.wording}")
    return value


def validate(data: Any, schema: dict, prefix: str = "", partial: bool = False) -> dict:
    """``data`` with defaults filled in, or ParamsError on the first bad key. ``partial``
    validates an overrides block: keys it lacks stay absent instead of defaulted."""
    if not isinstance(data, dict):
        raise ParamsError(f"{prefix.rstrip('.') or 'params.yaml'} must be a mapping, got {data!r}")
    unknown = sorted(set(data) - set(schema), key=str)  # YAML keys may be ints, None, ...
    if unknown:
        raise ParamsError(
            f"unknown key {prefix}{printable(unknown[0])}; allowed keys here: "
            f"{', '.join(sorted(schema))}{did_you_mean(unknown[0], schema)}"
        )
    out = {}
    for name, spec in schema.items():
        if name in data:
            out[name] = _validate_value(data[name], spec, prefix + name)
        elif not partial:
            default = spec.default if isinstance(spec, Setting) else REQUIRED
            if isinstance(spec, MapOf) and not spec.required:
                default = {}
            if default is REQUIRED:
                raise ParamsError(f"missing key {prefix}{name}")
            out[name] = default
    return out


def printable(key: Any) -> str:
    """A key as the message shows it: escaped if it holds a newline or another control."""
    text = str(key)
    return text if text.isprintable() else repr(text)[1:-1]


def _validate_value(value: Any, spec: Any, key: str) -> Any:
    if isinstance(spec, dict):
        return validate(value, spec, key + ".")
    if isinstance(spec, MapOf):
        if not isinstance(value, dict):
            raise ParamsError(f"{key} must be a mapping of names, got {value!r}")
        for name in value:
            if not isinstance(name, str):
                raise ParamsError(f"{key}: the name {name!r} must be a string (quote it)")
        return {k: _validate_value(v, spec.schema, f"{key}.{k}") for k, v in value.items()}
    return _check_setting(key, value, spec)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found; run from the repository root")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:  # one line: where the parser stopped, not a traceback
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ParamsError(f"{path} is not valid YAML{at}: {problem}") from e
