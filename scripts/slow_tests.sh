#!/usr/bin/env bash
# Re-measure the fast subset: run the tests not marked slow with their durations, and write
# every test that took 1.5 s or more to tests/slow_tests.txt (conftest.py marks those slow).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
.venv/bin/python -m pytest -q -p no:cacheprovider -m "not slow" --durations=0 "$@" > "$out" || true
.venv/bin/python - "$out" <<'PY'
import re, sys
from pathlib import Path
path = Path("tests/slow_tests.txt")
header = [l for l in path.read_text().splitlines() if l.startswith("#")]
known = {l for l in path.read_text().splitlines() if l and not l.startswith("#")}
took = {}
for line in open(sys.argv[1]):
    m = re.match(r"\s*([\d.]+)s (call|setup|teardown)\s+(\S+)", line)
    if m:
        took[m.group(3)] = took.get(m.group(3), 0.0) + float(m.group(1))
slow = known | {t for t, s in took.items() if s >= 1.5}
path.write_text("\n".join(header + sorted(slow)) + "\n")
print(f"{len(slow)} slow tests ({len(slow - known)} new); the rest took {sum(s for t, s in took.items() if t not in slow):.0f} s")
PY
rm -f "$out"
