"""Helpers of the tests that run DVC in a temporary copy of the project: its environment,
running a command, reading which stages a log says ran, and copying the project in."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")
ENV = {
    **os.environ,
    "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
    "DVC_NO_ANALYTICS": "1",
}


def sh(*cmd: str, cwd: Path, env: dict | None = None) -> str:
    """Run a command; fail the test with its output unless it succeeds."""
    proc = subprocess.run(cmd, cwd=cwd, env=env or ENV, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def ran(out: str) -> set[str]:
    """The stages a `dvc repro` / `dvc exp run` log says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", out))


def copy_project(dest: Path, files: tuple[str, ...] = ("dvc.yaml", "params.yaml", ".gitignore")):
    """The library, the stages and the given top-level files, as a fresh project would hold."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("ltcifar", "stages"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in files:
        shutil.copy(ROOT / name, dest / name)


def init_repo(root: Path, params: dict) -> None:
    """Write ``params`` as the copy's params.yaml and make the copy a git and DVC repository
    with one commit (DVCLive needs one to log against)."""
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "pipeline", cwd=root)


def drain_queue(repo: Path, jobs: int, env: dict | None = None, timeout: float = 900) -> str:
    """`dvc queue start -j jobs`, then wait until no experiment is queued or running; the last
    `dvc queue status`. The workers are stopped whatever happens."""
    env = env or ENV
    sh("dvc", "queue", "start", "-j", str(jobs), cwd=repo, env=env)
    deadline = time.monotonic() + timeout
    try:
        while True:
            status = sh("dvc", "queue", "status", cwd=repo, env=env)
            if "Queued" not in status and "Running" not in status:
                return status
            assert time.monotonic() < deadline, status
            time.sleep(2)
    finally:
        subprocess.run(["dvc", "queue", "stop"], cwd=repo, env=env, capture_output=True)
