"""The DVC graph's promise: a change reruns what it affects, all of it and nothing more.

- every stage lists exactly the project source files it imports (walked from its module);
- stages read files, not params keys: only the configs stage tracks params.yaml;
- DVC's own `-S` writer changes one line of the committed params.yaml and nothing else;
- a run's resolved config holds the settings its methods read, so editing one method's setting
  changes only the configs of the runs that use it, and one profile's edit leaves the others'.
"""

import copy
import difflib
import re
import shutil
from pathlib import Path

import pytest
import yaml

from ltcifar.config.params import load
from ltcifar.config.runs import stage_configs
from tests.imports import ROOT, source_files

DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def stage_module(stage: dict) -> str:
    spec = stage.get("do", stage)
    return re.match(r"python -m (\S+)", spec["cmd"]).group(1)


@pytest.mark.parametrize("name", sorted(DVC_YAML))
def test_code_deps_follow_imports(name):
    stage = DVC_YAML[name].get("do", DVC_YAML[name])
    listed = {d for d in stage["deps"] if d.endswith(".py")}
    assert listed == source_files(stage_module(DVC_YAML[name])), name


def test_config_layer_imports_no_torch():
    """Validating params.yaml must not import torch, the models or the registries."""
    files = source_files("stages.configs")
    assert not files & {
        "ltcifar/methods/models.py",
        "ltcifar/methods/losses.py",
        "ltcifar/training/engine.py",
    }
    for path in files:
        assert not re.search(r"^\s*(import|from) (torch|numpy)", (ROOT / path).read_text(), re.M)


def test_only_the_configs_stage_reads_params():
    for name, stage in DVC_YAML.items():
        spec = stage.get("do", stage)
        assert ("params" in spec) == (name == "configs"), name
    assert DVC_YAML["configs"]["params"] == [{"params.yaml": None}]  # the whole file


def line_changes(before: str, after: str) -> list[str]:
    return [
        ln
        for ln in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if ln[:1] in "+-" and not ln.startswith(("+++", "---"))
    ]


SETTINGS = [
    ("profile", "full"),
    ("split", "exp100"),
    ("loss", "ldam"),
    ("sampler", "sqrt"),
    ("mixup", "balanced_mixup"),
    ("recipe.focal_gamma", "2.0"),
    ("recipe.epochs", "100"),
    ("profiles.quick.budget.epochs", "3"),
]


@pytest.mark.parametrize(("key", "value"), SETTINGS)
def test_dvc_set_param_changes_one_line(tmp_path, key, value):
    """Apply DVC's own writer (what `dvc exp run -S key=value` runs) to the committed file."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    apply_overrides(path, [f"{key}={value}"])
    changes = line_changes((ROOT / "params.yaml").read_text(), path.read_text())
    leaf = key.rsplit(".", 1)[-1]
    assert len(changes) == 2, changes
    assert changes[0].startswith("-") and changes[1].lstrip("+").strip() == f"{leaf}: {value}"
    assert load(path)  # and the result is still valid


def write_params(tmp_path: Path, edit) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(raw)
    path = tmp_path / f"params{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load(path)


def changed_configs(tmp_path: Path, edit, profile: str = "quick") -> set[str]:
    def on(profile_edit):
        def both(d):
            d["profile"] = profile
            profile_edit(d)

        return both

    before = stage_configs(write_params(tmp_path, on(lambda d: None)))
    after = stage_configs(write_params(tmp_path, on(edit)))
    assert set(before) == set(after)
    return {k for k in before if before[k] != after[k]}


def test_method_setting_changes_only_its_runs(tmp_path):
    params = load(ROOT / "params.yaml")
    focal = {f"runs/{n}.json" for n, r in params["runs"].items() if r.get("loss") == "focal"}
    assert focal
    edit = lambda d: d["recipe"].update(focal_gamma=2.0)  # noqa: E731
    assert changed_configs(tmp_path, edit) == focal
    edit = lambda d: d["recipe"].update(ldam_scale=16.0)  # noqa: E731
    ldam = {f"runs/{n}.json" for n, r in params["runs"].items() if r.get("loss") == "ldam"}
    assert changed_configs(tmp_path, edit) == ldam


def test_candidate_keys_change_only_the_candidate(tmp_path):
    edit = lambda d: d.update(loss="balanced_softmax", epochs=3)  # noqa: E731
    assert changed_configs(tmp_path, edit) == {"runs/candidate.json"}


def test_one_profile_leaves_the_other_untouched(tmp_path):
    def edit(d):
        d["profiles"]["quick"]["budget"]["epochs"] = 3
        d["profiles"]["quick"]["splits"]["step"]["n_min"] = 50

    assert changed_configs(tmp_path, edit, profile="full") == set()
    changed = changed_configs(tmp_path, edit, profile="quick")
    assert "splits.json" in changed and "runs/step_ce.json" in changed


def test_evaluate_settings_do_not_retrain(tmp_path):
    edit = lambda d: d["evaluate"].update(few_shot_max=10)  # noqa: E731
    assert changed_configs(tmp_path, edit) == {"evaluate.json"}


def test_any_profile_name_works(tmp_path):
    def edit(d):
        d["profiles"]["tiny"] = copy.deepcopy(d["profiles"]["quick"])
        d["profiles"]["tiny"]["budget"]["epochs"] = 1
        d["profile"] = "tiny"

    params = write_params(tmp_path, edit)
    assert stage_configs(params)["runs/step_ce.json"]["epochs"] == 1


def test_artifacts_name_stage_outputs():
    """dvc.yaml's artifacts (DVC's model registry: `dvc artifacts get`, Studio) are models the
    pipeline writes: each path a stage's output, as DVC itself reads the file, each name valid."""
    from dvc.repo import Repo
    from dvc.repo.artifacts import check_name_format

    with Repo(str(ROOT)) as repo:
        outs = {out.def_path for stage in repo.index.stages for out in stage.outs}
        artifacts = repo.artifacts.read()["dvc.yaml"]
    assert {"candidate", "backbone"} <= set(artifacts)
    for name, artifact in artifacts.items():
        check_name_format(name)
        assert artifact.path in outs, name
        assert artifact.type == "model" and artifact.desc and artifact.labels, name
