#!/usr/bin/env bash
# One experiment as a batch job, for any scheduler (SLURM, SkyPilot, cron, a shell):
#   jobs/run_job.sh <git-url> <rev> [dvc exp run args: -S key=value ... -n name]
# Clones (or updates) the repo, pulls the data DVC already has, runs the experiment and pushes
# it (git refs + cached outputs) so `dvc exp pull origin` brings it back anywhere. Nothing but
# the git and DVC remotes is shared between jobs, so array tasks may land on any node.
# Env: LTCIFAR_JOB_DIR (the checkout; default $TMPDIR/ltcifar-job-<id>), PYTHON_ENV (a venv
# whose bin/ has python and dvc; default the checkout's .venv, built by `make setup`).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 <git-url> <rev> [dvc exp run args...]" >&2; exit 2; }
url=$1 rev=$2
shift 2
id=${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-$$}}_${SLURM_ARRAY_TASK_ID:-0}
dir=${LTCIFAR_JOB_DIR:-${TMPDIR:-/tmp}/ltcifar-job-$id}
if [ -d "$dir/.git" ]; then
  git -C "$dir" fetch -q origin
else
  git clone -q "$url" "$dir"
fi
cd "$dir"
git checkout -qf --detach "origin/$rev" 2>/dev/null || git checkout -qf --detach "$rev"
venv=${PYTHON_ENV:-$dir/.venv}
[ -x "$venv/bin/dvc" ] || make setup
export PATH="$venv/bin:$PATH"
dvc pull --allow-missing    # what the remote has; the rest `dvc exp run` rebuilds
dvc exp run "$@"
dvc exp push origin         # this checkout's experiments of <rev>, with their cached outputs
