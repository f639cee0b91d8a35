#!/usr/bin/env bash
# Packaging and oldest-supported-versions job (run by .ci/run after the test suite).
#
# 1. Builds the wheel and sdist with `python -m build`, runs `twine check --strict`, and
#    checks that the wheel holds the package only (no tests, storage or benchmark results).
# 2. Makes a clean venv outside the repository with the OLDEST versions pyproject.toml
#    claims: torch first (as a user who already has their own torch), then the wheel with
#    no torch constraint at all, and shows that pip left that torch untouched.
# 3. Runs the `smoke` tests (end-to-end study with transfer, SIGKILL + resume, the CLI
#    summary, Lightning through the older `pytorch_lightning` namespace, a plot) from a
#    copy of tests/ outside the repository, so the installed wheel is what gets imported,
#    then the digits example.
#
#   bash scripts/ci_oldest.sh          # needs ./.venv (bash scripts/bootstrap.sh test)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
PY=${PYTHON:-python3}

# The lower bounds of pyproject.toml, and the oldest Lightning the extra allows.
OLDEST=(
  "optuna==5.0.0"
  "sqlalchemy==2.0.0"
  "numpy==1.26.4"
  "plotly==5.20.0"
  "pytorch-lightning==2.4.0"
)
OLDEST_TORCH=${OLDEST_TORCH:-torch==2.4.1}

work=${OPTUNA_MTO_OLDEST_DIR:-/tmp/optuna-mto-oldest}
rm -rf "$work"
mkdir -p "$work"
quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location '" || true; }; return "${PIPESTATUS[0]}"; }

echo "== build: wheel and sdist =="
quiet .venv/bin/python -m build --outdir "$work/dist" . >"$work/build.log" \
  || { cat "$work/build.log"; exit 1; }
.venv/bin/python -m twine check --strict "$work/dist"/*
.venv/bin/python - "$work/dist" <<'EOF'
import sys
import tarfile
import zipfile
from pathlib import Path

dist = Path(sys.argv[1])
wheel = next(dist.glob("*.whl"))
names = zipfile.ZipFile(wheel).namelist()
top = sorted({n.split("/")[0] for n in names})
assert all(t == "optuna_mto" or t.endswith(".dist-info") for t in top), top
bad = [n for n in names if n.split("/")[0] in ("tests", "storage", "benchmarks", "examples")]
assert not bad, bad
sdist = next(dist.glob("*.tar.gz"))
members = tarfile.open(sdist).getnames()
leaked = [m for m in members if "/storage/" in m and not m.endswith((".gitkeep", "README.md"))]
leaked += [m for m in members if "/benchmarks/results/" in m or "/.venv" in m]
assert not leaked, leaked[:10]
print(f"{wheel.name}: {len(names)} files, package only; {sdist.name}: {len(members)} members")
EOF

echo "== clean venv with the oldest supported versions ($OLDEST_TORCH, ${OLDEST[*]}) =="
"$PY" -m venv "$work/venv"
vpy=$work/venv/bin/python
quiet "$vpy" -m pip install --quiet --disable-pip-version-check --upgrade pip
quiet "$vpy" -m pip install --quiet --disable-pip-version-check "$OLDEST_TORCH" numpy==1.26.4
before=$("$vpy" -c "import torch; print(torch.__version__)")
wheel=$(ls "$work"/dist/*.whl)
quiet "$vpy" -m pip install --quiet --disable-pip-version-check "$wheel" "${OLDEST[@]}" \
  pytest scikit-learn mlxtend "psycopg[binary]>=3.1"
after=$("$vpy" -c "import torch; print(torch.__version__)")
echo "torch before installing optuna-mto: $before, after: $after"
[ "$before" = "$after" ] || { echo "installing optuna-mto replaced the user's torch"; exit 1; }
"$vpy" -m pip list --disable-pip-version-check 2>/dev/null \
  | grep -i -E "^(torch|optuna|sqlalchemy|numpy|plotly|pytorch-lightning|optuna-mto) "

echo "== smoke tests against the installed wheel =="
cp -r tests "$work/tests"
cp pyproject.toml "$work/"  # pytest markers and warning filters only
cd "$work"
"$vpy" -c "import optuna_mto, sys; p = optuna_mto.__file__; print('optuna_mto from', p); \
sys.exit('site-packages' not in p)"
unset PYTHONPATH
"$vpy" -m pytest -q -m smoke -p no:cacheprovider tests -rs
rc=0
echo "== examples/digits.py with the installed wheel =="
OPTUNA_MTO_HOME="$work/home" timeout 600 "$vpy" "$repo/examples/digits.py" | tail -n 5 || rc=$?
exit "$rc"
