#!/usr/bin/env bash
# The real-CIFAR-10 study's CIFAR-10-LT runs on one GPU in one call of under 10 minutes, through
# the pipeline's own stage modules run by hand (no DVC or DVCLive needed): configs, download,
# prepare, lt_index, the first stages trained at once in parallel processes (small nets leave a
# large card idle), the second stages, evaluate; then one table with the card's name.
# Usage (repo root): bash benchmarks/gpu_study.sh
#   DATA     the JPEG copy of CIFAR-10, .tar.gz (default benchmarks/data/cifar10-jpeg.tar.gz, else
#            ../shared/data/cifar10-jpeg.tar.gz); to take it to a remote machine:
#            mkdir -p benchmarks/data && cp ../shared/data/cifar10-jpeg.tar.gz benchmarks/data/
#            (benchmarks/data/ is git-ignored through .git/info/exclude: carry it)
#   PARAMS   the study's params file (default studies/cifar10_lt.params.yaml)
#   PROFILE  its profile (default gpu: LDAM-DRW's 200 epochs, one seed)
#   RUNS     first stages (default the CIFAR-10-LT CE, Balanced Softmax and LDAM-DRW runs;
#            RUNS=exp_balpoe SECOND= trains the product of experts alone)
#   SECOND   second stages on them (default cRT, LWS, tau-norm and post-hoc LA on CE)
#   EPOCHS   train this many epochs instead of the profile's, its lr milestones scaled alike
#            (for a recipe whose full schedule does not fit one call)
#   DEVICE   cuda (default) or cpu; BUDGET: seconds for the whole call (default 540)
# Output: the table on stdout, and in $OUT (or /tmp/gpu_study): gpu_study.log, each stage's log,
# the metrics and REPORT.md. A run that fails or is cut off by BUDGET is listed as not finished,
# and after the table the call exits 1 with a line naming every stage that did not finish.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-python3}
PARAMS=${PARAMS:-studies/cifar10_lt.params.yaml}
PROFILE=${PROFILE:-gpu}
RUNS=${RUNS-exp_ce exp_balanced_softmax exp_ldam_drw}
SECOND=${SECOND-exp_ce_crt exp_ce_lws exp_ce_tau_norm exp_ce_posthoc_la}
EPOCHS=${EPOCHS:-}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-540}
DATA=${DATA:-benchmarks/data/cifar10-jpeg.tar.gz}
[[ -f $DATA ]] || DATA=../shared/data/cifar10-jpeg.tar.gz
OUT=${OUT:-/tmp/gpu_study}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_study.log") 2>&1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
[[ $DEVICE == cpu ]] && export CUDA_VISIBLE_DEVICES=

# stage NAME COMMAND...: run it with what is left of BUDGET, its output in $OUT/NAME.log
stage() {
    local name=$1 left=$((BUDGET - SECONDS)) rc=0 t0=$SECONDS
    shift
    if ((left < 5)); then
        echo "## $name: skipped, no time left"
        return 1
    fi
    timeout -k 5 "$left" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
    echo "## $name: rc=$rc, $((SECONDS - t0)) s"
    ((rc == 0)) || tail -n 3 "$OUT/$name.log"
    return "$rc"
}

echo "## $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi")"
$PY -c 'import torch; print("## torch", torch.__version__, "cuda", torch.cuda.is_available())'
mkdir -p "$WORK/repo" "$WORK/cifar10-jpeg"
cp -r ltcifar stages "$WORK/repo/"
$PY benchmarks/study_params.py "$PARAMS" "$PROFILE" "$EPOCHS" >"$WORK/repo/params.yaml"
tar -xzf "$DATA" -C "$WORK/cifar10-jpeg"
cd "$WORK/repo"
for s in configs download prepare lt_index; do
    stage "$s" "$PY" -m "stages.$s"
done
failed=()  # every stage that did not finish: named after the table, and the exit status 1
declare -A pids
for run in $RUNS; do  # at once: each process launches its own kernels
    stage "train_$run" "$PY" -m stages.train "$run" &
    pids[$run]=$!
done
for run in "${!pids[@]}"; do  # one wait each (a bare wait would wait for the log's tee too)
    wait "${pids[$run]}" || failed+=("train_$run")
done
for name in $SECOND; do
    stage "second_$name" "$PY" -m stages.second_stage "$name" || failed+=("second_$name")
done
for name in $RUNS $SECOND; do
    if [[ -d models/$name ]]; then
        stage "evaluate_$name" "$PY" -m stages.evaluate "$name" || failed+=("evaluate_$name")
    fi
done
cp -r metrics "$OUT/" 2>/dev/null || true
if stage report "$PY" -m stages.report; then cp reports/REPORT.md "$OUT/"; else failed+=(report); fi
cd "$ROOT"
# shellcheck disable=SC2086  # RUNS and SECOND are lists of names
$PY benchmarks/study_table.py "$WORK/repo" $RUNS $SECOND
echo "## $SECONDS s in all"
if ((${#failed[@]})); then
    echo "## FAILED: ${failed[*]} (each stage's log: $OUT/<stage>.log)"
    exit 1
fi
