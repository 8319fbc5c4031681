#!/usr/bin/env bash
# One GPU check in at most ~5 minutes (H100/H200, torch 2.11, no DVC needed):
#   GPU name and torch version; train_speed.py at batch 128 (with the reference loop on 10000
#   images) and 512; --estimate of params.yaml's profile full (every run with its resolved
#   config: transfer runs on the backbone's model and recipe) at the measured batch-128 rate;
#   a 10-epoch Fashion-MNIST run (benchmarks/fashion_run.py); then both batches again with
#   --compile.
#   Every command gets `timeout` capped by what is left of BUDGET seconds (default 285);
#   a step that fails or times out is reported in the summary, and the rest still run.
# Usage (repo root): bash benchmarks/gpu_check.sh   one combined log: $OUT/gpu_check.log
#   ($OUT or /tmp/gpu_check): a remote run returns one file, stdout and stderr of every step
# A dry run on a CPU: DEVICE=cpu IMAGES=1024 REF_IMAGES=512 EPOCHS=1 bash benchmarks/gpu_check.sh
# Fashion-MNIST is read from benchmarks/data/fashion-mnist, else /usr/share/datasets/fashion-mnist;
# to bring it along: mkdir -p benchmarks/data/fashion-mnist
#   && cp /usr/share/datasets/fashion-mnist/*.gz benchmarks/data/fashion-mnist/
#   && echo /benchmarks/data/ >> .git/info/exclude     (and carry benchmarks/data)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
BUDGET=${BUDGET:-285}
LOG=${OUT:-/tmp/gpu_check}
mkdir -p "$LOG"
COMBINED=$LOG/gpu_check.log
STEP_OUT=$(mktemp)
trap 'rm -f "$STEP_OUT"' EXIT
exec > >(tee -a "$COMBINED") 2>&1
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
DEVICE=${DEVICE:-cuda} IMAGES=${IMAGES:-50000} REF_IMAGES=${REF_IMAGES:-10000} EPOCHS=${EPOCHS:-10}
SUMMARY=()
B128_RATE=

# step NAME CAP_SECONDS COMMAND...: run with a timeout, keep its output, note its last tagged line
step() {
    local name=$1 cap=$2 left rc=0 t0=$SECONDS
    shift 2
    left=$((BUDGET - SECONDS))
    ((cap > left)) && cap=$left
    if ((cap < 15)); then
        echo "## $name: skipped, ${left}s left"
        SUMMARY+=("$name|skipped (no time left)|")
        return 0
    fi
    echo "## $name (timeout ${cap}s): $*"
    timeout -k 5 "$cap" "$@" >"$STEP_OUT" 2>&1 || rc=$?
    cat "$STEP_OUT"
    ((rc == 0)) || echo "## $name failed rc=$rc"
    local tag
    tag=$(grep -E '^(RESULT|ESTIMATE|FASHION) ' "$STEP_OUT" | tail -n 1 || true)
    if [[ $name == b128 ]]; then
        B128_RATE=$(grep -oE 'engine_img_s=[0-9]+' "$STEP_OUT" | cut -d= -f2 || true)
    fi
    SUMMARY+=("$name|${tag:-no result, rc=$rc}|$((SECONDS - t0))s")
}

echo "## $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true)"
$PY -c 'import torch, torchvision; print("## torch", torch.__version__, "torchvision",
  torchvision.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available())'

TS=(benchmarks/train_speed.py --device "$DEVICE" --images "$IMAGES")
step b128 75 $PY "${TS[@]}" --batch 128 --reference-images "$REF_IMAGES"
step b512 45 $PY "${TS[@]}" --batch 512 --skip-reference
rate=${B128_RATE:-}
if [[ -n $rate ]]; then
    step estimate 25 $PY benchmarks/train_speed.py --estimate --img-s "$rate" --batch 128 \
        --profile full
else
    SUMMARY+=("estimate|skipped: no batch-128 rate|")
fi
FASHION=benchmarks/data/fashion-mnist
[[ -d $FASHION ]] || FASHION=/usr/share/datasets/fashion-mnist
if [[ -d $FASHION ]]; then
    step fashion 60 $PY benchmarks/fashion_run.py "$FASHION" --epochs "$EPOCHS" --device "$DEVICE"
else
    SUMMARY+=("fashion|skipped: no Fashion-MNIST IDX files found|")
fi
step b128_compile 100 $PY "${TS[@]}" --batch 128 --skip-reference --compile
step b512_compile 100 $PY "${TS[@]}" --batch 512 --skip-reference --compile

echo
echo "## summary ($SECONDS s in all; the whole log: $COMBINED)"
printf '%-13s %-7s %s\n' step time result
for row in "${SUMMARY[@]}"; do
    IFS='|' read -r name tag took <<<"$row"
    printf '%-13s %-7s %s\n' "$name" "$took" "$tag"
done
