"""Every optional extra, missing: one line that names the extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest
from _util import REPO_ROOT

import optuna_mto._extras
from optuna_mto._extras import MissingExtraError, require


def _without(modules: list[str], code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in which ``modules`` cannot be imported."""
    block = "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    return subprocess.run(
        [sys.executable, "-c", f"import sys\n{block}{code}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _last_line(proc: subprocess.CompletedProcess) -> str:
    return proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("modules", "code", "extra"),
    [
        (["lightning", "pytorch_lightning"],
         "import optuna_mto.integration as i\ni.MTOCallback", "lightning"),
        (["transformers"], "import optuna_mto.integration as i\ni.MTOTrainerCallback",
         "transformers"),
        (["mlflow"], "from optuna_mto.integration import _mlflow\n_mlflow._client(None)",
         "mlflow"),
        (["tensorboard"],
         "from optuna_mto.integration import _tensorboard\n_tensorboard._writer_class()",
         "tensorboard"),
        (["optuna_dashboard"],
         "import optuna_mto.visualization as v\nv.publish_to_dashboard(None)", "dashboard"),
        (["torchvision"], "import runpy\nsys.argv = ['cifar', '--help']\n"
         "runpy.run_path('examples/cifar10_resnet.py', run_name='__main__')", "vision"),
    ],
)  # fmt: skip
def test_a_missing_extra_ends_in_one_line_naming_it(modules, code, extra):
    proc = _without(modules, code)
    assert proc.returncode != 0
    assert _last_line(proc).endswith(f'not installed: pip install "optuna-mto[{extra}]"'), (
        proc.stderr
    )


def test_the_dashboard_command_without_the_extra_prints_one_line(tmp_path):
    code = "from optuna_mto.cli import main\nsys.exit(main(['dashboard', '--study', 'x']))"
    proc = _without(["optuna_dashboard"], code)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "optuna-mto dashboard: error: serving optuna-dashboard needs optuna_dashboard, which is "
        'not installed: pip install "optuna-mto[dashboard]"'
    ]


def test_require_names_the_extra_and_leaves_other_import_errors_alone(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(MissingExtraError, match=r'pip install "optuna-mto\[mlflow\]"') as info:
        require("mlflow", "MLflowCallback")
    assert isinstance(info.value, ImportError) and info.value.name == "mlflow"
    with pytest.raises(ModuleNotFoundError, match="no_such_module_here"):
        require("no_such_module_here", "nothing")  # not an extra: the plain error
    assert require("json", "anything").__name__ == "json"
    # Every extra the package declares for a library feature is in the table.
    assert set(optuna_mto._extras.EXTRAS.values()) >= {
        "dashboard", "lightning", "mlflow", "tensorboard", "transformers", "postgres", "vision"
    }  # fmt: skip
