#!/usr/bin/env bash
# Debian's chromium for the core SDK interop test (tests/interop/test_openim_wasm_sdk.py, which runs
# this when /usr/bin/chromium is missing). Idempotent and quiet: nothing to do when it is installed;
# otherwise apt-get install (as root, or through sudo), with one apt-get update when the package
# lists do not know chromium yet (a fresh machine).
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "install_chromium: /usr/bin/chromium is missing and we are not root" >&2; exit 1; }
  SUDO="sudo -n"
fi
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! $SUDO apt-get install -y -q chromium >"$log" 2>&1; then
  $SUDO apt-get update -q >>"$log" 2>&1
  $SUDO apt-get install -y -q chromium >>"$log" 2>&1 || { tail -20 "$log" >&2; exit 1; }
fi
[ -x /usr/bin/chromium ] || { echo "install_chromium: apt-get finished but /usr/bin/chromium is missing" >&2; exit 1; }
