"""The live progress view: pure rendering, the terminal redraw, and the log-line mode."""

from __future__ import annotations

import io
import math
import re
import threading

from optuna_mto._study.progress import ProgressView, SplitProgress, format_duration, render_lines


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[\d*[A-Za-z]", "", text)


def test_format_duration():
    assert format_duration(0) == "0:00"
    assert format_duration(12.2) == "0:13"
    assert format_duration(75) == "1:15"
    assert format_duration(3 * 3600 + 61) == "3:01:01"
    assert format_duration(-5) == "0:00"


def test_render_lines_aligns_splits_and_computes_the_eta():
    rows = [
        # 4 steps done in 40 s since its start: 10 s a step, 6 steps left, 5 s since.
        SplitProgress(
            10,
            step=3,
            total_steps=10,
            fitness=0.95123,
            accepted=1,
            tried=2,
            ref_time=0.0,
            ref_step=-1,
            updated=40.0,
        ),  # fmt: skip
        SplitProgress(
            2,
            step=9,
            total_steps=10,
            fitness=0.9,
            accepted=3,
            tried=3,
            ref_time=0.0,
            ref_step=-1,
            updated=50.0,
        ),  # fmt: skip
        SplitProgress(3),
        SplitProgress(
            4, step=0, total_steps=None, fitness=math.nan, ref_time=7.0, ref_step=0, updated=7.0
        ),  # fmt: skip
    ]
    lines = render_lines(rows, now=45.0)
    assert lines == [
        "split  2  step 10/10  fitness 0.9000  transfers 3/3  done",
        "split  3  waiting",
        "split  4  step  1/?   fitness -  transfers 0/0  ETA ?",
        "split 10  step  4/10  fitness 0.9512  transfers 1/2  ETA 0:55",
    ]
    assert render_lines(rows, now=45.0, width=12)[0] == "split  2  st"
    assert render_lines([], now=0.0) == []


def test_eta_uses_the_average_step_time_from_the_first_update():
    clock = FakeClock(0.0)
    out = io.StringIO()
    view = ProgressView(stream=out, tty=False, log_interval_s=0, clock=clock)
    view.update(0, step=0, total_steps=5, fitness=0.5, accepted=0, tried=0)
    assert out.getvalue().splitlines()[-1].endswith("ETA ?")  # one point: no average yet
    clock.now = 4.0
    view.update(0, step=2, total_steps=5, fitness=0.6, accepted=0, tried=1)
    assert out.getvalue().splitlines()[-1].endswith("ETA 0:04")  # 2 s a step, 2 left
    view.start(1, total_steps=3)
    clock.now = 7.0
    view.update(1, step=0, total_steps=3, fitness=0.7, accepted=0, tried=0)
    assert out.getvalue().splitlines()[-1].endswith("ETA 0:06")  # timed from start()


def test_tty_mode_redraws_the_lines_in_place():
    clock = FakeClock()
    out = TtyStream()
    view = ProgressView(n_splits=2, stream=out, refresh_s=0.25, width=200, clock=clock)
    assert view.tty
    view.update(0, step=0, total_steps=3, fitness=0.5, accepted=0, tried=0)
    first = out.getvalue()
    assert first == (
        "\x1b[2Ksplit 0  step 1/3  fitness 0.5000  transfers 0/0  ETA ?\n\x1b[2Ksplit 1  waiting\n"
    )
    clock.now += 0.1  # within 1/4 s: recorded, not drawn
    view.update(1, step=0, total_steps=3, fitness=0.6, accepted=0, tried=0)
    assert out.getvalue() == first
    clock.now += 0.2
    view.update(0, step=1, total_steps=3, fitness=0.7, accepted=1, tried=1)
    second = out.getvalue()[len(first) :]
    assert second.startswith("\x1b[2F")  # back up over the two lines drawn before
    assert second.count("\x1b[2K") == 2 and second.count("\n") == 2
    assert _plain(second).splitlines() == [
        "split 0  step 2/3  fitness 0.7000  transfers 1/1  ETA 0:01",
        "split 1  step 1/3  fitness 0.6000  transfers 0/0  ETA ?",
    ]
    clock.now += 0.01  # a finished split is drawn at once
    view.update(0, step=2, total_steps=3, fitness=0.8, accepted=1, tried=1)
    assert "split 0  step 3/3  fitness 0.8000  transfers 1/1  done" in _plain(out.getvalue())
    clock.now += 0.01
    view.update(1, step=1, total_steps=3, fitness=0.65, accepted=0, tried=1)
    before_close = out.getvalue()
    view.close()
    final = out.getvalue()[len(before_close) :]
    assert final.startswith("\x1b[2F")
    assert _plain(final).splitlines()[1].startswith("split 1  step 2/3  fitness 0.6500")
    view.close()  # idempotent
    view.update(1, step=2, total_steps=3, fitness=0.9, accepted=0, tried=1)
    assert out.getvalue().endswith(final)  # nothing after close


def test_tty_mode_cuts_lines_to_the_width():
    out = TtyStream()
    with ProgressView(stream=out, width=20, clock=FakeClock()) as view:
        view.update(0, step=0, total_steps=3, fitness=0.5, accepted=0, tried=0)
    assert all(len(line) <= 20 for line in _plain(out.getvalue()).splitlines())


def test_plain_mode_logs_at_most_every_interval_per_split_and_flushes_on_close():
    clock = FakeClock()
    out = io.StringIO()
    view = ProgressView(stream=out, log_interval_s=10, clock=clock)
    assert not view.tty  # a StringIO is no terminal
    for step in range(5):
        view.update(0, step=step, total_steps=100, fitness=0.1 * step, accepted=0, tried=0)
        view.update(1, step=step, total_steps=5, fitness=0.2, accepted=0, tried=0)
        clock.now += 3
    lines = out.getvalue().splitlines()
    assert "\x1b" not in out.getvalue()
    # First update of each split, then once 10 s have passed, and split 1's last step.
    assert [line.split("  fitness")[0] for line in lines] == [
        "split 0  step   1/100",
        "split 1  step 1/5",
        "split 0  step   5/100",
        "split 1  step 5/5",
    ]
    view.update(0, step=5, total_steps=100, fitness=0.6, accepted=1, tried=1)
    view.close()
    assert out.getvalue().splitlines()[-1].startswith("split 0  step   6/100  fitness 0.6000")


def test_isatty_is_asked_when_tty_is_not_given():
    assert ProgressView(stream=TtyStream()).tty
    assert not ProgressView(stream=io.StringIO()).tty


def test_updates_from_many_threads():
    out = TtyStream()
    view = ProgressView(n_splits=4, stream=out, refresh_s=0, width=200)

    def run(split: int) -> None:
        for step in range(50):
            view.update(split, step, 50, 0.5, 0, 0)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    view.close()
    tail = _plain(out.getvalue()).splitlines()[-4:]
    assert [line.split("  fitness")[0] for line in tail] == [
        f"split {k}  step 50/50" for k in range(4)
    ]


def test_a_stream_without_isatty_counts_as_no_terminal():
    class NoTty:
        def write(self, text: str) -> None:
            pass

        def flush(self) -> None:
            pass

    assert not ProgressView(stream=NoTty()).tty


def test_optimize_shows_one_final_line_per_split(study_name, digits, capsys):
    from _models import digits_trainer

    import optuna_mto

    x, y = digits
    study = optuna_mto.create_study(study_name=study_name, n_splits=2)
    study.optimize(digits_trainer(x, y, epochs=2), show_progress=True, dashboard=False)
    out = capsys.readouterr().out
    for split in range(2):
        done = [line for line in out.splitlines() if line.startswith(f"split {split} ")]
        assert done and "step 2/2" in done[-1] and "done" in done[-1]
        assert sum("done" in line for line in done) == 1


def test_optimize_shows_an_eta_from_the_first_step(study_name, digits, capsys):
    # The record carries the run's start time, so the first step already has an average.
    from _models import SlowTrainer, adam_fast, tiny_mlp

    import optuna_mto

    trainer = SlowTrainer(tiny_mlp, digits, epochs=3, optimizer_fn=adam_fast, epoch_s=0.6)
    study = optuna_mto.create_study(study_name=study_name, n_splits=1)
    study.optimize(trainer, show_progress=True, dashboard=False)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("split 0")]
    first = lines[0]
    assert re.search(r"step 1/3 .* ETA \d+:\d\d$", first), lines  # not "ETA ?"


def test_start_at_an_earlier_time_times_the_first_step():
    clock = FakeClock(10.0)
    out = io.StringIO()
    view = ProgressView(stream=out, tty=False, log_interval_s=0, clock=clock)
    view.start(0, total_steps=4, at=7.0)  # the run began 3 s ago, seen only now
    view.update(0, step=0, total_steps=4, fitness=0.5, accepted=0, tried=0)
    assert out.getvalue().splitlines()[-1].endswith("ETA 0:09")  # 3 s a step, 3 left
