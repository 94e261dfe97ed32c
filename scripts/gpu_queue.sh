#!/usr/bin/env bash
# The ablation queue (cfdan.training.sweep) on one GPU: N worker processes share it, each claiming the
# next pending run, until the queue is empty or the time budget runs out.
#
#   scripts/gpu_queue.sh [EXPERIMENT ...]      default: table3 table5 (the GPU issue's order)
#
# A run not finished at the budget leaves no record (its worker gets SIGTERM). Every finished
# record lands in results/<experiment>/ as on the CPU, with the same run id (train.device and
# data.root are not part of it); the sweep refuses an experiment whose records, or those of the
# experiments it pairs_with (the ablations pair with cpu_v2, the full model), were made on the
# other kind of hardware, so a table is all GPU or all CPU. Once cpu_v2 has CPU records, the
# ablations are CPU tables and this script finds nothing to do for them: the GPU then goes to
# the paper profile (scripts/gpu_paper_run.sh), as the GPU issue orders. With $OUT set, the new records and the
# logs come back as $OUT/records.tgz (paths relative to results/, split into 15 MB parts if
# larger) and $OUT/logs.tgz, beside $OUT/summary.txt (per run: wall time, img/s, peak GPU
# memory, the numbers that size CFDAN_GPU_WORKERS) and $OUT/dmon.txt (nvidia-smi dmon).
# Extract with: cat records.tgz* | tar xzf - -C results
#
# Environment (all optional):
#   CFDAN_GPU_DATA      FERPlus pack (default packed/ferplus.npz; `python -m cfdan data pack`)
#   CFDAN_GPU_DEVICE    train.device (default cuda; the tests use cpu)
#   CFDAN_GPU_BUDGET_S  wall seconds for the whole script (default 540)
#   CFDAN_GPU_WORKERS   worker processes (default: min(pending runs, 8 with MPS, 4 without))
#   CFDAN_GPU_THREADS   torch threads per worker (default: cores / workers, at least 1)
#   CFDAN_GPU_MPS       1 (default): start NVIDIA MPS when present, so the workers' small
#                       kernels run side by side; falls back to plain sharing if the preflight
#                       fails under it
#   CFDAN_GPU_SET       extra overrides, space separated (the tests shorten the schedule)
#   CFDAN_GPU_ONLY      run ids, space separated: run only these (scripts/gpu_evidence.sh's plan)
#   CFDAN_GPU_RESERVE_S seconds kept for the summary and packing (default 25)
#   CFDAN_GPU_LOGS      folder for the logs (default logs/gpu_queue_<UTC time>)
#   CFDAN_GPU_MIN_S     the fewest seconds worth starting the sweep for (default 30)
#   CFDAN_GPU_PREFLIGHT 1 (default): one smoke epoch on the device first, into a throw-away store
#   PYTHON              interpreter (default python3)
#   OUT                 folder that receives the records, logs and summary
#
# Default workers. The cpu-profile model is small (48 px, well under 2 GB of GPU memory per
# worker at batch 64), so memory never binds on an H200. A training step is ~2,900 small
# operators (counted with torch.profiler on CPU), so each worker is bound by Python and kernel
# launches, not arithmetic. With MPS the workers' kernels run side by side: 8 workers (2 of the
# 16 cores each). Without it they take turns on the GPU and more workers only share it: 4. The
# queue is seed-major (every variant of seed 0 first), a worker starts no run it cannot finish
# (judged by its last run), and the summary reports per-run img/s to re-derive the default.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

DATA="${CFDAN_GPU_DATA:-packed/ferplus.npz}"
DEVICE="${CFDAN_GPU_DEVICE:-cuda}"
BUDGET="${CFDAN_GPU_BUDGET_S:-540}"
PY="${PYTHON:-python3}"
RESERVE="${CFDAN_GPU_RESERVE_S:-25}"   # seconds kept for packing the records and the summary
RESULTS="${CFDAN_RESULTS_DIR:-results}"
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
EXPS=("$@")
if (( ${#EXPS[@]} == 0 )); then EXPS=(table3 table5); fi

sets=(--set "data.root=${DATA}" --set "train.device=${DEVICE}")
for s in ${CFDAN_GPU_SET:-}; do sets+=(--set "$s"); done
LOGS="${CFDAN_GPU_LOGS:-logs/gpu_queue_$(date -u +%Y%m%dT%H%M%S)}"
ONLY=(${CFDAN_GPU_ONLY:-})
only_args=()
if (( ${#ONLY[@]} )); then only_args=(--only "${ONLY[@]}"); fi
mkdir -p "$LOGS"

echo "== gpu_queue: ${EXPS[*]} on ${DEVICE}, data ${DATA}, budget ${BUDGET} s"
if [[ "$DEVICE" == cuda* ]] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  nvidia-smi dmon -s um -d 10 > "$LOGS/dmon.txt" 2>&1 &
  DMON=$!
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

set_args=()
for ((i = 1; i < ${#sets[@]}; i += 2)); do set_args+=("${sets[i]}"); done
pending=$("$PY" - "${EXPS[@]}" <<EOF
import sys
from cfdan.training import sweep
over = """${set_args[*]}""".split()
only = set("""${ONLY[*]}""".split())
names = sweep.same_hardware(sys.argv[1:], over, None)  # says which it skips and why
print(sum(r.state != "done" and (not only or r.run_id in only)
          for r in sweep.runs(names, overrides=over)))
EOF
) || { echo "error: could not read the queue" >&2; exit 2; }
echo "== ${pending} runs not done"
if (( pending == 0 )); then echo "== nothing to do"; exit 0; fi


preflight() {
  local pre rc
  pre=$(mktemp -d)
  CFDAN_RESULTS_DIR="$pre/results" CFDAN_CHECKPOINT_DIR="$pre/checkpoints" \
    timeout 150 "$PY" -m cfdan train --profile smoke --quiet --set train.epochs=2 \
    --set "train.device=${DEVICE}" --set train.paired_init=true --set eval.tta_flip=true \
    --set eval.feature_snapshots=4 --set eval.snapshot_samples=64 > "$pre/preflight.log" 2>&1
  rc=$?
  tail -n 2 "$pre/preflight.log"
  rm -rf "$pre"
  return $rc
}

MPS_ON=0
if [[ "$DEVICE" == cuda* && "${CFDAN_GPU_MPS:-1}" == "1" ]] && command -v nvidia-cuda-mps-control >/dev/null; then
  mps=$(mktemp -d)
  export CUDA_MPS_PIPE_DIRECTORY="$mps/pipe" CUDA_MPS_LOG_DIRECTORY="$mps/log"
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if nvidia-cuda-mps-control -d; then MPS_ON=1; echo "== MPS started"; fi
fi
stop_mps() {
  if (( MPS_ON )); then echo quit | nvidia-cuda-mps-control || true; MPS_ON=0; sleep 1; fi
}
if [[ "${CFDAN_GPU_PREFLIGHT:-1}" == "1" ]]; then
  if ! preflight; then
    if (( MPS_ON )); then
      echo "== preflight failed under MPS; retrying without it"
      stop_mps
      unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
      if ! preflight; then
        echo "error: preflight failed on ${DEVICE}" >&2; exit 3
      fi
    else
      echo "error: preflight failed on ${DEVICE}" >&2; exit 3
    fi
  fi
  echo "== preflight ok after $(elapsed) s (MPS ${MPS_ON})"
fi

cores=$(nproc)
cap=$(( MPS_ON ? 8 : 4 ))   # without MPS the workers' kernels take turns: fewer pay better
WORKERS="${CFDAN_GPU_WORKERS:-$(( pending < cap ? pending : cap ))}"
THREADS="${CFDAN_GPU_THREADS:-$(( cores / WORKERS > 0 ? cores / WORKERS : 1 ))}"
echo "== ${WORKERS} workers x ${THREADS} threads on ${cores} cores (MPS ${MPS_ON})"

left=$(( BUDGET - RESERVE - $(elapsed) ))
if (( left < ${CFDAN_GPU_MIN_S:-30} )); then
  echo "error: budget ${BUDGET} s leaves no time to train" >&2; exit 2
fi
before=$(mktemp)
mkdir -p "$RESULTS"
(cd "$RESULTS" && find . -name '*.json' | sort) > "$before"
echo "== sweep: ${left} s"
"$PY" -m cfdan sweep run "${EXPS[@]}" "${sets[@]}" "${only_args[@]}" --workers "$WORKERS" \
  --threads "$THREADS" --quiet --budget-s "$left" --log-dir "$LOGS" > "$LOGS/sweep.log" 2>&1
echo "== sweep exit $? after $(elapsed) s"
tail -n 3 "$LOGS"/worker_*.log 2>/dev/null | cut -c1-200
stop_mps
if [[ -n "${DMON:-}" ]]; then kill "$DMON" 2>/dev/null || true; fi

new=$( (cd "$RESULTS" && find . -name '*.json' | sort) | comm -13 "$before" - | sed 's|^\./||')
echo "== $(echo "$new" | grep -c . ) new records"
"$PY" - "$RESULTS" $new > "$LOGS/summary.txt" <<'EOF'
import json
import sys
from pathlib import Path

print(f"{'record':<32} {'variant':<12} {'seed':>4} {'epochs':>6} {'wall_s':>7} {'img/s':>7} "
      f"{'gpu_GB':>7} {'val':>6} {'device':<14}")
for p in sys.argv[2:]:
    r = json.load(open(Path(sys.argv[1]) / p))
    h = r.get("history") or []
    ips = [e["images_per_s"] for e in h if e.get("images_per_s")]
    mem = (r.get("peak_memory") or {}).get("gpu_max_reserved_mb") or 0
    dev = (r.get("hardware") or {}).get("gpu") or (r.get("hardware") or {}).get("device")
    print(f"{p:<32} {r.get('variant', ''):<12} {r.get('seed', 0):>4} {r.get('epochs_run', 0):>6} "
          f"{r.get('wall_time_s', 0):>7.0f} {sum(ips) / max(len(ips), 1):>7.0f} "
          f"{mem / 1024:>7.2f} {r['val']['accuracy']:>6.4f} {dev:<14}")
EOF
cat "$LOGS/summary.txt"
"$PY" -m cfdan sweep status "${EXPS[@]}" "${sets[@]}" 2>&1 | tee -a "$LOGS/summary.txt"

if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT"
  cp "$LOGS/summary.txt" "$OUT/summary.txt"
  [[ -f "$LOGS/dmon.txt" ]] && cp "$LOGS/dmon.txt" "$OUT/dmon.txt"
  files=($new $(for f in $new; do echo "${f%.json}.npz"; done))
  existing=()
  for f in "${files[@]}"; do [[ -f "$RESULTS/$f" ]] && existing+=("$f"); done
  tar czf "$OUT/logs.tgz" "$LOGS"
  tar czf "$OUT/records.tgz" -C "$RESULTS" --files-from=/dev/null "${existing[@]}"
  size=$(stat -c %s "$OUT/records.tgz")
  if (( size > 15000000 )); then
    split -b 15000000 -d "$OUT/records.tgz" "$OUT/records.tgz.part"
    rm "$OUT/records.tgz"
  fi
  ls -la "$OUT"
fi
echo "== done in $(elapsed) s"
