"""Team scale, end to end on real Fashion-MNIST in temp repos: a queued sweep, a round trip
through a git remote and a DVC remote between two clones, and the batch job script.

One `dvc repro` of the project (shrunk to one report run, no transfer run, one epoch on a tiny
split) and one queued sweep serve every test. These tests assert mechanics (what ran, what
came back), never how well one epoch learns.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.dvcrepo import ENV, FASHION, ROOT, drain_queue, experiments, ran, sh, team_project

VENV = Path(sys.executable).parent.parent
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not FASHION.exists(), reason="needs dataset-fashion-mnist"),
]


@pytest.fixture(scope="module")
def remotes(tmp_path_factory) -> dict[str, Path]:
    return team_project(tmp_path_factory.mktemp("team"))


@pytest.fixture(scope="module")
def sweep(remotes) -> dict[str, dict]:
    """Two queued experiments, run by one queue worker; their names, losses and scores."""
    repo = remotes["a"]
    out = sh("dvc", "exp", "run", "--queue", "-S", "loss=cross_entropy,balanced_softmax", cwd=repo)
    assert out.count("Queued experiment") == 2, out
    status = drain_queue(repo, 1)
    assert status.count("Success") == 2, status
    return experiments(repo)


def test_queued_sweep_runs_both_settings(sweep):
    assert sorted(e["loss"] for e in sweep.values()) == ["balanced_softmax", "cross_entropy"]
    assert all(0 <= e["macro_f1"] <= 1 for e in sweep.values()), sweep


def test_round_trip_through_the_remotes(remotes, sweep):
    a = remotes["a"]
    sh("dvc", "push", cwd=a)
    sh("git", "push", "-q", "origin", "main", cwd=a)
    sh("dvc", "exp", "push", "origin", cwd=a)  # every experiment of HEAD, with its outputs
    b = remotes["base"] / "b"
    sh("git", "clone", "-q", str(remotes["origin"]), str(b), cwd=remotes["base"])
    sh("dvc", "pull", cwd=b)
    assert (b / "models/candidate/seed0.pt").read_bytes() == (
        a / "models/candidate/seed0.pt"
    ).read_bytes()
    assert "up to date" in sh("dvc", "status", cwd=b)
    assert ran(sh("dvc", "repro", cwd=b)) == set()  # nothing reruns on the other clone
    sh("dvc", "exp", "pull", "origin", cwd=b)
    assert experiments(b) == sweep  # A's experiments, with their params and metrics


def test_job_script_runs_and_pushes_back(remotes, sweep):
    base = remotes["base"]
    env = {**ENV, "PYTHON_ENV": str(VENV), "TMPDIR": str(base)}
    subprocess.run(["git", "push", "-q", "origin", "main"], cwd=remotes["a"], env=ENV, check=True)
    subprocess.run(["dvc", "push", "-q"], cwd=remotes["a"], env=ENV, check=True)
    for k, (setting, name) in enumerate([("loss=focal", "job-focal"), ("loss=ldam", "job-ldam")]):
        job = subprocess.run(
            [ROOT / "jobs/run_job.sh", str(remotes["origin"]), "main", "-S", setting, "-n", name],
            env={**env, "LTCIFAR_JOB_DIR": str(base / f"job{k}")},
            capture_output=True,
            text=True,
        )
        assert job.returncode == 0, job.stdout + job.stderr
        # the job reran the candidate only: the baseline came from the DVC remote
        assert ran(job.stdout) == {"configs", "train@candidate", "evaluate@candidate", "report"}, (
            job.stdout
        )
    c = base / "c"
    sh("git", "clone", "-q", str(remotes["origin"]), str(c), cwd=base)
    sh("dvc", "exp", "pull", "origin", cwd=c)
    exps = experiments(c)
    assert {n: exps[n]["loss"] for n in ("job-focal", "job-ldam")} == {
        "job-focal": "focal",
        "job-ldam": "ldam",
    }
    assert all(0 <= exps[n]["macro_f1"] <= 1 for n in ("job-focal", "job-ldam"))
    assert set(sweep) <= set(exps)
