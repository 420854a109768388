#!/usr/bin/env bash
# Run the whole test suite in the project's virtual environment (created if missing).
# Arguments are passed to pytest, e.g. scripts/test.sh -k download
set -euo pipefail
source "$(dirname "$0")/_venv.sh" dev
cd "$ROOT"
exec "$VENV/bin/python" -m pytest "$@"
