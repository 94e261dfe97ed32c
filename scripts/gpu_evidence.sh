#!/usr/bin/env bash
# One GPU call that spends its budget in priority order and returns every finished record
# (issue 28). Built on scripts/gpu_queue.sh (one call of it per phase) and cfdan.training.sweep.
#
#   scripts/gpu_evidence.sh                  gpu_table3, then paper_table3, on cuda
#   CFDAN_GPU_DRY_RUN=1 scripts/gpu_evidence.sh    the same on CPU with the smoke stand-ins
#
# 1. Probe (CFDAN_GPU_PROBE_S, default 60 s; python -m cfdan.training.gpu_plan probe): the
#    aggregate training img/s of 1, 2, 4 and 8 worker processes sharing the device (under MPS
#    where present) for each experiment's model; it picks a worker count for each and is
#    written to $OUT/probe.json. It is also the preflight of MPS: if it fails under MPS, MPS
#    is stopped and the probe runs again without it.
# 2. Phases (python -m cfdan.training.gpu_plan next, one at a time, each logged to
#    $OUT/plan.jsonl and run by scripts/gpu_queue.sh with the planned run ids, workers and time):
#    round 0: the first experiment (gpu_table3: Table 3 with the cpu-v2 recipe on CUDA, 5 rows
#    x seeds 0-9, seed-major) within CFDAN_GPU_SHARES of the budget (0.4): all 50 runs if the
#    probe says they fit, else as many whole seeds as fit; round 1: the second (paper_table3:
#    the paper-scale headline pair, baseline seeds 0-2 and full seeds 1-2; full seed 0 is
#    results/paper/4f6483f7c4a2, the same run id) in the time left; then rounds that fill
#    what is left with whole seeds of either. A share is lifted when the next experiment could
#    not start a seed in what it leaves. No run is planned that the estimate does not finish
#    (see cfdan/training/gpu_plan.py); a run still going at its phase's end gets SIGTERM and
#    leaves no record, and paper-scale runs refit their schedule to the phase's time if needed.
# 3. Every record made by the call gets a provenance_note naming it (GPU, torch, the commit of
#    the tree copy; cfdan.results.add_note), then comes back in $OUT/records.tgz (paths
#    relative to results/, split into 15 MB parts if larger: cat records.tgz* | tar xzf - -C
#    results; a paper-scale CF-DAN's <run_id>.photo.npz, its Fig. 8 maps over the astronaut,
#    travels with its record) beside $OUT/summary.txt (per run: wall time, img/s, peak GPU memory; the probe
#    and the phases), $OUT/probe.json, $OUT/plan.jsonl and $OUT/logs.tgz.
#
# Environment (all optional):
#   CFDAN_GPU_BUDGET_S   wall seconds of the whole script (default 540; dry run 120)
#   CFDAN_GPU_EXPERIMENTS  experiments in priority order (default "gpu_table3 paper_table3")
#   CFDAN_GPU_SHARES     share of the budget per round, in order (default "0.4"; "" none; the
#                        experiments without one get the time left)
#   CFDAN_GPU_PROBE_S    seconds of the probe (default 60; dry run 15)
#   CFDAN_GPU_PROBE_COUNTS  worker counts the probe measures (default "1 2 4 8"; dry run "1 2")
#   CFDAN_GPU_COSTS      estimate settings, e.g. "margin=1.3 compile_s=120" (gpu_plan.Costs;
#                        the dry run's defaults suit smoke runs on a CPU)
#   CFDAN_GPU_DATA       FERPlus pack (default packed/ferplus.npz; `python -m cfdan data pack`)
#   CFDAN_GPU_DEVICE     train.device (default cuda; dry run cpu)
#   CFDAN_GPU_MPS        1 (default): start NVIDIA MPS when present
#   CFDAN_GPU_PREFLIGHT  1 (default; dry run 0): gpu_queue.sh's preflight in the first phase
#   CFDAN_GPU_SET        extra overrides for every run, space separated
#   CFDAN_GPU_CODE_COMMIT  the commit holding the tree this call runs, when the copy's .git
#                        does not name it (set as the records' code_commit); CFDAN_GIT_COMMIT
#                        and CFDAN_GIT_DIRTY (cfdan.training.provenance) set the records' git
#   CFDAN_GPU_PHOTO_EXPS  experiments whose new CF-DAN runs get their Fig. 8 maps over the
#                        astronaut stored beside the record (default "paper_table3"; issue 29)
#   CFDAN_GPU_DRY_RUN    1: CPU, the smoke stand-ins gpu_smoke_table3 and gpu_smoke_paper
#   CFDAN_GPU_LOGS       folder for the logs (default logs/gpu_evidence_<UTC time>)
#   PYTHON               interpreter (default python3)
#   OUT                  folder that receives what comes back (default $CFDAN_GPU_LOGS/out)
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

DRY="${CFDAN_GPU_DRY_RUN:-0}"
if [[ "$DRY" == "1" ]]; then
  # smoke runs take a second or two in a started worker; the CPU's interpreters start slowly
  d_exps="gpu_smoke_table3 gpu_smoke_paper" d_dev=cpu d_budget=120 d_probe=15 d_pre=0
  d_counts="1 2" d_costs="start_s=6 fixed_s=1.5 queue_s=25 reserve_s=12"
  d_photo="gpu_smoke_paper"
else
  d_exps="gpu_table3 paper_table3" d_dev=cuda d_budget=540 d_probe=60 d_pre=1
  d_counts="1 2 4 8" d_costs="" d_photo="paper_table3"
fi
read -r -a EXPS <<< "${CFDAN_GPU_EXPERIMENTS:-$d_exps}"
read -r -a PHOTO_EXPS <<< "${CFDAN_GPU_PHOTO_EXPS-$d_photo}"
read -r -a SHARES <<< "${CFDAN_GPU_SHARES-0.4}"
read -r -a COUNTS <<< "${CFDAN_GPU_PROBE_COUNTS:-$d_counts}"
DEVICE="${CFDAN_GPU_DEVICE:-$d_dev}"
BUDGET="${CFDAN_GPU_BUDGET_S:-$d_budget}"
PROBE_S="${CFDAN_GPU_PROBE_S:-$d_probe}"
PREFLIGHT="${CFDAN_GPU_PREFLIGHT:-$d_pre}"
DATA="${CFDAN_GPU_DATA:-packed/ferplus.npz}"
PY="${PYTHON:-python3}"
RESULTS="${CFDAN_RESULTS_DIR:-results}"
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
LOGS="${CFDAN_GPU_LOGS:-logs/gpu_evidence_$(date -u +%Y%m%dT%H%M%S)}"
OUT="${OUT:-$LOGS/out}"
mkdir -p "$LOGS" "$OUT" "$RESULTS"
PLAN="$OUT/plan.jsonl"
: > "$PLAN"

sets=(--set "data.root=${DATA}" --set "train.device=${DEVICE}")
for s in ${CFDAN_GPU_SET:-}; do sets+=(--set "$s"); done
costs=()
for c in ${CFDAN_GPU_COSTS-$d_costs}; do costs+=(--cost "$c"); done

echo "== gpu_evidence: ${EXPS[*]} on ${DEVICE}, budget ${BUDGET} s, probe ${PROBE_S} s"
if [[ "$DEVICE" == cuda* ]] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi

MPS_ON=0
if [[ "$DEVICE" == cuda* && "${CFDAN_GPU_MPS:-1}" == "1" ]] && command -v nvidia-cuda-mps-control >/dev/null; then
  mps=$(mktemp -d)
  export CUDA_MPS_PIPE_DIRECTORY="$mps/pipe" CUDA_MPS_LOG_DIRECTORY="$mps/log"
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if timeout 20 nvidia-cuda-mps-control -d; then MPS_ON=1; echo "== MPS started"; fi
fi
stop_mps() {
  if (( MPS_ON )); then echo quit | timeout 20 nvidia-cuda-mps-control || true; MPS_ON=0; sleep 1; fi
  unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
}

# before: the records already in the store (the call returns the new ones)
before="$LOGS/records_before.txt"
(cd "$RESULTS" && find . -name '*.json' | sort) > "$before"

probe() {
  "$PY" -m cfdan.training.gpu_plan probe "${EXPS[@]}" "${sets[@]}" --device "$DEVICE" \
    --seconds "$1" --counts "${COUNTS[@]}" --mps "$MPS_ON" --out "$OUT/probe.json" \
    2>&1 | tee "$LOGS/probe.log"
  return "${PIPESTATUS[0]}"
}
echo "== probe: ${PROBE_S} s, workers ${COUNTS[*]} (MPS ${MPS_ON})"
probe_failed() { cp "$LOGS/probe.log" "$OUT/" 2>/dev/null; echo "error: probe failed" >&2; exit 3; }
if ! probe "$PROBE_S"; then
  if (( MPS_ON )); then
    echo "== probe failed under MPS; without it"
    cp "$LOGS/probe.log" "$LOGS/probe_mps.log"
    stop_mps
    probe "$(( PROBE_S / 2 > 10 ? PROBE_S / 2 : 10 ))" || probe_failed
  else
    probe_failed
  fi
fi
echo "== probe done after $(elapsed) s"

# photo F: for a new record F (<experiment>/<run_id>.json) of a CF-DAN (variant full) in
# PHOTO_EXPS, its Fig. 8 maps over the astronaut photo beside it (<run_id>.photo.npz; made once,
# from its best.pt, which stays here); true when that file exists. Needs facenet-pytorch (MTCNN):
# on a machine without it, carry its wheel (see the device notes); a failure is logged and skipped
photo() {
  local f="$1" exp run ck npz
  exp="${f%%/*}" run="$(basename "$f" .json)" npz="$RESULTS/${f%.json}.photo.npz"
  [[ " ${PHOTO_EXPS[*]} " == *" ${exp} "* ]] || return 1
  [[ -f "$npz" ]] && return 0
  "$PY" -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))["variant"] != "full")' \
    "$RESULTS/$f" || return 1
  ck="${CFDAN_CHECKPOINT_DIR:-checkpoints}/${exp}/${run}/best.pt"
  [[ -f "$ck" ]] || { echo "photo: no ${ck}" >> "$LOGS/photo.log"; return 1; }
  "$PY" -m cfdan photo-maps "$ck" "$npz" >> "$LOGS/photo.log" 2>&1 \
    || { echo "warning: photo maps of ${f} failed (see photo.log)" >&2; return 1; }
}

# pack: note the new records, write summary.txt, records.tgz and logs.tgz into $OUT; run after
# every phase too, so that a call stopped from outside still returns what it finished
pack() {
  local new f paths=() files=() code=() tmp base
  new=$( (cd "$RESULTS" && find . -name '*.json' | sort) | comm -13 "$before" - | sed 's|^\./||')
  for f in $new; do
    paths+=("$RESULTS/$f") files+=("$f")
    [[ -f "$RESULTS/${f%.json}.npz" ]] && files+=("${f%.json}.npz")
    photo "$f" && files+=("${f%.json}.photo.npz")
  done
  if [[ -n "${CFDAN_GPU_CODE_COMMIT:-}" ]]; then code=(--code-commit "$CFDAN_GPU_CODE_COMMIT"); fi
  "$PY" -m cfdan.training.gpu_plan finish --probe "$OUT/probe.json" --log "$PLAN" "${code[@]}" \
    --budget-s "$BUDGET" --wall-s "$(elapsed)" --summary "$OUT/summary.txt" "${paths[@]}" \
    > "$LOGS/finish.log" 2>&1 || echo "warning: notes or summary failed (see finish.log)" >&2
  rm -f "$OUT"/records.tgz*
  tar czf "$OUT/records.tgz" -C "$RESULTS" --files-from=/dev/null "${files[@]}"
  if (( $(stat -c %s "$OUT/records.tgz") > 15000000 )); then
    split -b 15000000 -d "$OUT/records.tgz" "$OUT/records.tgz.part"
    rm "$OUT/records.tgz"
  fi
  tmp=$(mktemp) base=$(basename "$LOGS")
  tar czf "$tmp" -C "$(dirname "$LOGS")" --exclude="$base/out" \
    --exclude="$base/round_*/out/logs.tgz" "$base" && mv "$tmp" "$OUT/logs.tgz"
  echo "== packed ${#paths[@]} new records after $(elapsed) s"
}

round=0 first=1 packed=0
while (( round < ${#EXPS[@]} + 3 )); do
  flags=()
  if (( first )) && [[ "$PREFLIGHT" == "1" ]]; then flags+=(--preflight); fi
  plan=$("$PY" -m cfdan.training.gpu_plan next "${EXPS[@]}" "${sets[@]}" "${costs[@]}" \
    "${flags[@]}" --probe "$OUT/probe.json" --round "$round" --budget-s "$BUDGET" \
    --elapsed-s "$(elapsed)" --shares "${SHARES[@]}" --log "$PLAN") \
    || { echo "error: planning round ${round} failed" >&2; break; }
  PHASE_EXPERIMENT='' PHASE_RUNS='' PHASE_NOTE=''
  eval "$plan"
  if [[ -z "$PHASE_EXPERIMENT" ]]; then echo "== round ${round}: nothing else fits"; break; fi
  echo "== round ${round} ${PHASE_EXPERIMENT}: ${PHASE_NOTE}"
  if [[ -z "$PHASE_RUNS" ]]; then round=$(( round + 1 )); continue; fi
  packed=0
  echo "== round ${round}: ${PHASE_WORKERS} workers x ${PHASE_THREADS} threads, ${PHASE_SECONDS} s"
  phase="$LOGS/round_${round}"
  CFDAN_GPU_WORKERS="$PHASE_WORKERS" CFDAN_GPU_THREADS="$PHASE_THREADS" \
  CFDAN_GPU_ONLY="$PHASE_RUNS" CFDAN_GPU_BUDGET_S="$PHASE_SECONDS" \
  CFDAN_GPU_RESERVE_S=8 CFDAN_GPU_MIN_S=5 \
  CFDAN_GPU_PREFLIGHT="$(( first && PREFLIGHT == 1 ))" CFDAN_GPU_MPS=0 \
  CFDAN_GPU_DATA="$DATA" CFDAN_GPU_DEVICE="$DEVICE" \
  CFDAN_GPU_SET="${CFDAN_GPU_SET:-} ${PHASE_SETS}" CFDAN_GPU_LOGS="$phase" OUT="$phase/out" \
    bash scripts/gpu_queue.sh "$PHASE_EXPERIMENT" 2>&1 | tee "$LOGS/round_${round}.log"
  rc=${PIPESTATUS[0]}
  echo "== round ${round}: gpu_queue exit ${rc} after $(elapsed) s"
  rm -f "$phase"/out/records.tgz*   # the call packs every record once, below
  first=0
  pack
  packed=1
  if (( rc == 3 )); then   # the preflight failed: this round again without MPS, else stop
    if (( MPS_ON )); then echo "== preflight failed under MPS; again without it"; stop_mps; continue
    else echo "error: preflight failed on ${DEVICE}" >&2; break; fi
  fi
  round=$(( round + 1 ))
done
stop_mps

if (( ! packed )); then pack; fi  # every record, noted, with the summary and the logs
cat "$OUT/summary.txt"
ls -la "$OUT"
echo "== done in $(elapsed) s"
