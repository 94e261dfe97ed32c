#!/usr/bin/env bash
# Train the paper profile (§4.2: 224 px, full CF-DAN, batch 32, AdamW, 40 epochs, bf16) on one
# GPU within a wall-time budget, from the source tree, reading FERPlus from a packed file.
#
#   scripts/gpu_paper_run.sh [PACKED]        PACKED defaults to packed/ferplus.npz
#                                            (made by `python -m cfdan data pack`)
#
# The whole split is moved to the GPU once and augmented there; every epoch records its time,
# images/s and the run's peak GPU memory. If the budget runs out, training stops after the
# last epoch that fits, then model selection on val and the single test evaluation still run,
# and the record says cut_short = true. Records go to results/<experiment>/ and, when $OUT is
# set, are copied into $OUT/<experiment>/ (the store's layout: copy that folder into results/)
# beside the training logs $OUT/train_*.log. If enough time remains, a second run
# trains the Table 3 baseline (model.preset = baseline) with the same recipe.
#
# Environment (all optional):
#   CFDAN_GPU_PROFILE   profile (default paper; the tests use smoke)
#   CFDAN_GPU_DEVICE    train.device (default cuda; the tests use cpu)
#   CFDAN_GPU_BUDGET_S  wall seconds for the whole script (default 600)
#   CFDAN_GPU_SECOND    preset of the optional second run, or "none" (default baseline)
#   CFDAN_GPU_SECOND_MIN_S  start the second run only with this many seconds left (default 180)
#   CFDAN_GPU_FIT       1 (default): train.fit_to_budget=true, i.e. after epoch 1 the cosine
#                       schedule is re-planned to the epochs that fit the budget (recorded as
#                       cut_short, stop_reason time_budget_fitted); 0 keeps the profile's epochs
#                       and stops when the budget runs out
#   CFDAN_GPU_FIT_AFTER epoch whose cost plans the refit (default 1; 2 with train.compile, whose
#                       first epoch also pays for compilation)
#   CFDAN_GPU_EAGER_FALLBACK  1 (default): if the first run fails with train.compile on, train
#                       again without it (refitted to the time left) so the call still yields
#                       a record; 0 disables
#   CFDAN_GPU_SET       extra overrides, space separated (e.g. "train.compile=true train.epochs=20")
#   CFDAN_GPU_PREFLIGHT 1 (default): first train the smoke profile for one epoch on the same device
#                       into a throw-away store, so a device-specific bug fails in seconds rather
#                       than after the whole budget; 0 skips it
#   PYTHON              interpreter (default python3)
#   OUT                 folder that receives copies of the records and logs
#
# The full-speed call of the GPU issue (40 epochs, seed 0; if 40 do not fit, the cosine schedule
# is refitted after epoch 2, once compilation is paid, and the record says so), with CUDA
# graphs through torch.compile (train.compile_model) on top of the profile's bf16,
# channels_last, GPU-resident uint8 data with GPU augmentation and eval batch 512, as recorded
# (without the preflight; drop CFDAN_GPU_PREFLIGHT=0 to run it first, from the same budget):
#   CFDAN_GPU_PREFLIGHT=0 CFDAN_GPU_FIT_AFTER=2 CFDAN_GPU_SECOND=none CFDAN_GPU_BUDGET_S=575 \
#   CFDAN_GPU_SET="train.compile=true train.compile_mode=reduce-overhead" \
#   bash scripts/gpu_paper_run.sh packed/ferplus.npz
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

PACKED="${1:-packed/ferplus.npz}"
PROFILE="${CFDAN_GPU_PROFILE:-paper}"
DEVICE="${CFDAN_GPU_DEVICE:-cuda}"
BUDGET="${CFDAN_GPU_BUDGET_S:-600}"
SECOND="${CFDAN_GPU_SECOND:-baseline}"
SECOND_MIN="${CFDAN_GPU_SECOND_MIN_S:-180}"
PY="${PYTHON:-python3}"
START=$(date +%s)
RESERVE=20   # seconds kept for interpreter start-up and copying

elapsed() { echo $(( $(date +%s) - START )); }

sets=(--set "data.root=${PACKED}" --set "train.device=${DEVICE}")
if [[ "${CFDAN_GPU_FIT:-1}" == "1" ]]; then
  sets+=(--set "train.fit_to_budget=true" --set "train.fit_after_epoch=${CFDAN_GPU_FIT_AFTER:-1}")
fi
for s in ${CFDAN_GPU_SET:-}; do sets+=(--set "$s"); done
copy=()
if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT"
  copy=(--copy-to "$OUT")
fi

echo "== gpu_paper_run: profile ${PROFILE}, device ${DEVICE}, data ${PACKED}, budget ${BUDGET} s"
if [[ "$DEVICE" == cuda* ]] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

run() {  # run NAME BUDGET_S [extra args...]
  local name="$1" budget="$2"; shift 2
  local log="${OUT:-/tmp}/train_${name}.log"
  echo "== run ${name}: time budget ${budget} s (log ${log})"
  set +e
  "$PY" -m cfdan train --profile "$PROFILE" "${sets[@]}" \
    --set "train.time_budget_s=${budget}" "${copy[@]}" "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  set -e
  echo "== run ${name}: exit ${rc} after $(elapsed) s"
  return "$rc"
}

if [[ "${CFDAN_GPU_PREFLIGHT:-1}" == "1" && "$PROFILE" != "smoke" ]]; then
  echo "== preflight: smoke profile, 1 epoch, on ${DEVICE}"
  pre=$(mktemp -d)
  if ! CFDAN_RESULTS_DIR="$pre/results" CFDAN_CHECKPOINT_DIR="$pre/checkpoints" \
      "$PY" -m cfdan train --profile smoke --quiet --set train.epochs=1 \
      --set "train.device=${DEVICE}" --set train.amp=true --set train.channels_last=true \
      > "$pre/preflight.log" 2>&1; then
    cat "$pre/preflight.log"
    echo "error: preflight failed on ${DEVICE}; not starting the ${PROFILE} run" >&2
    exit 3
  fi
  tail -n 1 "$pre/preflight.log"
  rm -rf "$pre"
  echo "== preflight ok after $(elapsed) s"
fi

first_budget=$(( BUDGET - RESERVE - $(elapsed) ))
if (( first_budget < 30 )); then
  echo "error: budget ${BUDGET} s leaves no time to train" >&2
  exit 2
fi
if ! run "$PROFILE" "$first_budget"; then
  left=$(( BUDGET - RESERVE - $(elapsed) ))
  if [[ "${CFDAN_GPU_EAGER_FALLBACK:-1}" == "1" && "${CFDAN_GPU_SET:-}" == *train.compile=true* ]] \
      && (( left >= 60 )); then
    echo "== compiled run failed: training again without compile (${left} s left)"
    run "${PROFILE}_eager" "$left" --set train.compile=false --set train.compile_mode= \
      --set train.fit_to_budget=true
  else
    exit 1
  fi
fi

left=$(( BUDGET - RESERVE - $(elapsed) ))
if [[ "$SECOND" != "none" ]] && (( left >= SECOND_MIN )); then
  run "${PROFILE}_${SECOND}" "$left" --set "model.preset=${SECOND}" --variant "$SECOND" || \
    echo "second run failed (the first run's record is complete)" >&2
else
  echo "== no second run (${left} s left, need ${SECOND_MIN} s, second=${SECOND})"
fi
echo "== done in $(elapsed) s"
