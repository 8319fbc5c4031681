"""`jobs/slurm_array.sbatch`, unedited, on a one-node Slurm cluster started on this machine
(tests/slurm_cluster.sh: slurmctld + slurmd + munged, CPU only, as root).

An array of three tasks of the shrunk team project (see ``team_project``): two good settings and
one bad ``-S`` value. Each task clones from a bare git remote, pulls from a local-folder DVC
remote, runs its experiment and pushes it back. Slurm must report the bad task FAILED and the
others COMPLETED, and `dvc exp pull origin` in a fresh clone must bring the good experiments
with their metrics. Mechanics only, never how well one epoch learns.
"""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.dvcrepo import ENV, FASHION, ROOT, experiments, sh, team_project

VENV = Path(sys.executable).parent.parent
CLUSTER = ROOT / "tests/slurm_cluster.sh"
SBATCH = ROOT / "jobs/slurm_array.sbatch"
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"}
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not FASHION.exists(), reason="needs dataset-fashion-mnist"),
]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running one-node cluster: the environment its clients need. Skipped, with the script's
    one-line reason, where it cannot start (no slurm-wlm/munge, not root, daemons refused)."""
    folder = tmp_path_factory.mktemp("slurm")
    start = subprocess.run([CLUSTER, "start", folder], capture_output=True, text=True, timeout=120)
    if start.returncode != 0:
        why = (start.stdout + start.stderr).strip().splitlines() or [f"exit {start.returncode}"]
        pytest.skip(f"no Slurm cluster: {why[-1]}")
    yield {**ENV, "SLURM_CONF": str(folder / "slurm.conf")}
    subprocess.run([CLUSTER, "stop", folder], capture_output=True, timeout=120)


def array_states(job: str, env: dict) -> dict[int, tuple[str, str]]:
    """{array task: (JobState, ExitCode)} from `scontrol show job` (no accounting database)."""
    out = sh("scontrol", "show", "job", "-o", job, cwd=ROOT, env=env)
    states = {}
    for line in out.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if fields.get("ArrayTaskId", "").isdigit():
            states[int(fields["ArrayTaskId"])] = (fields["JobState"], fields["ExitCode"])
    return states


def test_slurm_array_runs_each_task_and_reports_the_failed_one(slurm, tmp_path_factory):
    base = tmp_path_factory.mktemp("slurm-team")
    project = team_project(base)
    sh("git", "push", "-q", "origin", "main", cwd=project["a"])
    sh("dvc", "push", "-q", cwd=project["a"])
    runs = {0: "loss=focal", 1: "loss=ldam", 2: "loss=no_such_loss"}
    env = {
        **slurm,
        "LTCIFAR_RUNS": ";".join(runs.values()),
        "LTCIFAR_SEEDS": "0",
        "LTCIFAR_PROFILE": "quick",
        "PYTHON_ENV": str(VENV),  # the tasks use this venv instead of `make setup`
        "TMPDIR": str(base),  # each task clones into $TMPDIR/ltcifar-job-<job>_<task>
    }
    span = sh(str(SBATCH), "--range", cwd=ROOT, env=env).strip()
    assert span == "0-2"
    started = time.monotonic()
    # Only what a cluster's admin would set goes on the command line: one core a task here.
    job = sh(
        "sbatch", "--parsable", f"--array={span}", "--cpus-per-task=1", f"--chdir={base}",
        f"--output={base}/slurm-%A_%a.out", str(SBATCH), str(project["origin"]), "main",
        cwd=ROOT, env=env,
    ).strip()  # fmt: skip
    while True:
        states = array_states(job, env)
        if len(states) == len(runs) and all(s in DONE for s, _ in states.values()):
            break
        assert time.monotonic() - started < 900, states
        time.sleep(2)
    print(f"slurm array {job}: {len(runs)} tasks in {time.monotonic() - started:.1f} s")
    logs = {k: (base / f"slurm-{job}_{k}.out").read_text() for k in runs}
    assert {k: s for k, (s, _) in states.items()} == {
        0: "COMPLETED",
        1: "COMPLETED",
        2: "FAILED",
    }, logs
    assert states[2][1] != "0:0" and "no_such_loss" in logs[2], logs[2]

    c = base / "c"
    sh("git", "clone", "-q", str(project["origin"]), str(c), cwd=base)
    sh("dvc", "exp", "pull", "origin", cwd=c)
    exps = experiments(c)
    good = {f"slurm-{job}-0": "focal", f"slurm-{job}-1": "ldam"}
    assert {n: e["loss"] for n, e in exps.items() if n.startswith("slurm-")} == good, exps
    assert all(0 <= exps[n]["macro_f1"] <= 1 for n in good), exps
