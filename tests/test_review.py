"""`python -m ltcifar.reporting.review <rev>` on a temp git+dvc repo with two commits: the comment
holds
exactly the params, metrics and run-config changes, and nothing that did not change."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ltcifar.reporting.review import config_changes, metric_name

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    "PYTHONPATH": str(ROOT),
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
    "DVC_NO_ANALYTICS": "1",
}
DVC_YAML = {
    "stages": {"configs": {"cmd": "true", "params": [{"params.yaml": None}]}},
    "metrics": ["reports/headline.json"],
}


def sh(*cmd: str, cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def write(repo: Path, files: dict[str, object]) -> None:
    for rel, content in files.items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(content) if rel.endswith(".yaml") else json.dumps(content)
        path.write_text(text)


@pytest.mark.slow
def test_review_holds_exactly_the_changes(tmp_path):
    repo = tmp_path
    ce_cfg = {"loss": "cross_entropy", "epochs": 6}
    cand_cfg = {"loss": "cross_entropy", "epochs": 6, "opt": {"lr": 0.1}}
    sh("git", "init", "-q", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    write(
        repo,
        {
            "dvc.yaml": DVC_YAML,
            "params.yaml": {"loss": "cross_entropy", "recipe": {"lr": 0.1, "epochs": 6}},
            "reports/headline.json": {"candidate": {"macro_f1": 0.7345}, "ce": {"macro_f1": 0.6}},
            "configs/runs/candidate.json": cand_cfg,
            "configs/runs/ce.json": ce_cfg,
            "configs/runs/gone.json": {"loss": "focal"},
        },
    )
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "baseline", cwd=repo)
    write(
        repo,
        {
            "params.yaml": {"loss": "balanced_softmax", "recipe": {"lr": 0.05, "epochs": 6}},
            "reports/headline.json": {"candidate": {"macro_f1": 0.7642}, "ce": {"macro_f1": 0.6}},
            "configs/runs/candidate.json": {
                "loss": "balanced_softmax",
                "epochs": 6,
                "opt": {"lr": 0.05},
                "la_tau": 1.0,
            },
        },
    )
    (repo / "configs/runs/gone.json").unlink()
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "try balanced softmax", cwd=repo)
    # Second commit is checked out; the first is the base, as in a PR against main.
    md = sh(sys.executable, "-m", "ltcifar.reporting.review", "HEAD~1", cwd=repo)
    assert md == (
        "## Changes against `HEAD~1`\n\n"
        "### Params\n\n"
        "| param | old | new |\n|---|---|---|\n"
        "| loss | cross_entropy | balanced_softmax |\n"
        "| recipe.lr | 0.1 | 0.05 |\n\n"
        "### Metrics\n\n"
        "| metric | old | new | change |\n|---|---|---|---|\n"
        "| candidate.macro_f1 | 0.7345 | 0.7642 | +0.0297 |\n\n"
        "### Run config `candidate`\n\n"
        "| key | old | new |\n|---|---|---|\n"
        "| la_tau | — | 1 |\n"
        "| loss | cross_entropy | balanced_softmax |\n"
        "| opt.lr | 0.1 | 0.05 |\n\n"
        "### Run config `gone`\n\n"
        "| key | old | new |\n|---|---|---|\n"
        "| loss | focal | — |\n"
    ), md
    # Against itself: nothing changed, and the comment says so.
    assert "No params, metrics or run-config changes." in sh(
        sys.executable, "-m", "ltcifar.reporting.review", "HEAD", cwd=repo
    )


def test_names_and_config_rows():
    assert metric_name("reports/headline.json", "ce.macro_f1") == "ce.macro_f1"
    assert metric_name("metrics/candidate.json", "macro_f1") == "candidate.macro_f1"
    assert metric_name("other/m.json", "acc") == "other/m.acc"
    assert config_changes({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}}) == [["b.c", "2", "3"]]
