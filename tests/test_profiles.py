"""A profile trains only the runs it names: the others' stages write placeholders, the report
leaves them out, the profile defines only the splits its runs use, and a change of the list
reruns exactly the runs it adds or removes. The committed profiles keep every run, byte for byte.

The recipe of docs/own-images.md is read from the page itself: the fast tests load it, the slow
ones run it with DVC on a small image folder.
"""

import copy
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ltcifar.config.params import load
from ltcifar.config.runconfig import NOTE, OUTSIDE, SKIPPED, dumps
from ltcifar.config.runs import profile_runs, profile_second_stages, run_names, stage_configs
from ltcifar.reporting import report
from tests.dvcrepo import ROOT, bash_lines, copy_project, init_repo, ran, sh
from tests.params_edit import error_of, repo_params, write
from tests.test_image_folder import write_folder
from tests.test_report import make_outputs, results_table

DOC = ROOT / "docs" / "own-images.md"
THREE = {"exp_ce", "exp_balanced_softmax", "exp_ce_crt"}  # what the recipe trains


def doc_recipe() -> tuple[dict, list[str]]:
    """The page's YAML blocks merged into one mapping, and its first bash block's commands."""
    text = DOC.read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    merged: dict = {}
    for block in blocks:
        for key, value in yaml.safe_load(block).items():
            merged.setdefault(key, {}).update(value)
    commands = [ln.split("#")[0].strip() for ln in bash_lines(text) if ln.strip()]
    return merged, commands


def with_recipe(raw: dict) -> dict:
    """``raw`` (params.yaml as data) with the page's entries added under their keys."""
    raw = copy.deepcopy(raw)
    for key, entries in doc_recipe()[0].items():
        raw[key].update(copy.deepcopy(entries))
    return raw


def configs_of(tmp_path: Path, raw: dict, profile: str) -> dict[str, str]:
    """What the configs stage writes for ``raw`` under ``profile``, as file texts."""
    path = write(tmp_path, {**raw, "profile": profile})
    return {rel: dumps(content) for rel, content in stage_configs(load(path)).items()}


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    assert set(before) == set(after)
    return {k for k in before if before[k] != after[k]}


def set_runs(runs: list[str]):
    return lambda d: d["profiles"]["mine"].update(runs=runs)


@pytest.fixture(scope="module")
def raw() -> dict:
    return repo_params()


@pytest.fixture
def mine(raw) -> dict:
    """params.yaml with the page's recipe added, a fresh copy for each test to edit."""
    return with_recipe(raw)


# --- the committed profiles -----------------------------------------------------------------


def test_committed_profiles_keep_every_run(raw):
    params = load(ROOT / "params.yaml")
    for profile in ("quick", "full"):
        assert "runs" not in raw["profiles"][profile]  # no list: every run
        assert profile_runs(params, profile) == run_names(params)
        assert profile_second_stages(params, profile) == list(params["second_stages"])


def test_committed_configs_are_unchanged(tmp_path, raw):
    """quick's configs are the committed configs/ byte for byte; full's hold no placeholder."""
    quick = configs_of(tmp_path, raw, "quick")
    committed = {
        str(p.relative_to(ROOT / "configs")): p.read_text()
        for p in (ROOT / "configs").rglob("*.json")
    }
    assert quick == committed
    full = configs_of(tmp_path, raw, "full")
    assert set(full) == set(quick) and not any(SKIPPED in text for text in full.values())


# --- the recipe of docs/own-images.md --------------------------------------------------------


def test_the_recipe_profile_trains_its_three_runs_and_defines_one_split(tmp_path, mine):
    assert doc_recipe()[1] == ["dvc exp run -S profile=mine"]
    assert set(mine["profiles"]["mine"]["splits"]) == {"exp100"}
    params = load(write(tmp_path, {**mine, "profile": "mine"}))
    files = stage_configs(params)
    evaluated = {*run_names(params), *params["second_stages"]}
    assert {n for n in evaluated if SKIPPED not in files[f"runs/{n}.json"]} == THREE
    for name in evaluated - THREE:
        why = OUTSIDE["second" if name in params["second_stages"] else "run"]
        assert files[f"runs/{name}.json"] == {"name": name, SKIPPED: why}
    assert files["second/exp_ce_lws.json"] == {"name": "exp_ce_lws", SKIPPED: OUTSIDE["second"]}
    assert files["second/exp_ce_crt.json"]["method"] == "crt"
    # its split, and a placeholder for each split that the runs outside it name
    assert files["splits.json"]["exp100"]["dataset"] == "xray"
    placeholders = {s for s, spec in files["splits.json"].items() if SKIPPED in spec}
    assert placeholders == {"step", "c100_exp100", "balanced"}
    assert files["backbone.json"] == {SKIPPED: OUTSIDE["backbone"]}  # no transfer run
    assert files["download.json"] == {
        "xray": {"kind": "image_folder", "sources": ["/data/xray"], "image_size": 64, "sha256": ""}
    }


def test_without_second_stages_a_profile_takes_those_of_its_runs(tmp_path, mine):
    del mine["profiles"]["mine"]["second_stages"]
    params = load(write(tmp_path, {**mine, "profile": "mine"}))
    assert profile_second_stages(params) == ["exp_ce_crt", "exp_ce_lws", "exp_ce_tau_norm",
                                             "exp_ce_maxnorm"]  # fmt: skip


def test_runs_of_your_own_on_a_split_of_your_own(tmp_path, raw, mine):
    """A run that only your profile names, on a split only it defines, is outside quick: quick's
    configs gain its placeholders and nothing else changes. Named by no profile, quick would
    train it, and refuses it instead."""
    own = copy.deepcopy(mine)
    own["runs"]["xray_focal"] = {"split": "lt", "loss": "focal"}
    prof = own["profiles"]["mine"]
    prof["splits"]["lt"] = dict(prof["splits"]["exp100"])
    prof["runs"].append("xray_focal")
    before, quick = configs_of(tmp_path, raw, "quick"), configs_of(tmp_path, own, "quick")
    assert changed(before, {k: quick[k] for k in before}) == {"splits.json"}
    assert json.loads(quick["splits.json"])["lt"] == {SKIPPED: OUTSIDE["split"]}
    assert json.loads(quick["runs/xray_focal.json"]) == {"name": "xray_focal",
                                                       SKIPPED: OUTSIDE["run"]}  # fmt: skip
    assert json.loads(configs_of(tmp_path, own, "mine")["runs/xray_focal.json"])["loss"] == "focal"
    prof["runs"].remove("xray_focal")
    assert error_of(tmp_path, own, lambda d: None) == (
        "runs.xray_focal.split = 'lt' is not defined in profiles.quick.splits; choose one of: "
        "step, exp100, c100_exp100, balanced (profiles.quick trains every run no profile lists)"
    )


def _no_run_for_quick(d: dict) -> None:
    """Every run (the candidate alone) is one that mine names, on a split quick lacks."""
    d.update(runs={}, transfer_runs={}, second_stages={}, split="lt")
    d["profiles"]["mine"]["splits"]["lt"] = dict(d["profiles"]["mine"]["splits"]["exp100"])
    d["profiles"]["mine"].update(runs=["candidate"], second_stages=[])


def _mine(**over):
    return lambda d: d["profiles"]["mine"].update(over)


REFUSED = [
    (set_runs(["exp_ce", "step_ce"]),
     "runs.step_ce.split = 'step' is not defined in profiles.mine.splits; choose one of: exp100"),
    (set_runs(["exp_ce", "exp_cee"]), "profiles.mine.runs names 'exp_cee', which is not a run; "
     "choose one of: candidate, step_ce, "),
    (set_runs([]), "profiles.mine.runs is empty; give at least one value"),
    (set_runs(["exp_ce", "exp_ce"]), "profiles.mine.runs = ['exp_ce', 'exp_ce'] lists a value "
     "twice"),
    (_mine(second_stages=["exp_wb_maxnorm"]), "profiles.mine.second_stages names "
     "'exp_wb_maxnorm', whose run 'exp_wb' is not one of its runs; add it to profiles.mine.runs"),
    (_mine(second_stages=["nope"]), "profiles.mine.second_stages names 'nope', which is not a "
     "second stage; choose one of: exp_ce_crt, "),
    (lambda d: (d["profiles"]["mine"]["runs"].append("transfer_linear"),
                d["profiles"]["mine"]["splits"].update(balanced={"dataset": "xray",
                                                                 "shape": "none"})),
     "missing key profiles.mine.backbone: its transfer runs start from it (transfer_linear)"),
    (_no_run_for_quick,
     "profiles.quick trains no run: name the runs it trains in profiles.quick.runs"),
]  # fmt: skip


@pytest.mark.parametrize(("edit", "message"), REFUSED)
def test_what_a_profile_names_is_checked_in_one_line(tmp_path, mine, edit, message):
    msg = error_of(tmp_path, mine, edit)
    assert msg.startswith(message) and "\n" not in msg, msg


# --- what a change of profile reruns, seen in configs/ ---------------------------------------


def test_adding_or_removing_a_run_changes_its_config_only(tmp_path, mine):
    base = configs_of(tmp_path, mine, "mine")
    added = copy.deepcopy(mine)
    added["profiles"]["mine"]["runs"].append("exp_ldam_drw")
    assert changed(base, configs_of(tmp_path, added, "mine")) == {"runs/exp_ldam_drw.json"}
    removed = copy.deepcopy(mine)
    removed["profiles"]["mine"]["runs"].remove("exp_balanced_softmax")
    assert changed(base, configs_of(tmp_path, removed, "mine")) == {
        "runs/exp_balanced_softmax.json"
    }
    removed["profiles"]["mine"]["second_stages"] = []
    assert changed(base, configs_of(tmp_path, removed, "mine")) == {
        "runs/exp_balanced_softmax.json",
        "runs/exp_ce_crt.json",
        "second/exp_ce_crt.json",
    }


def test_switching_profiles_leaves_what_both_leave_out(tmp_path, mine):
    """Another profile with one more run: its config, and evaluate.json (which records the
    profile with every score) change; nothing outside both profiles does."""
    two = copy.deepcopy(mine)
    two["profiles"]["wide"] = copy.deepcopy(mine["profiles"]["mine"])
    two["profiles"]["wide"]["runs"].append("exp_ldam_drw")
    assert changed(configs_of(tmp_path, two, "mine"), configs_of(tmp_path, two, "wide")) == {
        "evaluate.json",
        "runs/exp_ldam_drw.json",
    }


# --- the stages of what is outside the profile -----------------------------------------------


def run_module(module: str, *args: str, cwd: Path) -> str:
    """``python -m module args`` in ``cwd``; fails unless it exits 0 without importing torch."""
    code = (
        "import runpy, sys; sys.argv = [sys.argv[1], *sys.argv[2:]]; "
        "runpy.run_module(sys.argv[0], run_name='__main__'); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code, module, *args], cwd=cwd, env=env, capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_stages_outside_the_profile_write_placeholders_without_torch(tmp_path, mine):
    files = stage_configs(load(write(tmp_path, {**mine, "profile": "mine"})))
    work = tmp_path / "work"
    for rel, content in files.items():
        (work / "configs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / "configs" / rel).write_text(dumps(content))
    (work / "models" / "c100_ce").mkdir(parents=True)
    (work / "models" / "c100_ce" / "seed0.pt").write_bytes(b"an older profile's model")
    out = run_module("stages.train", "c100_ce", cwd=work)
    assert out == f"c100_ce: skipped, {OUTSIDE['run']}\n"
    for folder in ("models/c100_ce", "logs/c100_ce"):
        assert [p.name for p in (work / folder).iterdir()] == [NOTE]
    run_module("stages.evaluate", "c100_ce", cwd=work)
    assert json.loads((work / "metrics/c100_ce.json").read_text()) == {}
    details = json.loads((work / "metrics/c100_ce/details.json").read_text())
    assert details == {"run": {"name": "c100_ce"}, SKIPPED: OUTSIDE["run"]}
    assert (work / "metrics/c100_ce/confusion.csv").read_text() == "actual,predicted\n"
    assert (work / "metrics/c100_ce/per_class.csv").read_text().startswith("class,")
    run_module("stages.second_stage", "exp_ce_lws", cwd=work)
    assert [p.name for p in (work / "models/exp_ce_lws").iterdir()] == [NOTE]
    run_module("stages.evaluate", "exp_ce_lws", cwd=work)
    run_module("stages.backbone", cwd=work)
    assert [p.name for p in (work / "models/backbone").iterdir()] == [NOTE]
    splits = json.loads((work / "configs/splits.json").read_text())
    del splits["exp100"]  # the one split with images to index
    (work / "configs/splits.json").write_text(dumps(splits))
    run_module("stages.lt_index", cwd=work)
    assert json.loads((work / "data/splits/balanced.json").read_text()) == {
        "split": "balanced",
        SKIPPED: OUTSIDE["split"],
    }


def test_the_report_leaves_out_what_is_outside_the_profile(tmp_path, monkeypatch):
    from stages.evaluate import write_placeholders

    root = make_outputs(tmp_path / "out")
    monkeypatch.chdir(root)
    write_placeholders("outside_run", OUTSIDE["run"])
    (root / "data/splits/outside_split.json").write_text(
        json.dumps({"split": "outside_split", SKIPPED: OUTSIDE["split"]})
    )
    path = report.write_report(root / "metrics", root / "logs", root / "data/splits", root / "r")
    text = path.read_text()
    assert "outside_run" not in text and "outside_split" not in text
    assert "exp_ce" in results_table(text)


# --- end to end: the recipe, run as written, with DVC -------------------------------------

# The small folder the slow tests use: train / test images per class.
COUNTS = {"effusion": (20, 3), "normal": (12, 3), "nodule": (8, 3)}
# What fits the folder (8 images in the smallest class) and trains in seconds: the only
# changes to the page's recipe, besides the folder's path.
SPLIT = {"n_max": 6, "imbalance": 4, "val_per_class": 2}  # 6, 3, 1 training images
BUDGET = {"epochs": 1, "warmup_epochs": 0, "batch_size": 8, "seeds": [0], "checkpoint_every": 1}


def report_runs(repo: Path) -> set[str]:
    return set(results_table((repo / "reports/REPORT.md").read_text()))


def status(repo: Path) -> set[str]:
    """The stages `dvc status` says have changed."""
    return set(json.loads(sh("dvc", "status", "--json", cwd=repo)))


@pytest.fixture(scope="module")
def recipe_repo(tmp_path_factory) -> Path:
    """A fresh copy of the project with the page's entries added, sized to a small folder, and
    the page's command run."""
    tmp = tmp_path_factory.mktemp("recipe")
    images = write_folder(tmp / "images", COUNTS)
    repo = tmp / "repo"
    copy_project(repo)
    params = with_recipe(yaml.safe_load((repo / "params.yaml").read_text()))
    params["download"]["xray"].update(sources=[str(images)], image_size=16)
    params["profiles"]["mine"]["splits"]["exp100"].update(SPLIT)
    params["profiles"]["mine"]["budget"].update(BUDGET)
    init_repo(repo, params)
    (command,) = doc_recipe()[1]
    sh(*shlex.split(command), cwd=repo)
    return repo


@pytest.mark.slow
def test_the_recipe_trains_and_reports_its_three_runs_only(recipe_repo):
    repo, params = recipe_repo, load(recipe_repo / "params.yaml")
    assert report_runs(repo) == THREE
    for name in THREE:
        assert (repo / "models" / name / "seed0.pt").is_file(), name
    for name in {*run_names(params), *params["second_stages"]} - THREE:
        assert [p.name for p in (repo / "models" / name).iterdir()] == [NOTE], name
        assert json.loads((repo / "metrics" / f"{name}.json").read_text()) == {}
    assert [p.name for p in (repo / "models/backbone").iterdir()] == [NOTE]
    split = json.loads((repo / "data/splits/exp100.json").read_text())
    assert split["dataset"] == "xray" and split["counts"] == [6, 3, 1]
    assert "up to date" in sh("dvc", "status", cwd=repo)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("runs", "changes"),
    [
        (["exp_ce", "exp_balanced_softmax", "exp_ldam_drw"], "exp_ldam_drw"),  # added
        (["exp_ce", "exp_ldam_drw"], "exp_balanced_softmax"),  # removed
    ],
)
def test_adding_or_removing_a_run_reruns_it_alone(recipe_repo, runs, changes):
    """After the configs stage, `dvc status` names the run's two stages and the report (which
    reads the list of run configs), and `dvc repro` runs those, nothing else; then all is up to
    date."""
    repo = recipe_repo
    before = (repo / "models/exp_ce/seed0.pt").read_bytes()
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["profiles"]["mine"]["runs"] = runs
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert ran(sh("dvc", "repro", "configs", cwd=repo)) == {"configs"}
    stages = {f"train_runs@{changes}", f"evaluate_runs@{changes}"}
    assert status(repo) == stages | {"report"}
    assert ran(sh("dvc", "repro", cwd=repo)) == stages | {"report"}
    assert "up to date" in sh("dvc", "status", cwd=repo)
    assert report_runs(repo) == {*runs, "exp_ce_crt"}
    assert (repo / "models/exp_ce/seed0.pt").read_bytes() == before


@pytest.mark.slow
def test_switching_profiles_retrains_only_what_changed(recipe_repo):
    """To a copy of the profile with one more run: after the configs stage, `dvc status` names
    that run's training, the report and every evaluate stage (the profile is recorded with each
    score; outside runs just rewrite their placeholders), no other training. The test above
    shows that `dvc repro` then runs what `dvc status` names."""
    repo = recipe_repo
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["profiles"]["mine"]["runs"] = ["exp_ce", "exp_ldam_drw"]  # as the test above left it
    data["profiles"]["wide"] = copy.deepcopy(data["profiles"]["mine"])
    data["profiles"]["wide"]["runs"].append("exp_balanced_softmax")
    data["profile"] = "wide"
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert ran(sh("dvc", "repro", "configs", cwd=repo)) == {"configs"}
    stale = status(repo)
    assert {s for s in stale if not s.startswith("evaluate")} == {
        "train_runs@exp_balanced_softmax",
        "report",
    }, stale
    assert {"evaluate_runs@exp_balanced_softmax", "evaluate_runs@exp_ce"} <= stale
