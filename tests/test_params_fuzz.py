"""Property-based fuzzing of params.yaml: every malformed file is refused in one line.

Each example starts from the committed params.yaml and breaks one thing (a wrong type, an
unknown key, a non-positive epochs/batch size/lr, an exp split's imbalance below 1, a mixup
alpha <= 0, an unknown method/model/dataset/profile name, a run without a split, a split no
profile defines, a file or block that is not a mapping). The property:
``ltcifar.config.params.load``
raises ``ParamsError`` (never another exception), with a one-line message that names the
offending key and, for a name, every allowed value. ``python -m stages.configs`` on such a file
exits 2 with one ``error:`` line and leaves an existing ``configs/`` byte-identical.

Default: LTCIFAR_FUZZ_EXAMPLES=300 examples for ``load`` (and a tenth of that, at least 5, for
the subprocess). The long version:
``LTCIFAR_FUZZ_EXAMPLES=5000 pytest -s tests/test_params_fuzz.py``.
Inputs the validator once accepted or crashed on are pinned by the tests at the end.
"""

import copy
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltcifar.config.catalog import RECIPE, SPLIT, Setting
from ltcifar.config.params import RUN, load
from ltcifar.config.schema import ParamsError

ROOT = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((ROOT / "params.yaml").read_text())
EXAMPLES = int(os.environ.get("LTCIFAR_FUZZ_EXAMPLES", "300"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    database=None,
    derandomize="LTCIFAR_FUZZ_EXAMPLES" not in os.environ,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
TRIED: Counter = Counter()  # kind -> malformed inputs tried
REJECTED: Counter = Counter()  # kind -> rejected cleanly (ParamsError, one line, key named)
STAGE: Counter = (
    Counter()
)  # `python -m stages.configs` runs: "tried", "clean" (exit 2, configs kept)

RUN_NAME = next(iter(BASE["runs"]))
PROFILE = BASE["profile"]
SPLITS = list(BASE["profiles"][PROFILE]["splits"])
EXP_SPLITS = [
    (p, s) for p, prof in BASE["profiles"].items()
    for s, spec in prof["splits"].items() if spec["shape"] == "exp"
]  # fmt: skip


def _blocks() -> list[tuple[tuple, dict]]:
    """Where a run setting can be written, with the schema that checks it there."""
    return [
        ((), RUN),  # the candidate's own top-level keys
        (("recipe",), RECIPE),
        (("runs", RUN_NAME), RUN),
        (("profiles", PROFILE, "budget"), RECIPE),
        (("profiles", PROFILE, "recipe"), RECIPE),
    ]


def _set(params: dict, path: tuple, value) -> dict:
    out = copy.deepcopy(params)
    node = out
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return out


def _dotted(path: tuple) -> str:
    return ".".join(map(str, path))


ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.text("abc", min_size=1, max_size=3), st.integers(0, 3), max_size=2),
)


def _wrong_for(field: Setting, value) -> bool:
    """True if ``value`` is not a valid value of ``field``."""
    if field.list_of:
        return not isinstance(value, list)
    kind = field.kind
    if isinstance(kind, tuple):
        return not isinstance(value, str) or value not in kind
    if kind is float:
        return isinstance(value, bool) or not isinstance(value, int | float)
    if kind is bool:
        return not isinstance(value, bool)
    return isinstance(value, bool) or not isinstance(value, kind)


@st.composite
def wrong_type(draw):
    block, schema = draw(st.sampled_from(_blocks()))
    key = draw(st.sampled_from(sorted(k for k in schema if k != "split" or block == ())))
    value = draw(ANY.filter(lambda v: _wrong_for(schema[key], v)))
    return _set(BASE, (*block, key), value), _dotted((*block, key)), None


@st.composite
def wrong_split_type(draw):
    split, key = draw(st.sampled_from(SPLITS)), draw(st.sampled_from(sorted(SPLIT)))
    value = draw(ANY.filter(lambda v: _wrong_for(SPLIT[key], v)))
    path = ("profiles", PROFILE, "splits", split, key)
    return _set(BASE, path, value), _dotted(path), None


KEY = st.text(st.characters(categories=("L", "N"), include_characters="_-"), min_size=1,
              max_size=12)  # fmt: skip


@st.composite
def unknown_key(draw):
    places = [block for block, _ in _blocks()] + [
        ("profiles", PROFILE, "splits", SPLITS[0]),
        ("evaluate",),
        ("profiles", PROFILE, "backbone"),
    ]
    block = draw(st.sampled_from(places))
    node = BASE
    for part in block:
        node = node[part]
    known = set(node) | set(RUN) | {"profile", "recipe", "runs", "transfer_runs", "profiles",
                                    "download", "evaluate"}  # fmt: skip
    key = draw(KEY.filter(lambda k: k not in known))
    return _set(BASE, (*block, key), draw(ANY)), f"unknown key {_dotted((*block, key))}", None


@st.composite
def not_positive(draw):
    block, _ = draw(st.sampled_from(_blocks()))
    key = draw(st.sampled_from(["epochs", "batch_size", "lr", "eval_batch_size",
                                "checkpoint_every"]))  # fmt: skip
    if key == "lr":
        value = draw(st.floats(max_value=0.0, allow_nan=False, allow_infinity=False))
    else:
        value = draw(st.integers(max_value=0, min_value=-(10**9)))
    return _set(BASE, (*block, key), value), _dotted((*block, key)), None


@st.composite
def low_imbalance(draw):
    profile, split = draw(st.sampled_from(EXP_SPLITS))
    value = draw(st.floats(min_value=-1e6, max_value=1.0, exclude_max=True, allow_nan=False))
    path = ("profiles", profile, "splits", split, "imbalance")
    return _set(BASE, path, value), _dotted(path), None


@st.composite
def bad_alpha(draw):
    block, _ = draw(st.sampled_from(_blocks()))
    key = draw(st.sampled_from(["mixup_alpha", "balanced_mixup_alpha", "cutmix_alpha"]))
    value = draw(st.floats(max_value=0.0, allow_nan=False, allow_infinity=False))
    return _set(BASE, (*block, key), value), _dotted((*block, key)), None


NAME = st.text(st.characters(categories=("L", "N"), include_characters="_-"), max_size=12)


@st.composite
def unknown_name(draw):
    choice_keys = sorted(k for k, f in RUN.items() if isinstance(f.kind, tuple))
    where = draw(st.sampled_from(["run", "dataset", "datasets", "profile"]))
    if where == "run":
        block, schema = draw(st.sampled_from(_blocks()[:3]))
        key = draw(st.sampled_from(choice_keys))
        path, allowed = (*block, key), schema[key].kind
    elif where == "dataset":  # a split's dataset is one of its profile's
        path = ("profiles", PROFILE, "splits", draw(st.sampled_from(SPLITS)), "dataset")
        allowed = tuple(BASE["profiles"][PROFILE]["datasets"])
    elif where == "datasets":  # a profile's datasets are declared under download
        path, allowed = ("profiles", PROFILE, "datasets"), tuple(BASE["download"])
    else:
        path, allowed = ("profile",), tuple(BASE["profiles"])
    value = draw(NAME.filter(lambda v: v not in allowed))
    params = _set(BASE, path, [value] if where == "datasets" else value)
    return params, _dotted(path), allowed


@st.composite
def missing_split(draw):
    name = draw(st.sampled_from([None, *BASE["runs"], *BASE["transfer_runs"]]))
    params = copy.deepcopy(BASE)
    if name is None:
        del params["split"]
        return params, "missing key split", None
    group = "runs" if name in BASE["runs"] else "transfer_runs"
    del params[group][name]["split"]
    return params, f"missing key {group}.{name}.split", None


@st.composite
def undefined_split(draw):
    name = draw(st.sampled_from([None, *BASE["runs"], *BASE["transfer_runs"]]))
    value = draw(
        NAME.filter(lambda v: all(v not in p["splits"] for p in BASE["profiles"].values()))
    )
    if name is None:
        return _set(BASE, ("split",), value), "split", tuple(SPLITS)
    group = "runs" if name in BASE["runs"] else "transfer_runs"
    return _set(BASE, (group, name, "split"), value), f"{group}.{name}.split", tuple(SPLITS)


NOT_MAPPING = st.one_of(
    st.integers(), st.text(min_size=1, max_size=8), st.lists(st.integers(), min_size=1, max_size=3),
    st.booleans(), st.floats(allow_nan=False),
).filter(lambda v: bool(v))  # fmt: skip


@st.composite
def not_a_mapping(draw):
    where = draw(st.sampled_from(["file", "recipe", "split", "profile", "evaluate", "runs"]))
    value = draw(NOT_MAPPING)
    paths = {
        "file": None,
        "recipe": ("recipe",),
        "split": ("profiles", PROFILE, "splits", SPLITS[0]),
        "profile": ("profiles", PROFILE),
        "evaluate": ("evaluate",),
        "runs": ("runs",),
    }
    if paths[where] is None:
        return value, "params.yaml", None
    return _set(BASE, paths[where], value), _dotted(paths[where]), None


KINDS = {
    "wrong type": wrong_type(),
    "wrong type in a split": wrong_split_type(),
    "unknown key": unknown_key(),
    "epochs/batch size/lr <= 0": not_positive(),
    "imbalance < 1": low_imbalance(),
    "alpha <= 0": bad_alpha(),
    "unknown name": unknown_name(),
    "run without a split": missing_split(),
    "split no profile defines": undefined_split(),
    "not a mapping": not_a_mapping(),
}
CASES = st.sampled_from(sorted(KINDS)).flatmap(lambda k: st.tuples(st.just(k), KINDS[k]))


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    total, clean = sum(TRIED.values()), sum(REJECTED.values())
    print(f"\nparams fuzzing: {clean}/{total} malformed inputs rejected cleanly")
    for kind in sorted(TRIED):
        print(f"  {kind}: {REJECTED[kind]}/{TRIED[kind]}")
    print(f"  stages.configs: {STAGE['clean']}/{STAGE['tried']} exit 2, one line, configs/ kept")


@pytest.mark.slow
@SETTINGS
@given(CASES)
def test_malformed_params_are_refused_in_one_line(tmp_path_factory, case):
    kind, (params, key, allowed) = case
    TRIED[kind] += 1
    path = tmp_path_factory.mktemp("fuzz") / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(ParamsError) as err:
        load(path)
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert key in msg, (key, msg)
    for name in allowed or ():
        assert name in msg, (name, msg)
    REJECTED[kind] += 1


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project with configs/ written from the committed params.yaml."""
    root = tmp_path_factory.mktemp("project")
    for name in ("ltcifar", "stages"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    proc = subprocess.run([sys.executable, "-m", "stages.configs"], cwd=root, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    return root


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
@settings(SETTINGS, max_examples=max(5, EXAMPLES // 10))
@given(CASES)
def test_configs_stage_exits_2_and_keeps_configs(project, case):
    kind, (params, _, _) = case
    STAGE["tried"] += 1
    before = _snapshot(project / "configs")
    good = (project / "params.yaml").read_text()
    try:
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        proc = subprocess.run(
            [sys.executable, "-m", "stages.configs"], cwd=project, capture_output=True, text=True
        )
    finally:
        (project / "params.yaml").write_text(good)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert _snapshot(project / "configs") == before
    STAGE["clean"] += 1


def test_yaml_syntax_error_is_a_params_error(tmp_path):
    for text in ("a: [", "\t", "profile: quick\n  recipe: x\n :"):
        (tmp_path / "params.yaml").write_text(text)
        with pytest.raises(ParamsError) as err:
            load(tmp_path / "params.yaml")
        assert "\n" not in str(err.value) and "params.yaml" in str(err.value)


def test_odd_keys_inside_a_block_are_refused_in_one_line(tmp_path):
    for key in (1, None, "a\nb"):
        params = _set(_set(BASE, ("recipe", key), 2), ("recipe", "zz"), 3)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        with pytest.raises(ParamsError) as err:
            load(tmp_path / "params.yaml")
        assert "\n" not in str(err.value) and "unknown key recipe." in str(err.value)


# Malformed values the validator once accepted or crashed on (ltcifar/config/params.py:
# _check_values, _split_top_level, _check_split): minimal examples, now refused in one line.
ACCEPTED_OR_CRASHING = [
    (("recipe", "lr"), float("nan"), "lr = nan passes `cfg[key] <= 0`; use `not x > 0`"),
    (("recipe", "lr"), float("inf"), "lr = inf is accepted; require math.isfinite"),
    (("recipe", "mixup_alpha"), float("nan"), "mixup_alpha = nan passes `<= 0`"),
    (("profiles", PROFILE, "splits", "exp100", "imbalance"), float("nan"), "imbalance nan"),
    (("recipe", "momentum"), -1.0, "momentum < 0 is accepted (no range check)"),
    (("recipe", "weight_decay"), -1.0, "weight_decay < 0 is accepted (no range check)"),
    (("recipe", "beta"), 1.0, "beta = 1 is accepted; effective weighting divides by 1 - beta"),
    (("profiles", PROFILE, "splits", "step", "k"), 0, "step split k = 0 is accepted"),
    ((1,), 2, "top level: a non-string key next to a string one, TypeError in sorted()"),
    (("a\nb",), 1, "top level: an unknown key with a newline gives a two-line message"),
]


@pytest.mark.parametrize(("path", "value", "why"), ACCEPTED_OR_CRASHING, ids=lambda x: str(x))
def test_once_accepted_or_crashing_inputs_are_refused(tmp_path, path, value, why):
    params = _set(BASE, path, value)
    if path == (1,):  # a second, string unknown key makes sorted() compare
        params = _set(params, (*path[:-1], "zz"), 3)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(ParamsError) as err:
        load(tmp_path / "params.yaml")
    assert "\n" not in str(err.value), why
