#!/usr/bin/env bash
# Create ./.venv (if missing) and install optuna-mto with its test and example extras.
# Re-installs only when pyproject.toml changed. Pins: torch==2.14.1, torchvision==0.29.1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.optuna-mto-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[test,dashboard]"
  echo "$want" > "$stamp"
fi
