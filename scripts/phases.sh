#!/usr/bin/env bash
# Run make targets one after another as the phases of a run, and print each phase's duration at
# the end, whether the run passed or stopped at a failing phase.
#   scripts/phases.sh setup lint test-postgres ...
set -uo pipefail

declare -a done_phases=()
start_all=$(date +%s)

summary() {
  local total=$(( $(date +%s) - start_all ))
  echo
  echo "== phase durations =="
  for line in "${done_phases[@]}"; do echo "  $line"; done
  printf '  %-16s %5ss (%dm%02ds)\n' total "$total" $(( total / 60 )) $(( total % 60 ))
}
trap summary EXIT

for phase in "$@"; do
  t0=$(date +%s)
  echo "== $phase =="
  make --no-print-directory "$phase"
  rc=$?
  took=$(( $(date +%s) - t0 ))
  if [ "$rc" -ne 0 ]; then
    done_phases+=("$(printf '%-16s %5ss FAILED' "$phase" "$took")")
    exit "$rc"
  fi
  done_phases+=("$(printf '%-16s %5ss' "$phase" "$took")")
done
