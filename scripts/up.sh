#!/usr/bin/env bash
# One command: install, start embedded Redis/MongoDB when none answers, run every Procfile process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh requirements.txt
exec .venv/bin/python -m app up "$@"
