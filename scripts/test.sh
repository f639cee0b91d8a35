#!/usr/bin/env bash
# Lint and run the test suite. PostgreSQL tests run when OPTUNA_MTO_TEST_POSTGRES_URL
# is set (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test) and are skipped,
# with the reason shown, when it is not.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh test
.venv/bin/ruff check optuna_mto tests examples benchmarks
.venv/bin/ruff format --check optuna_mto tests examples benchmarks
exec .venv/bin/python -m pytest -rs "$@"
