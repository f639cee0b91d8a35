#!/usr/bin/env bash
# Build optuna-mto's wheel and download, into ./.whl, the pure-Python pieces that
# scripts/gpu_check.sh installs (with --no-deps, on top of the machine's own torch) on a GPU machine
# that has CUDA, PyTorch, torchvision, NumPy, scikit-learn and pytest but no network
# and no Optuna. Run it here (with network), then carry .whl to the GPU machine.
#
#   bash scripts/gpu_wheels.sh                  # CPython 3.12, x86_64 (the default)
#   GPU_PYTHON_VERSION=3.11 bash scripts/gpu_wheels.sh
#
# Versions are those of the project's venv where it has them, so the GPU run tests the
# same Optuna and SQLAlchemy as the CPU test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
pyver=${GPU_PYTHON_VERSION:-3.12}

# What optuna_mto, its tests/test_gpu.py and benchmarks/gpu.py import that such an image
# lacks: Optuna and its own needs (alembic -> Mako, colorlog, SQLAlchemy) and plotly.
want=(optuna alembic Mako colorlog SQLAlchemy plotly narwhals tqdm PyYAML packaging)
pins=()
for name in "${want[@]}"; do
  version=$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null || true)
  pins+=("$name${version:+==$version}")
done

rm -rf .whl
mkdir -p .whl
"$PY" -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version "$pyver" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any \
  -d .whl "${pins[@]}"
# The project itself, so the GPU machine needs no build back-end (it installs --no-deps).
"$PY" -m build --wheel --outdir .whl . >/dev/null
ls -1 .whl
du -sh .whl
