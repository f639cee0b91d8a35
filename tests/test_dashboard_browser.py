"""optuna-dashboard on a real finished study, looked at by a real headless Chromium."""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import torch
from _models import digits_trainer

import optuna_mto
from optuna_mto.transfer import GreedyTransfer
from optuna_mto.visualization import DASHBOARD_FIGURES, publish_to_dashboard, transfer_counts

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SERVER_START_S = 60
TITLES = {
    "mto-fitness": "Fitness per split (maximize)",
    "mto-transfer-graph": "Transfers: donor → receiver (kept/tried)",
    "mto-cross-split": "Cross-split validation",
    "mto-relations": "Relation scores",
}


def _sync_api():
    if not Path(CHROMIUM).exists():
        if os.environ.get("OPTUNA_MTO_REQUIRE_BROWSER"):  # CI installs it: missing = failure
            pytest.fail(f"OPTUNA_MTO_REQUIRE_BROWSER is set but there is no {CHROMIUM}")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        pytest.skip("the playwright Python package is not installed (pip install playwright)")
    pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed")
    return sync_api


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_serving(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the dashboard exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"the dashboard did not answer within {SERVER_START_S} s:\n{log.read_text()}")


def test_dashboard_shows_the_study_and_its_figures(tmp_path, study_name, digits):
    sync_api = _sync_api()
    x, y = digits
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna_mto.create_study(
        study_name=study_name, storage=url, n_splits=3, seed=0,
        transfer=GreedyTransfer(donor="uniform", only_better=False),
    )  # fmt: skip
    study.optimize(digits_trainer(x, y, epochs=2))
    publish_to_dashboard(study)  # the command publishes again: still 4 figures
    summary = study.summary()
    best = summary.best_split

    port = _free_port()
    log = tmp_path / "dashboard.log"
    command = [sys.executable, "-m", "optuna_mto.cli", "dashboard",
               "--storage", url, "--study", study_name, "--port", str(port)]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=os.environ.copy()
        )
    try:
        _wait_until_serving(proc, port, log)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                errors: list[str] = []
                page.on("pageerror", lambda err: errors.append(str(err)))
                page.goto(f"http://127.0.0.1:{port}/dashboard/studies/{study.study._study_id}")
                expect = sync_api.expect
                expect(page.get_by_text(f"{study_name} (id=")).to_be_visible(timeout=30_000)

                # The figures saved with save_plotly_graph_object, each drawn by plotly.
                plots = page.locator('[id^="user-defined-plot:"]')
                expect(plots).to_have_count(len(DASHBOARD_FIGURES), timeout=30_000)
                for graph_id, title in TITLES.items():
                    plot = page.locator(f'[id="user-defined-plot:{graph_id}"]')
                    expect(plot.locator(".main-svg").first).to_be_attached(timeout=30_000)
                    expect(plot.locator(".gtitle")).to_contain_text(title)
                fitness = page.locator('[id="user-defined-plot:mto-fitness"]')
                legend = fitness.locator(".legendtext").all_text_contents()
                assert [t for t in legend if t.startswith("split ")] == [
                    "split 0", "split 1", "split 2"
                ]  # fmt: skip
                heatmap = page.locator('[id="user-defined-plot:mto-cross-split"]')
                expect(heatmap).to_contain_text(f"#1 split {best} (mean {summary.mean[best]:.4f})")
                graph = page.locator('[id="user-defined-plot:mto-transfer-graph"]')
                labels = [t for t in graph.locator(".annotation-text").all_text_contents() if t]
                expected = [f"{kept}/{tried}" for kept, tried, _ in transfer_counts(study).values()]
                assert expected and sorted(labels) == sorted(expected)
                relations = page.locator('[id="user-defined-plot:mto-relations"]')
                expect(relations).to_contain_text("no relation scores recorded")

                # K trials: the dashboard's own intermediate-value plot has one per split.
                trials = page.get_by_text(re.compile(r"^trial #\d+\s*$"))
                expect(trials).to_have_count(study.n_splits, timeout=30_000)
                page.screenshot(path=tmp_path / "dashboard.png", full_page=True)

                # The best split's checkpoint is an Optuna artifact: listed, downloadable.
                trial = study.study.get_trials()[summary.trial_numbers[best]]
                (meta,) = optuna.artifacts.get_all_artifact_meta(
                    trial, storage=study.study._storage
                )
                page.goto(
                    f"http://127.0.0.1:{port}/dashboard/studies/{study.study._study_id}"
                    f"/trials?numbers={trial.number}"
                )
                expect(page.get_by_text(meta.filename).first).to_be_visible(timeout=30_000)
                url_path = (
                    f"/artifacts/{study.study._study_id}/{trial._trial_id}/{meta.artifact_id}"
                )
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{url_path}") as r:
                    downloaded = r.read()
                state = torch.load(io.BytesIO(downloaded), weights_only=True)
                assert state["model"].keys() == study.best_state_dict().keys()

                # The study note: configuration and the summary's ranking table.
                page.goto(f"http://127.0.0.1:{port}/dashboard/studies/{study.study._study_id}/note")
                expect(page.get_by_role("table").nth(1)).to_contain_text("xfer")
                expect(page.get_by_role("table").nth(1)).to_contain_text("seen")
                expect(page.get_by_text("kept/tried transfers")).to_be_visible()
                expect(page.get_by_role("table").first).to_contain_text("GreedyTransfer(")
                page.screenshot(path=tmp_path / "note.png")
                assert errors == []
            finally:
                browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
