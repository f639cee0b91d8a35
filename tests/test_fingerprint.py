from __future__ import annotations

import numpy as np
import pytest
from _util import run_in_subprocess

from optuna_mto._data.fingerprint import dataset_fingerprint

# ----------------------------------------------------------------------------- fingerprints


def test_fingerprint_format_and_stability() -> None:
    fp = dataset_fingerprint(10)
    assert len(fp) == 16 and all(ch in "0123456789abcdef" for ch in fp)
    assert dataset_fingerprint(10) == fp


def test_fingerprint_differs_by_size_labels_and_contents() -> None:
    data = np.arange(200, dtype=np.float32).reshape(100, 2)
    labels = np.arange(100) % 3
    base = dataset_fingerprint(100, labels, data)
    other_labels = labels.copy()
    other_labels[17] = (other_labels[17] + 1) % 3
    other_data = data.copy()
    other_data[99, 1] += 0.5  # the last row is always sampled
    sampled_row_data = np.arange(200 * 3, dtype=np.float64).reshape(200, 3)
    fingerprints = {
        base,
        dataset_fingerprint(100),
        dataset_fingerprint(101),
        dataset_fingerprint(100, labels),
        dataset_fingerprint(100, other_labels, data),
        dataset_fingerprint(100, labels, other_data),
        dataset_fingerprint(100, labels, data * 2),
        dataset_fingerprint(100, labels, data.reshape(100, 2, 1)),
        dataset_fingerprint(200, None, sampled_row_data),
        dataset_fingerprint(200, None, sampled_row_data + 1e-3),
    }
    assert len(fingerprints) == 10


def test_fingerprint_normalises_types() -> None:
    data = np.arange(30, dtype=np.float64).reshape(10, 3) / 8  # exact in float32 too
    labels = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    fp = dataset_fingerprint(10, labels, data)
    assert dataset_fingerprint(10, np.array(labels, dtype=np.int32), data) == fp
    assert dataset_fingerprint(10, labels, data.astype(np.float32)) == fp
    assert dataset_fingerprint(10, labels, list(data)) == fp
    assert dataset_fingerprint(10, labels, data + 1e-9) == fp  # rounded to 6 decimals
    assert dataset_fingerprint(2, None, np.array([[0.0], [-0.0]])) == dataset_fingerprint(
        2, None, np.zeros((2, 1))
    )


def test_fingerprint_accepts_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    data = np.random.default_rng(0).normal(size=(80, 4)).astype(np.float32)
    labels = np.arange(80) % 5
    fp = dataset_fingerprint(80, labels, data)
    t_data = torch.from_numpy(data).requires_grad_(True)
    assert dataset_fingerprint(80, torch.from_numpy(labels), t_data) == fp
    bf16 = torch.from_numpy(data).to(torch.bfloat16)
    assert len(dataset_fingerprint(80, labels, bf16)) == 16


def test_fingerprint_string_labels() -> None:
    assert dataset_fingerprint(3, ["a", "b", "c"]) != dataset_fingerprint(3, ["a", "b", "d"])


def test_fingerprint_identical_in_subprocess() -> None:
    code = (
        "import numpy as np\n"
        "from optuna_mto._data.fingerprint import dataset_fingerprint\n"
        "d = np.random.default_rng(5).normal(size=(500, 3, 2)).astype(np.float32)\n"
        "print(dataset_fingerprint(500, np.arange(500) % 7, d))\n"
    )
    data = np.random.default_rng(5).normal(size=(500, 3, 2)).astype(np.float32)
    assert run_in_subprocess(code) == dataset_fingerprint(500, np.arange(500) % 7, data)


@pytest.mark.parametrize(
    "args, pattern",
    [
        ((-1,), r"n_samples must be an integer >= 0, but got n_samples=-1"),
        ((3.0,), r"n_samples must be an integer >= 0, but got n_samples=3\.0"),
        ((3, [0, 1]), r"length n_samples=3\), but got shape \(2,\)"),
        ((3, 5), r"length n_samples=3\), but got shape \(\)"),
        ((3, None, np.zeros((4, 2))), r"n_samples=3\), but got len\(data\)=4"),
    ],
)
def test_fingerprint_validation(args: tuple, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        dataset_fingerprint(*args)


def test_fingerprint_non_numeric_data() -> None:
    with pytest.raises(TypeError, match=r"data rows must be numeric"):
        dataset_fingerprint(2, None, np.array([["a"], ["b"]]))
