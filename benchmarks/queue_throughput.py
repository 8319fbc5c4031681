"""Wall time of a queued sweep with `dvc queue start -j 1` against `-j 2` (LTCIFAR_WORKERS=2).

Usage (from the repo root, offline): python benchmarks/queue_throughput.py [--experiments N]

Builds a shrunk copy of the project in a temporary git repo (quick profile, one small step
split, one report run, two epochs), reproduces it once, then queues N candidate experiments
(`-S loss=...`, each round on a seed of its own, so no run-cache hit) and times the queue to
empty: with one worker, then with two and `LTCIFAR_WORKERS=2` (each takes cores // 2 torch
threads). Each experiment retrains and re-evaluates the candidate.
The last line is ``RESULT j1_s=.. j2_s=.. speedup=.. cores=..``.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.dvcrepo import ENV, copy_project, drain_queue, init_repo, sh  # noqa: E402

LOSSES = ["cross_entropy", "balanced_softmax", "focal", "weighted_ce"]


def shrunk_params(repo: Path) -> dict:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    quick = params["profiles"]["quick"]
    quick["splits"] = {"step": {**quick["splits"]["step"], "n_max": 500, "n_min": 50}}
    quick["budget"].update(epochs=2)
    params["profiles"]["full"]["splits"] = {"step": params["profiles"]["full"]["splits"]["step"]}
    params["runs"] = {"ce": {"split": "step"}}
    params["transfer_runs"], params["second_stages"] = {}, {}
    return params


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--experiments", type=int, default=4, choices=range(2, 5))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        copy_project(repo)
        init_repo(repo, shrunk_params(repo))
        sh("dvc", "repro", cwd=repo)
        sh("git", "add", "-A", cwd=repo)
        sh("git", "commit", "-qm", "baseline", cwd=repo)
        losses = ",".join(LOSSES[: args.experiments])
        times = {}
        for jobs in (1, 2):
            env = {**ENV, "LTCIFAR_WORKERS": str(jobs)}
            seed = f"+seeds=[{jobs}]"  # another seed per round: no run-cache hit from round 1
            sh(
                "dvc",
                "exp",
                "run",
                "--queue",
                "-S",
                f"loss={losses}",
                "-S",
                seed,
                cwd=repo,
                env=env,
            )
            t0 = time.monotonic()
            drain_queue(repo, jobs, env, timeout=1800)
            times[jobs] = time.monotonic() - t0
            print(f"-j {jobs}: {args.experiments} experiments in {times[jobs]:.1f} s", flush=True)
    cores = len(os.sched_getaffinity(0))
    print(f"RESULT j1_s={times[1]:.1f} j2_s={times[2]:.1f} speedup={times[1] / times[2]:.2f} "
          f"cores={cores}")  # fmt: skip


if __name__ == "__main__":
    main()
