"""End to end in a temporary git repo: `dvc repro` (quick profile), a candidate experiment,
and `dvc metrics diff` on real Fashion-MNIST.

Shrunk to one report run and one epoch on a small split so it fits the test budget; the full
quick profile is the same graph with bigger numbers.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")
pytestmark = pytest.mark.skipif(not FASHION.exists(), reason="needs dataset-fashion-mnist")


def sh(*cmd: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "DVC_NO_ANALYTICS": "1",
    }
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    for name in ("ltcifar", "stages"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"] = "quick"
    quick = params["profiles"]["quick"]
    quick["splits"] = {"step": {**quick["splits"]["step"], "n_max": 300, "n_min": 30}}
    quick["force"].update(epochs=1, batch_size=32)
    params["runs"] = {"ce": {"split": "step"}}
    params["transfer_runs"] = {
        "transfer_linear": {**params["transfer_runs"]["transfer_linear"], "split": "step"}
    }
    quick["backbone"]["run"] = "ce"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "pipeline", cwd=repo)
    sh("dvc", "repro", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "baseline", cwd=repo)
    return repo


def test_repro_writes_every_output(repo):
    for path in (
        "data/raw/fashion_mnist",
        "data/prepared/fashion_mnist.npz",
        "data/splits/step.json",
        "models/candidate/seed0.pt",
        "models/ce/seed0.pt",
        "logs/candidate/seed0/plots/metrics/train/loss.tsv",
        "metrics/candidate/confusion.csv",
        "metrics/ce/per_class.csv",
        "models/pretrained/manifest.json",
        "models/transfer_linear/seed0.pt",
        "metrics/transfer_linear.json",
        "reports/REPORT.md",
    ):
        assert (repo / path).exists(), path
    metrics = json.loads((repo / "metrics/candidate.json").read_text())
    assert metrics["run"]["dataset"] == "fashion_mnist" and metrics["run"]["profile"] == "quick"
    assert metrics["accuracy"] > 0.2  # one epoch on 570 images; chance is 0.1
    assert "up to date" in sh("dvc", "status", cwd=repo)


def test_candidate_experiment_and_metrics_diff(repo):
    before = (repo / "models/ce/seed0.pt").read_bytes()
    out = sh("dvc", "exp", "run", "-S", "loss=balanced_softmax", cwd=repo)
    assert "Running stage 'train'" in out and "Running stage 'evaluate'" in out
    assert "Stage 'train_runs@ce' didn't change, skipping" in out
    assert "Running stage 'train_runs@ce'" not in out
    assert (repo / "models/ce/seed0.pt").read_bytes() == before
    diff = sh("dvc", "metrics", "diff", "--json", cwd=repo)
    changes = json.loads(diff)["metrics/candidate.json"]
    assert "macro_f1" in changes and changes["macro_f1"]["old"] != changes["macro_f1"]["new"]
    assert "metrics/ce.json" not in json.loads(diff)
    table = sh("dvc", "metrics", "diff", cwd=repo)
    assert "metrics/candidate.json" in table and "macro_f1" in table


def test_bad_param_fails_with_one_line(repo):
    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["loss"] = "hinge"
    try:
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        proc = subprocess.run(
            [sys.executable, "-m", "stages.train", "candidate"],
            cwd=repo,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 2
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("error: loss = 'hinge' is not allowed; choose one of: ")
        assert "balanced_softmax" in line and "cross_entropy" in line
    finally:
        (repo / "params.yaml").write_text(original)


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
