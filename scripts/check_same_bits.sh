#!/usr/bin/env bash
# Prove that two commits compute the same bits (the readability refactor's contract).
#   bash scripts/check_same_bits.sh OLD_COMMIT [NEW_COMMIT]   (NEW defaults to the working tree)
# On each side (a `git worktree` for a commit; the working tree itself for the default) it
#   1. trains the smoke profile (synthetic data) at seed 0, and
#   2. trains the first 20 steps of the cpu profile (FERPlus, 640 train images = 20 batches of
#      32, 256 val/test images) at seed 0, when FERPlus is present,
# then compares the records' outcome fields (history without timings, val/test metrics, best
# epoch) and a SHA-256 of the final weights (last.pt). Exit 0 only when all are identical.
# Uses this checkout's .venv; every side reads the same FERPlus and writes to a temp folder.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OLD="${1:?usage: check_same_bits.sh OLD_COMMIT [NEW_COMMIT]}"
NEW="${2:-}"
PY="$(pwd)/.venv/bin/python"
WORK="$(mktemp -d)"
trap 'for w in "$WORK"/tree-*; do [ -d "$w" ] && git worktree remove --force "$w"; done; rm -rf "$WORK"' EXIT
export CFDAN_FERPLUS_ROOT="${CFDAN_FERPLUS_ROOT:-$(pwd)/../shared/data/ferplus}"
export CFDAN_CACHE_DIR="${CFDAN_CACHE_DIR:-$(pwd)/cache}"

side() {  # side NAME COMMIT|"" -> trains both profiles into $WORK/NAME
  local name="$1" commit="$2" src
  if [ -n "$commit" ]; then
    src="$WORK/tree-$name"
    git worktree add --quiet --detach "$src" "$commit"
  else
    src="$(pwd)"
  fi
  local out="$WORK/$name"
  mkdir -p "$out"
  (
    cd "$src"
    export CFDAN_RESULTS_DIR="$out/results" CFDAN_CHECKPOINT_DIR="$out/checkpoints"
    export CFDAN_GIT_COMMIT="${commit:-worktree}" PYTHONPATH="$src"
    "$PY" -m cfdan train --profile smoke --quiet --set train.seed=0 --set train.threads=2 \
      > "$out/smoke.log" 2>&1
    if [ -d "$CFDAN_FERPLUS_ROOT" ] || [ -f "$CFDAN_FERPLUS_ROOT" ]; then
      "$PY" -m cfdan train --profile cpu --quiet --set train.seed=0 --set train.epochs=1 \
        --set data.max_train=640 --set data.max_eval=256 --set train.threads=2 \
        --set eval.bootstrap=100 > "$out/cpu.log" 2>&1
    fi
  )
  echo "$name: ${commit:-working tree}"
}

side old "$OLD"
side new "$NEW"
"$PY" - "$WORK/old" "$WORK/new" <<'PYEOF'
import hashlib, json, sys
from pathlib import Path
import torch

TIMING = {"epoch_time_s", "images_per_s", "eval_time_s"}

def outcome(rec):
    hist = [{k: v for k, v in row.items() if k not in TIMING} for row in rec["history"]]
    test = {k: v for k, v in rec["test"].items()}
    return {"run_id": rec["run_id"], "history": hist, "val": rec["val"], "test": test,
            "best_epoch": rec["best_epoch"], "params": rec["model_info"]["params"]}

def weights_hash(ckdir):
    import numpy as np  # a last.pt from before safe loading holds NumPy RNG arrays
    legacy = [np.dtype, np.ndarray, np._core.multiarray._reconstruct, np.dtypes.UInt32DType,
              np.dtypes.Float16DType]
    with torch.serialization.safe_globals(legacy):
        ck = torch.load(next(Path(ckdir).rglob("last.pt")), map_location="cpu", weights_only=True)
    h = hashlib.sha256()
    for k in sorted(ck["model"]):
        h.update(k.encode())
        h.update(ck["model"][k].contiguous().numpy().tobytes())
    return h.hexdigest()

old, new = Path(sys.argv[1]), Path(sys.argv[2])
ok = True
def records(side, prof):  # a profile run's record lies under its experiment (cpu -> cpu_trials)
    out = [json.loads(p.read_text()) for p in sorted((side / "results").glob("*/*.json"))]
    return [r for r in out if r.get("profile") == prof and "run_id" in r]

for prof in ("smoke", "cpu"):
    recs = [records(side, prof) for side in (old, new)]
    if not recs[0] and not recs[1]:
        print(f"{prof:5s}: skipped (no data)")
        continue
    a, b = (r[0] for r in recs)
    wa, wb = (weights_hash(side / "checkpoints" / r["experiment"]) for side, r in ((old, a), (new, b)))
    same_m, same_w = outcome(a) == outcome(b), wa == wb
    ok &= same_m and same_w
    print(f"{prof:5s}: run_id {a['run_id']} / {b['run_id']}  metrics {'identical' if same_m else 'DIFFER'}"
          f"  weights sha256 {wa[:16]} / {wb[:16]} {'identical' if same_w else 'DIFFER'}"
          f"  (val acc {a['val']['accuracy']:.6f} / {b['val']['accuracy']:.6f})")
print("SAME BITS" if ok else "NOT THE SAME")
sys.exit(0 if ok else 1)
PYEOF
