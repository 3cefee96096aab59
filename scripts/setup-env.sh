#!/usr/bin/env bash
# Create .venv (if missing) and install fae-lab with every extra the tests need.
# Idempotent: a second run only checks that the install is current.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.fae-lab-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[lab,notebooks,test]"
  touch "$stamp"
fi
# The browser tests drive Debian's chromium (Playwright's own browser download is not used);
# a few dashboard tests run the page's JavaScript tickers in node.
missing=""
command -v chromium >/dev/null 2>&1 || missing="chromium"
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
if [ "${1:-}" = "--browser" ] && [ -n "$missing" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
  else
    echo "setup-env: $missing not found and apt-get unavailable; browser tests will fail" >&2
  fi
fi
