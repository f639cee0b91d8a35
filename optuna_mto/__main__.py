"""``python -m optuna_mto`` runs the ``optuna-mto`` command (e.g. under ``torchrun -m``)."""

import sys

from optuna_mto.cli import main

if __name__ == "__main__":
    sys.exit(main())
