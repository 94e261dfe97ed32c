#!/usr/bin/env bash
# The CPU training queue of this companion, in priority order, resumable: every finished run is
# in results/ and is skipped on a rerun; an interrupted run resumes from its last epoch.
#   nohup bash scripts/cpu_queue.sh > logs/cpu_queue.log 2>&1 &
# 1. the cpu profile (Table 1 row "ours: cpu profile"), seed 0
# 2. Table 3 on the short schedule (configs/experiments/table3.toml), seeds 0 and 1, the two
#    ends of the table first
# 3. more seeds of the cpu profile
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
t3() {  # t3 PRESET SEED
  "$PY" -m cfdan train --profile cpu --experiment table3 --variant "$1" --quiet \
    --set "model.preset=$1" --set train.epochs=4 --set "train.seed=$2"
}
"$PY" -m cfdan train --profile cpu --quiet --set train.seed=0
for s in 0 1; do t3 baseline "$s"; t3 full "$s"; done
for s in 0 1; do t3 dam "$s"; t3 dam_ilm "$s"; done
for s in 1 2; do "$PY" -m cfdan train --profile cpu --quiet --set "train.seed=$s"; done
