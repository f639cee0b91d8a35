#!/usr/bin/env bash
# The GPU check of optuna-mto, as one command for a lent GPU machine (no network):
# environment report, the GPU-marked tests, then benchmarks/gpu.py. Logs and the
# benchmark's JSON go to $OUT (default /tmp/optuna-mto-gpu).
#
#   bash scripts/gpu_wheels.sh            # here, with network: the project's wheel and the
#                                         # pure-Python pieces a bare GPU image lacks, into .whl
#   bash scripts/gpu_check.sh             # there, in the repository root, .whl carried
#   GPU_CHECK_ALLOW_CPU=1 BENCH_BUDGET=45 GPU_BENCH_ARGS="--cpu --tiny" \
#     bash scripts/gpu_check.sh           # dry run of the script itself, without a GPU
#
# Uses the machine's own python3 (its PyTorch and CUDA): optuna-mto is installed on top of
# it with --no-deps, plus the pure-Python pieces the machine lacks, into a private folder.
# Budget: tests <= 200 s, benchmark <= 280 s (+40 s grace): under 9 minutes in all, so a device call with timeout_s=580 holds it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/optuna-mto-gpu}
PY=${PYTHON:-python3}
BENCH_BUDGET=${BENCH_BUDGET:-280}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

# Install optuna-mto on top of the machine's own PyTorch: the project with --no-deps (from
# its wheel in .whl when carried, else from this source tree), then only those of its
# pure-Python dependencies that the machine lacks (from .whl when carried, else the
# registry). torch, torchvision, NumPy and CUDA stay the machine's.
wheels=${GPU_WHEELS_DIR:-.whl}
site=${GPU_SITE:-/tmp/optuna-mto-site}
rm -rf "$site"
mkdir -p "$site"
pipi=("$PY" -m pip install -q --no-deps --no-compile --no-cache-dir --disable-pip-version-check
  --target "$site")
if compgen -G "$wheels/optuna_mto-*.whl" >/dev/null; then
  "${pipi[@]}" "$wheels"/optuna_mto-*.whl || { echo "installing the optuna-mto wheel failed"; exit 1; }
else
  "${pipi[@]}" . || { echo "installing optuna-mto from source failed"; exit 1; }
fi
missing=$("$PY" -c '
import importlib.util
# Core dependencies of optuna-mto and Optuna, by import name -> distribution name.
needed = {"optuna": "optuna", "sqlalchemy": "SQLAlchemy", "alembic": "alembic",
          "mako": "Mako", "colorlog": "colorlog", "plotly": "plotly", "tqdm": "tqdm",
          "yaml": "PyYAML", "narwhals": "narwhals", "packaging": "packaging"}
print(" ".join(d for m, d in needed.items() if importlib.util.find_spec(m) is None))
')
if [ -n "$missing" ]; then
  echo "installing what this machine lacks: $missing"
  src=()
  if compgen -G "$wheels/*.whl" >/dev/null; then
    src=(--no-index --find-links "$wheels")
  fi
  # shellcheck disable=SC2086
  "${pipi[@]}" "${src[@]}" $missing || { echo "installing $missing failed"; exit 1; }
fi
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  "$PY" - <<'EOF'
import os
import platform
import sys

import numpy
import optuna
import sqlalchemy
import torch
import torchvision

import optuna_mto

print("python", platform.python_version(), "| torch", torch.__version__,
      "| torchvision", torchvision.__version__, "| numpy", numpy.__version__)
print("optuna", optuna.__version__, "| sqlalchemy", sqlalchemy.__version__,
      "| optuna_mto", optuna_mto.__version__, "from", os.path.dirname(optuna_mto.__file__))
print("torch from", os.path.dirname(torch.__file__), "(the machine's own)")
print("cuda available:", torch.cuda.is_available(), "| devices:",
      [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
if not torch.cuda.is_available() and os.environ.get("GPU_CHECK_ALLOW_CPU") != "1":
    sys.exit("no CUDA device: this check would only skip (GPU_CHECK_ALLOW_CPU=1 for a dry run)")
EOF
} 2>&1 | tee "$OUT/env.txt"
env_rc=${PIPESTATUS[0]}
[ "$env_rc" -eq 0 ] || { echo "environment check failed (rc $env_rc)"; exit "$env_rc"; }

echo "== tests/test_gpu.py =="
# DDP inside a split, nccl on 2 GPUs (skips with fewer): torchrun with 2 ranks, ~20 s.
ddp_test=tests/test_distributed.py::test_nccl_on_two_gpus_completes_with_identical_ranks
timeout "${TESTS_TIMEOUT:-200}" "$PY" -m pytest tests/test_gpu.py "$ddp_test" -q -rs --durations=10 \
  -p no:cacheprovider 2>&1 | tee "$OUT/tests.log"
tests_rc=${PIPESTATUS[0]}

echo "== benchmarks/gpu.py =="
timeout $((BENCH_BUDGET + 60)) "$PY" benchmarks/gpu.py --budget "$BENCH_BUDGET" \
  --out "$OUT/gpu.json" ${GPU_BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
bench_rc=${PIPESTATUS[0]}

echo "tests rc=$tests_rc benchmark rc=$bench_rc"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
