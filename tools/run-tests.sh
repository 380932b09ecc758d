#!/usr/bin/env bash
# `make test`'s suites in order, each timed, and a per-suite table at the end (also on failure).
#   1. the lab's images (the pipeline's own image included) built alongside the unit tests: both need
#      only the Go binaries and the virtualenv, and this machine has two cores;
#   2. one lab brought up for tests/lab (the lab itself, pristine) and tests/pipeline (the product
#      deployed onto it), then tests/faults (faults injected into the deployed system);
#   3. the lab always torn down, even when a suite failed; then tests/lifecycle (its own up and down).
# A suite is skipped once an earlier one failed (the lab's suites build on each other); the exit
# status is the first failure's.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
LAB="$PY -m netviz_lab"
LOGS=.build/test-logs
mkdir -p "$LOGS"
rows=()
rc=0

# row NAME SECONDS STATUS LOG: one line of the table; the summary is pytest's last line, if any.
row() {
  local summary=""
  [ -f "$4" ] && summary=$(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed|error)' "$4" | tail -n1 | tr -d '=' | sed 's/^ *//')
  rows+=("$(printf '%-22s %6ss  %-7s %s' "$1" "$2" "$3" "$summary")")
}

# timed NAME CMD...: runs CMD (its output shown and kept in the log), records a row.
timed() {
  local name=$1; shift
  local log="$LOGS/$name.log" start=$SECONDS status=ok
  if [ "$rc" != 0 ]; then row "$name" 0 skipped ""; return; fi
  "$@" 2>&1 | tee "$log" || status=failed
  [ "$status" = ok ] || rc=1
  row "$name" $((SECONDS - start)) "$status" "$log"
}

table() {
  echo
  echo "make test: per-suite times (this machine; the suites' own figures are in their logs, $LOGS/)"
  printf '%-22s %7s  %-7s %s\n' suite time result tests
  printf '%s\n' "${rows[@]}"
  printf '%-22s %6ss\n' total "$SECONDS"
}
trap table EXIT

start=$SECONDS
$LAB images > "$LOGS/images.log" 2>&1 &
images_pid=$!
timed unit "$PY" -m pytest -q tests/unit
images_rc=0
wait "$images_pid" || images_rc=$?
[ "$images_rc" = 0 ] && row "images (alongside)" $((SECONDS - start)) ok "" || { row "images (alongside)" $((SECONDS - start)) failed ""; cat "$LOGS/images.log"; rc=1; }

timed lab-up $LAB up
timed lab-and-pipeline "$PY" -m pytest -q --durations=25 -m lab tests/lab tests/pipeline
timed faults "$PY" -m pytest -q --durations=15 -m faults tests/faults
saved=$rc rc=0  # down runs whatever happened: nothing may be left running
timed lab-down $LAB down
rc=$((saved || rc))
timed lifecycle "$PY" -m pytest -q tests/lifecycle
exit "$rc"
