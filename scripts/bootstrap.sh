#!/usr/bin/env bash
# Create a virtual environment for the project (once) and keep it in step with
# pyproject.toml and the development lock requirements/dev.txt.
#
#   bash scripts/bootstrap.sh test   # ./.venv: optuna-mto[dev] at the locked versions
#   bash scripts/bootstrap.sh demo   # ./.venv-demo: optuna-mto[examples] on a CPU build of torch
#
# The demo environment prefers a CPU-only PyTorch, so running a CPU example does not
# download gigabytes of CUDA libraries: first PyTorch's CPU index (the locked version),
# then a CPU wheel in pip's local wheel folders (find-links) within the supported range,
# and only then the locked default build. Set OPTUNA_MTO_TORCH_INDEX to use another index.
# Both environments reinstall only when pyproject.toml, requirements/dev.txt or the
# package version changed.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-test}
PY=${PYTHON:-python3}
lock=requirements/dev.txt

case "$kind" in
  test) venv=.venv ;;
  demo) venv=.venv-demo ;;
  *) echo "usage: bash scripts/bootstrap.sh [test|demo] (got '$kind')" >&2; exit 2 ;;
esac

if [ ! -x "$venv/bin/python" ]; then
  "$PY" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
stamp=$venv/.optuna-mto-installed
# The version lives in optuna_mto/__init__.py: a bump reinstalls (package metadata).
want=$( (cat pyproject.toml "$lock"; grep "^__version__" optuna_mto/__init__.py) | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

# pip's "Location ... is ignored" notes about optional local indexes are noise here.
quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location '" || true; }; return "${PIPESTATUS[0]}"; }

locked() { grep -E "^$1==" "$lock" | head -n 1; }

is_cpu_torch() {
  "$venv/bin/python" -c "import sys, torch; sys.exit(torch.version.cuda is not None)" 2>/dev/null
}

install_cpu_torch() {
  local torch_pin floor="2.4"
  torch_pin=$(locked torch)
  is_cpu_torch && return 0
  # 1. PyTorch's CPU-only index, the locked version.
  local index=${OPTUNA_MTO_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
  if quiet "${pip[@]}" install --quiet --timeout 15 --retries 1 --index-url "$index" \
    "$torch_pin" >/dev/null && is_cpu_torch; then
    echo "demo venv: CPU build of $torch_pin from $index"
    return 0
  fi
  # 2. A CPU wheel in pip's local wheel folders (find-links), within the supported range;
  #    then its own dependencies from the index.
  if quiet "${pip[@]}" install --quiet --no-index --no-deps \
    "torch>=$floor,<=${torch_pin#torch==}" >/dev/null 2>&1; then
    local have
    have=$("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('torch'))")
    if quiet "${pip[@]}" install --quiet "torch==$have" && is_cpu_torch; then
      echo "demo venv: CPU build torch $have from a local wheel folder"
      return 0
    fi
  fi
  "${pip[@]}" uninstall --quiet --yes torch >/dev/null 2>&1 || true
  echo "demo venv: no CPU build of torch reachable; installing the locked $torch_pin"
}

quiet "${pip[@]}" install --quiet --upgrade pip
if [ "$kind" = test ]; then
  quiet "${pip[@]}" install --quiet -c "$lock" -e ".[dev]"
else
  install_cpu_torch
  # The lock minus the torch stack: whichever torch was chosen above stays.
  demo_lock=$(mktemp)
  trap 'rm -f "$demo_lock"' EXIT
  grep -v -E '^(torch|torchvision|triton|nvidia-|cuda-)' "$lock" >"$demo_lock"
  quiet "${pip[@]}" install --quiet -c "$demo_lock" -e ".[examples]"
fi
echo "$want" >"$stamp"
