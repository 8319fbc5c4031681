"""End to end in a temporary git repo on real Fashion-MNIST: `dvc repro` (quick profile), then
experiments that must rerun exactly the stages they affect, `dvc metrics diff`, and bad values.

Shrunk to two report runs, one transfer run and one epoch on a small split so it fits the test
budget; the full quick profile is the same graph with bigger numbers. These tests assert
mechanics (files, counts, what reran), never how well one epoch learns.
"""

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import yaml

from tests.dvcrepo import (
    ENV,
    FASHION,
    ROOT,
    bare_env,
    bash_lines,
    copy_project,
    leaves,
    ran,
    sh,
)

pytestmark = [
    pytest.mark.skipif(not FASHION.exists(), reason="needs dataset-fashion-mnist"),
    pytest.mark.slow,
]


HEADLINE = "reports/headline.json"  # the one metrics file: every report run's macro-F1


def readme_section(heading: str) -> str:
    """The text of README.md's ``## heading`` section."""
    return (ROOT / "README.md").read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def readme_bash(heading: str) -> list[str]:
    """The lines of the first bash block of a README section, as a newcomer types them."""
    return bash_lines(readme_section(heading))


def dvc_fails(*args: str, cwd: Path) -> str:
    proc = subprocess.run(["dvc", *args], cwd=cwd, env=ENV, capture_output=True, text=True)
    assert proc.returncode != 0, proc.stdout
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """The real pipeline, shrunk: two report runs (one focal), one transfer run, one epoch."""
    repo = tmp_path_factory.mktemp("repo")
    copy_project(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["profile"] == "quick"  # the committed default runs offline
    quick = params["profiles"]["quick"]
    step = {**quick["splits"]["step"], "n_max": 300, "n_min": 30}
    quick["splits"] = {"step": step}
    quick["budget"].update(epochs=1, batch_size=32)
    params["profiles"]["full"]["splits"] = {"step": params["profiles"]["full"]["splits"]["step"]}
    params["runs"] = {"ce": {"split": "step"}, "focal": {"split": "step", "loss": "focal"}}
    params["transfer_runs"] = {"transfer_linear": {"split": "step", "finetune": "linear"}}
    params["second_stages"] = {
        "ce_crt": {"run": "ce", "split": "step", "method": "crt", "epochs": 1}
    }
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "pipeline", cwd=repo)
    out = sh("dvc", "repro", cwd=repo)
    assert "configs" in ran(out) and "backbone" in ran(out)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "baseline", cwd=repo)
    return repo


def test_repro_writes_every_output(repo):
    for path in (
        "configs/runs/candidate.json",
        "configs/runs/focal.json",
        "data/raw/fashion_mnist",
        "data/prepared/fashion_mnist.npz",
        "data/splits/step.json",
        "models/backbone/backbone.pt",
        "models/candidate/seed0.pt",
        "models/ce/seed0.pt",
        "logs/candidate/seed0/plots/metrics/train/loss.tsv",
        "metrics/candidate/confusion.csv",
        "metrics/ce/per_class.csv",
        "models/transfer_linear/seed0.pt",
        "metrics/transfer_linear.json",
        "models/ce_crt/seed0.pt",
        "metrics/ce_crt.json",
        "reports/REPORT.md",
    ):
        assert (repo / path).exists(), path
    metrics = json.loads((repo / "metrics/candidate.json").read_text())
    run = json.loads((repo / "metrics/candidate/details.json").read_text())["run"]
    assert run["dataset"] == "fashion_mnist" and run["profile"] == "quick"
    assert run["test_images"] == 10_000
    assert run["train_images"] == 300 + 9 * 30  # step split: class 0 keeps n_max
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["macro_f1"] <= 1
    # A focal run's config holds focal's setting and no other method's.
    focal = json.loads((repo / "configs/runs/focal.json").read_text())
    assert "focal_gamma" in focal and "la_tau" not in focal and "label_smoothing" not in focal
    assert "up to date" in sh("dvc", "status", cwd=repo)


def to_baseline(repo: Path) -> None:
    """The committed baseline back: params, lock and outputs. The index is rebuilt first: after
    `dvc exp run` it can pair the baseline's blobs with the stat of an experiment's files of the
    same size, which `git reset --hard` then takes for unchanged."""
    sh("git", "read-tree", "--empty", cwd=repo)
    sh("git", "reset", "-q", "--hard", cwd=repo)
    sh("dvc", "checkout", "-q", "--force", cwd=repo)
    assert "up to date" in sh("dvc", "status", cwd=repo)


def bash(lines: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Lines typed in a fresh shell that stops at the first failing one."""
    cmd = ["bash", "-ec", "\n".join(lines)]
    return subprocess.run(cmd, cwd=cwd, env=bare_env(), capture_output=True, text=True)


def test_readme_commands_work_as_typed_in_a_fresh_shell(repo):
    """The README's experiment block, in a shell whose PATH has no venv, in a project whose
    `.venv` is the tests' venv as `make repro` leaves it: with its activate line, every command
    succeeds, the candidate's stages alone run, on the venv's python, and `dvc metrics diff`
    shows the candidate's change and no other run's; without it, the block fails. The project
    goes back to its baseline before each run and after, as other tests expect."""
    venv = Path(sys.prefix)
    if not (venv / "bin/activate").exists():
        pytest.skip("needs the tests run from a venv")
    block = readme_bash("params.yaml in six concepts")
    assert block[0].split("#")[0].strip() == ". .venv/bin/activate", block
    (repo / ".venv").symlink_to(venv)
    try:
        to_baseline(repo)
        bare = bash(block[1:], cwd=repo)
        failure = bare.stdout + bare.stderr
        assert bare.returncode != 0 and re.search("not found|ModuleNotFoundError", failure), failure
        to_baseline(repo)
        ce_model = (repo / "models/ce/seed0.pt").read_bytes()
        typed = bash([*block, "command -v python"], cwd=repo)
        out = typed.stdout + typed.stderr
        assert typed.returncode == 0, out
        assert ran(out) == {"configs", "train@candidate", "evaluate@candidate", "report"}, out
        assert "ModuleNotFoundError" not in out
        assert Path(typed.stdout.splitlines()[-1]).parent.resolve() == (venv / "bin").resolve()
        assert "candidate.macro_f1" in typed.stdout  # `dvc metrics diff`'s table
        assert (repo / "models/ce/seed0.pt").read_bytes() == ce_model
        diff = json.loads(sh("dvc", "metrics", "diff", "--json", cwd=repo))
        assert list(diff) == [HEADLINE], diff
        changes = diff[HEADLINE]
        assert changes["candidate.macro_f1"]["old"] != changes["candidate.macro_f1"]["new"]
        assert "ce.macro_f1" not in changes
        table = sh("dvc", "metrics", "diff", cwd=repo)
        assert HEADLINE in table and "candidate.macro_f1" in table
    finally:
        (repo / ".venv").unlink()
        to_baseline(repo)


def test_method_setting_reruns_only_its_runs(repo):
    out = sh("dvc", "exp", "run", "-S", "recipe.focal_gamma=2.0", cwd=repo)
    assert ran(out) == {"configs", "train_runs@focal", "evaluate_runs@focal", "report"}, out
    out = sh("dvc", "exp", "run", "-S", "recipe.la_tau=0.5", cwd=repo)
    assert ran(out) == {"configs"}, out  # no run uses logit_adjusted


def test_second_stage_setting_reruns_it_and_never_its_first_stage(repo):
    before = (repo / "models/ce/seed0.pt").read_bytes()
    out = sh("dvc", "exp", "run", "-S", "second_stages.ce_crt.epochs=2", cwd=repo)
    assert ran(out) == {"configs", "second_stage@ce_crt", "evaluate_second@ce_crt", "report"}, out
    assert (repo / "models/ce/seed0.pt").read_bytes() == before
    run = json.loads((repo / "metrics/ce_crt/details.json").read_text())["run"]
    assert (run["second_stage"], run["first_stage"]) == ("crt", "ce")


def test_the_readme_experiment_table_stays_narrow(repo):
    """The README's command for comparing experiments, run after the experiments above: the
    candidate's macro-F1, the params and runs' scores that changed, and a handful of other
    columns (plain `dvc exp show` lists every param and every dependency too)."""
    line = next(
        ln for ln in readme_bash("params.yaml in six concepts") if ln.startswith("dvc exp show")
    )
    header = sh(*shlex.split(line.split("#")[0]), "--csv", cwd=repo).splitlines()[0].split(",")
    assert "candidate.macro_f1" in header and "loss" in header, header
    assert len(header) <= 16, header


def test_plain_exp_show_is_params_one_score_per_run_and_dependencies(repo):
    """Plain `dvc exp show` has DVC's own columns, every params.yaml value, each report run's
    macro-F1 from the one metrics file, and every dependency path of the lock, nothing more;
    `dvc metrics show` covers every report run."""
    runs = ["candidate", "ce", "focal", "transfer_linear", "ce_crt"]
    header = sh("dvc", "exp", "show", "--no-pager", "--csv", cwd=repo).splitlines()[0].split(",")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    deps = {d["path"] for stage in lock.values() for d in stage.get("deps", [])}
    assert {f"{run}.macro_f1" for run in runs} <= set(header), header
    assert len(header) == 5 + leaves(params) + len(runs) + len(deps), header
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=repo))
    scores = shown[""]["data"][HEADLINE]["data"]
    assert set(scores) == set(runs) and all(0 <= s["macro_f1"] <= 1 for s in scores.values())


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("loss=hinge", "error: loss = 'hinge' is not allowed; choose one of: "),
        ("+epochs=-1", "error: epochs = -1 must be > 0"),  # `+`: a key new to the top level
    ],
)
def test_bad_value_fails_first_and_keeps_every_output(repo, setting, message):
    original = (repo / "params.yaml").read_text()
    outputs = sorted(p for p in (repo / "models").rglob("*.pt"))
    try:
        out = dvc_fails("exp", "run", "-S", setting, cwd=repo)
        (line,) = [ln for ln in out.splitlines() if ln.startswith("error: ")]
        assert line.startswith(message), out
        assert ran(out) == {"configs"}, out
        assert sorted(p for p in (repo / "models").rglob("*.pt")) == outputs
        assert (repo / "configs/runs/candidate.json").exists()  # persist: the old configs stay
    finally:
        (repo / "params.yaml").write_text(original)


def test_readme_make_targets_need_no_activation():
    """The make targets the README names, dry-run in a shell whose PATH has no venv: each
    command calls the venv's tools by path, and the shells DVC starts its stages in find the
    venv's python first on the PATH the Makefile exports."""
    targets = set(re.findall(r"(?:^|`)make ([\w-]+)", readme_section("Two commands"), re.M))
    assert {"repro", "test", "full"} <= targets, targets
    env = bare_env()
    for target in targets:
        dry = sh("make", "-n", "-o", ".venv/.setup-done", target, cwd=ROOT, env=env)
        assert dry and all(ln.startswith(".venv/bin/") for ln in dry.splitlines()), (target, dry)
    echo = ["make", "-s", "--eval", 'path: ; @echo "$$PATH"', "path"]
    assert sh(*echo, cwd=ROOT, env=env).split(":")[0] == str(ROOT / ".venv/bin")


CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--virtual-time-budget=8000",
]


@pytest.fixture(scope="module")
def vega_js(tmp_path_factory) -> Path:
    """vega, vega-lite and vega-embed from the npm registry: DVC's page loads them from a CDN,
    which an offline browser cannot reach."""
    if shutil.which("npm") is None:
        pytest.skip("needs npm")
    prefix = tmp_path_factory.mktemp("npm")
    proc = subprocess.run(
        [
            "npm",
            "install",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(prefix),
            "vega@5",
            "vega-lite@5",
            "vega-embed@6",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return prefix / "node_modules"


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
def test_plots_page_renders_in_a_browser(repo, vega_js, tmp_path):
    out = tmp_path / "plots"
    sh(
        "dvc",
        "plots",
        "show",
        "--html-template",
        str(ROOT / "tests/data/offline_plots.html"),
        "-o",
        str(out),
        cwd=repo,
    )
    page = out / "index.html"
    html = page.read_text()
    for plot in (
        "metrics/candidate/confusion.csv",
        "metrics/ce/per_class.csv",
        "candidate_macro_f1",
    ):
        assert plot in html, plot
    for lib in ("vega", "vega-lite", "vega-embed"):
        shutil.copy(vega_js / lib / "build" / f"{lib}.min.js", out)
    dom = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    rendered = dom.count("<canvas") + dom.count("<svg")
    assert rendered >= html.count("vegaEmbed("), "every plot should render a canvas or svg"
    assert "Error" not in dom.split("<body", 1)[1]  # vega-embed writes failures into the page
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            CHROMIUM,
            *CHROMIUM_FLAGS,
            f"--screenshot={shot}",
            "--window-size=1280,1600",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert matplotlib.image.imread(shot).std() > 0.05, "the screenshot is blank"
