#!/usr/bin/env bash
# Run the test suite several times in a row while a CPU burner competes for the cores, to shake out tests
# that only pass on an idle machine (fixed sleeps, tight deadlines, ordering assumptions).
#
#   scripts/stress-test.sh [--runs N] [--burners N] [--cmd "make test"]
#
# Defaults: 5 runs of `make test` beside 1 burner. Stops at the first failing run (its output is kept in
# the log file printed at the end). One summary line per run: pass/fail and duration. Exit 0 if every run
# passed, else the failing run's exit code. The burners are always killed (trap), even on Ctrl-C.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=5
burners=1
cmd="make test"
while (($#)); do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --burners) burners="$2"; shift 2 ;;
    --cmd) cmd="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$runs" =~ ^[0-9]+$ && "$runs" -ge 1 ]] || { echo "--runs must be a positive integer" >&2; exit 2; }
[[ "$burners" =~ ^[0-9]+$ ]] || { echo "--burners must be a non-negative integer" >&2; exit 2; }

logdir=$(mktemp -d "${TMPDIR:-/tmp}/hub-stress.XXXXXX")
burner_pids=()
run_pid=""

stop_burners() {
  for pid in "${burner_pids[@]}"; do
    kill "$pid" 2>/dev/null
  done
  for pid in "${burner_pids[@]}"; do
    wait "$pid" 2>/dev/null
  done
  burner_pids=()
}
interrupted() {
  # the run is its own process group (setsid): end it with everything it started (pytest, hub processes)
  [ -n "$run_pid" ] && kill -TERM -- "-$run_pid" 2>/dev/null
  stop_burners
  echo "interrupted" >&2
  exit 130
}
trap stop_burners EXIT
trap interrupted INT TERM

# A busy loop per burner: pure CPU, no I/O, nothing to clean up but the process itself.
for ((i = 0; i < burners; i++)); do
  python3 -c 'while True: pass' &
  burner_pids+=($!)
done
echo "stress: ${runs} run(s) of '${cmd}' beside ${burners} CPU burner(s) (pids ${burner_pids[*]:-none}); logs in ${logdir}"

summary=()
status=0
for ((run = 1; run <= runs; run++)); do
  log="${logdir}/run-${run}.log"
  started=$(date +%s)
  # in the background, so that a signal to this script is handled at once (bash defers traps until a
  # foreground command ends)
  setsid bash -c "$cmd" >"$log" 2>&1 &
  run_pid=$!
  wait "$run_pid"
  code=$?
  run_pid=""
  took=$(($(date +%s) - started))
  if ((code == 0)); then
    line="run ${run}/${runs}: PASS in ${took} s"
  else
    line="run ${run}/${runs}: FAIL (exit ${code}) in ${took} s -- ${log}"
  fi
  summary+=("$line")
  echo "$line"
  if ((code != 0)); then
    status=$code
    tail -n 30 "$log"
    break
  fi
done

stop_burners
echo "---- summary"
printf '%s\n' "${summary[@]}"
exit "$status"
