"""The runnable examples in the docstrings of create_study, each strategy and each splitter."""

from __future__ import annotations

import doctest

import pytest

import optuna_mto
from optuna_mto import transfer

DOCUMENTED = [
    optuna_mto.create_study,
    optuna_mto.RandomSplitter,
    optuna_mto.KFoldSplitter,
    optuna_mto.StratifiedSplitter,
    transfer.NoTransfer,
    transfer.GreedyTransfer,
    transfer.RescueTransfer,
    transfer.AveragingTransfer,
    transfer.PBTTransfer,
    transfer.AdaptiveTransfer,
    transfer.InterpolateTransfer,
]


@pytest.mark.parametrize("obj", DOCUMENTED, ids=lambda obj: obj.__name__)
def test_the_docstring_example_runs_as_written(obj) -> None:
    tests = [t for t in doctest.DocTestFinder(recurse=False).find(obj, obj.__name__) if t.examples]
    assert tests, f"{obj.__name__}'s docstring has no example (an 'Example:' with >>> lines)"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    for test in tests:
        runner.run(test)
    assert runner.failures == 0, f"{obj.__name__}'s docstring example failed (output above)"


def test_every_strategy_of_the_package_has_an_example() -> None:
    strategies = {
        name for name in transfer.__all__
        if isinstance(getattr(transfer, name), type)
        and issubclass(getattr(transfer, name), transfer.BaseTransferManager)
        and name != "BaseTransferManager"
    }  # fmt: skip
    assert strategies <= {obj.__name__ for obj in DOCUMENTED}
