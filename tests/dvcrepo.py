"""Helpers of the tests that run DVC in a temporary copy of the project: its environment (and
a fresh shell's), running a command, reading which stages a log says ran, and copying the
project in."""

import json
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


def bare_env() -> dict[str, str]:
    """ENV as a fresh shell has it, no virtualenv activated: every venv's bin dir (the one
    running the tests included) off PATH, no VIRTUAL_ENV, and none of the variables a running
    `make` passes its children (under `make test`, MAKELEVEL makes a nested make announce its
    directory)."""
    running = Path(sys.executable).parent.resolve()

    def venv_bin(entry: str) -> bool:
        return (Path(entry).parent / "pyvenv.cfg").exists() or Path(entry).resolve() == running

    path = [d for d in os.environ["PATH"].split(os.pathsep) if d and not venv_bin(d)]
    fresh_shell_lacks = {"VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}
    env = {key: value for key, value in ENV.items() if key not in fresh_shell_lacks}
    return {**env, "PATH": os.pathsep.join(path)}


def bash_lines(markdown: str) -> list[str]:
    """The lines of a Markdown text's first bash block, as a reader types them."""
    return re.findall(r"```bash\n(.*?)```", markdown, re.S)[0].splitlines()


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


def leaves(tree: dict) -> int:
    """The values `dvc exp show` gives a column each: a non-empty mapping's are its leaves."""
    return sum(leaves(v) if isinstance(v, dict) and v else 1 for v in tree.values())


def experiments(repo: Path) -> dict[str, dict]:
    """`dvc exp show --json` as {experiment name: {"loss": ..., "macro_f1": ...}}."""
    out = {}
    for baseline in json.loads(sh("dvc", "exp", "show", "--json", cwd=repo)):
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev.get("data") or {}
                params = data.get("params", {}).get("params.yaml", {}).get("data", {})
                headline = data.get("metrics", {}).get("reports/headline.json", {}).get("data", {})
                f1 = headline.get("candidate", {}).get("macro_f1")
                out[rev["name"]] = {"loss": params.get("loss"), "macro_f1": f1}
    return out


def team_project(base: Path) -> dict[str, Path]:
    """Clone A (the shrunk project, reproduced and committed) with a bare git remote and a
    local-folder DVC remote, as a team would have on a forge and S3: one report run, no
    transfer run, one epoch on a tiny split. Paths under ``base``: a, origin.git, dvcstore."""
    repo, git_remote, store = base / "a", base / "origin.git", base / "dvcstore"
    copy_project(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    quick = params["profiles"]["quick"]
    quick["splits"] = {"step": {**quick["splits"]["step"], "n_max": 100, "n_min": 10}}
    quick["budget"].update(epochs=1, batch_size=32)
    params["profiles"]["full"]["splits"] = {"step": params["profiles"]["full"]["splits"]["step"]}
    params["runs"] = {"ce": {"split": "step"}}
    params["transfer_runs"] = {}
    params["second_stages"] = {}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", "-b", "main", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    sh("dvc", "remote", "add", "-d", "store", str(store), cwd=repo)
    sh("git", "init", "-q", "--bare", "-b", "main", str(git_remote), cwd=base)
    sh("git", "remote", "add", "origin", str(git_remote), cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "pipeline", cwd=repo)
    sh("dvc", "repro", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "baseline", cwd=repo)
    return {"a": repo, "origin": git_remote, "store": store, "base": base}
