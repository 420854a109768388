#!/usr/bin/env bash
# Run the test suite in the project's virtual environment (created if missing).
# Arguments are passed to pytest, e.g. scripts/test.sh -k download
#   scripts/test.sh                 everything: what CI runs
#   scripts/test.sh -m "not slow"   the fast tier, without the tests marked slow (training runs,
#                                   commands run as subprocesses, a local Ray): for while you work
# Two processes run the tests, a whole test file each (its module fixtures made once): what CI's
# two cores take in about 8 minutes instead of 13. `scripts/test.sh -n 0` runs them in one.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" dev
cd "$ROOT"
exec "$VENV/bin/python" -m pytest -n 2 --dist loadfile "$@"
