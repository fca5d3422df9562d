#!/usr/bin/env bash
# One command: install, lint, type-check, and run the whole test suite against real processes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh requirements-dev.txt
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy app celeryconfig.py tests
start=$(date +%s)
.venv/bin/python -m pytest -p no:cacheprovider "$@"
echo "test suite wall time: $(( $(date +%s) - start ))s"
