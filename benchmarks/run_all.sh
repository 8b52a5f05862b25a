#!/usr/bin/env bash
# Run every side-by-side benchmark in sequence (never in parallel: timings would interfere).
# Extra arguments (e.g. --lepton PATH, --dvc PATH) are passed to each script.
# Exit status: the worst of the scripts' statuses (0 pass, 1 a target missed, 2 setup error).
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
status=0
for script in cli_startup metrics_diff; do
    echo "=== benchmarks/${script}.py $*"
    "$PY" "benchmarks/${script}.py" "$@"
    rc=$?
    echo "=== benchmarks/${script}.py exit ${rc}"
    echo
    if [ "$rc" -gt "$status" ]; then status=$rc; fi
done
exit "$status"
