#!/usr/bin/env bash
# One GPU sitting of the gpu-session preset of experiments/synthetic.py: every config trains
# in its own process on the one GPU (the models are small: one alone leaves the GPU mostly
# idle), stops with a checkpoint at the deadline, and resumes in the next sitting. A config
# whose training has finished is evaluated in the time left; with "final", Selective Copying
# is evaluated at whatever step it reached. Finally the per-config results are merged.
#
#   bash experiments/run_synthetic_session.sh RUNS_DIR TRAIN_SECONDS TOTAL_SECONDS [final]
#
# RUNS_DIR holds the workdirs and per-config results between sittings; the merged JSON and
# figures go to RUNS_DIR/merged. Logs: RUNS_DIR/logs/<config>.log (appended per sitting).
# With ARCHIVE=path.tgz, RUNS_DIR is packed there at the end without the best-checkpoint
# copies (resuming needs only the latest): what to bring to the next sitting's machine.
# Environment: CONFIGS (default: the five configs), EVAL_PARTS, TAG (default h100).
set -u
runs=$1 train_seconds=$2 total_seconds=$3 final=${4:-}
configs=${CONFIGS:-selective_copying_mamba selective_copying_s6 selective_copying_s4 induction_heads_mamba induction_heads_serpent_mamba}
# Induction Heads is evaluated at 15 lengths, each compiled anew (~20 s, most of the time):
# EVAL_PARTS processes share the lengths.
eval_parts=${EVAL_PARTS:-3}
mkdir -p "$runs/logs" "$runs/results"
start=$(date +%s)
# Five processes share the GPU's memory: allocate on demand instead of 75% each up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1

left() { echo $(( total_seconds - ($(date +%s) - start) )); }

evaluate() {  # evaluate CONFIG RESULT_DIR [--test-lengths L1,L2,...]
  local config=$1 dir=$2; shift 2
  timeout -s KILL "$(( $(left) - 20 ))" python3 experiments/synthetic.py "$config" \
      --preset gpu-session --evaluate-only --workdir "$runs/workdirs" --no-progress \
      --results-dir "$dir" --tag "${TAG:-h100}" "$@" >> "$runs/logs/$(basename "$dir").log" 2>&1 \
    || { echo "$config: evaluation did not finish in this sitting" >> "$runs/logs/$config.log"
         rm -f "$dir/synthetic_${TAG:-h100}.json"; }
}

one_config() {
  local config=$1 log="$runs/logs/$1.log" rc=0
  if ls "$runs/results/$config"*/synthetic_*.json >/dev/null 2>&1; then
    echo "$config: already evaluated" >> "$log"; return
  fi
  echo "== sitting at $(date -u +%FT%TZ)" >> "$log"
  timeout -s TERM "$train_seconds" python3 experiments/synthetic.py "$config" \
      --preset gpu-session --train-only --workdir "$runs/workdirs" --no-progress >> "$log" 2>&1
  rc=$?
  if [[ $config == induction_heads_* ]] && [ $rc -eq 0 ]; then
    for part in $(seq 0 $(( eval_parts - 1 ))); do
      lengths=$(python3 -c "print(','.join(str(2 ** k) for k in range(6 + $part, 21, $eval_parts)))")
      evaluate "$config" "$runs/results/$config-part$part" --test-lengths "$lengths" &
    done
    wait
  elif [ $rc -eq 0 ] || [ "$final" = final ]; then
    evaluate "$config" "$runs/results/$config"
  fi
}

for config in $configs; do one_config "$config" & done
wait
for config in $configs; do echo "--- $config"; tail -n 25 "$runs/logs/$config.log"; done
ls "$runs"/results/*/synthetic_*.json >/dev/null 2>&1 && \
  python3 experiments/synthetic.py --merge "$runs"/results/*/synthetic_*.json \
      --results-dir "$runs/merged" --tag "${TAG:-h100}"
if [ -n "${ARCHIVE:-}" ]; then
  tar czf "$ARCHIVE" --exclude=best -C "$(dirname "$runs")" "$(basename "$runs")"
  echo "$ARCHIVE: $(du -h "$ARCHIVE" | cut -f1)"
fi
echo "sitting: $(( $(date +%s) - start )) s"
