#!/usr/bin/env bash
# Creates .venv (if missing) and installs the pinned requirements into it. No root needed.
# Usage: scripts/bootstrap.sh [requirements file, default requirements.txt]
set -euo pipefail
cd "$(dirname "$0")/.."
REQS="${1:-requirements.txt}"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
STAMP=".venv/.installed-$(basename "$REQS")"
# Reinstall only when a requirements file changed since the last install.
if [ ! -f "$STAMP" ] || [ requirements.txt -nt "$STAMP" ] || [ "$REQS" -nt "$STAMP" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r "$REQS"
  touch "$STAMP"
fi
