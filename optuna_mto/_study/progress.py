"""A live terminal view of the splits' progress, or plain log lines when not on a terminal."""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import TextIO

from optuna_mto._study.summary import format_number

__all__ = ["ProgressView", "SplitProgress", "format_duration", "render_lines"]

_UP = "\x1b[{n}F"  # cursor to the start of the line n lines up
_ERASE = "\x1b[2K"  # erase the whole line


@dataclasses.dataclass
class SplitProgress:
    """The latest state of one split, as the view knows it.

    Attributes:
        split: Split index.
        step: Last step reported (0-based), or -1 before the first report.
        total_steps: Number of steps the split runs (None if unknown).
        fitness: Latest fitness.
        accepted: Transfers kept so far.
        tried: Transfers tried so far.
        ref_time: Clock time of the reference point of the step-time average.
        ref_step: Step completed at ``ref_time`` (-1 for the split's start).
        updated: Clock time of the latest update.
    """

    split: int
    step: int = -1
    total_steps: int | None = None
    fitness: float = math.nan
    accepted: int = 0
    tried: int = 0
    ref_time: float = math.nan
    ref_step: int = -1
    updated: float = math.nan

    @property
    def done(self) -> bool:
        """True once the last of ``total_steps`` steps was reported."""
        return self.total_steps is not None and self.step + 1 >= self.total_steps

    @property
    def seconds_per_step(self) -> float | None:
        """Average seconds per step since the reference point, or None if unknown."""
        steps = self.step - self.ref_step
        if steps <= 0 or math.isnan(self.ref_time) or math.isnan(self.updated):
            return None
        return max(self.updated - self.ref_time, 0.0) / steps

    def eta(self, now: float) -> float | None:
        """Seconds left at ``now``, from the average step time; None if unknown."""
        per_step = self.seconds_per_step
        if self.total_steps is None or per_step is None:
            return None
        remaining = max(self.total_steps - (self.step + 1), 0) * per_step
        return max(remaining - max(now - self.updated, 0.0), 0.0)


def format_duration(seconds: float) -> str:
    """Return ``m:ss`` (or ``h:mm:ss``) for a number of seconds."""
    total = int(math.ceil(max(seconds, 0.0)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def render_lines(rows: Iterable[SplitProgress], now: float, width: int | None = None) -> list[str]:
    """Render one aligned text line per split, in split order (pure; no terminal needed).

    A line reads ``split 2  step  4/10  fitness 0.9512  transfers 1/2  ETA 0:12``:
    steps done (``step + 1``) of ``total_steps``, the latest fitness, transfers
    kept/tried, and the time left from the average step time (``ETA ?`` when not yet
    known, ``done`` once the last step was reported). A split that has not reported
    yet reads ``waiting``.

    Args:
        rows: The splits' states.
        now: The current clock time (the clock the states were stamped with).
        width: Cut lines to this many characters (None: no limit).

    Returns:
        The lines, without newline characters.
    """
    rows = sorted(rows, key=lambda r: r.split)
    if not rows:
        return []
    split_w = max(len(str(r.split)) for r in rows)
    step_w = max(len(str(r.total_steps if r.total_steps is not None else r.step + 1)) for r in rows)
    lines = []
    for row in rows:
        head = f"split {row.split:>{split_w}}"
        if row.step < 0:
            lines.append(f"{head}  waiting")
            continue
        total = "?" if row.total_steps is None else str(row.total_steps)
        steps = f"{row.step + 1:>{step_w}}/{total:<{step_w}}"
        fitness = format_number(row.fitness)
        if row.done:
            tail = "done"
        else:
            eta = row.eta(now)
            tail = "ETA ?" if eta is None else f"ETA {format_duration(eta)}"
        line = f"{head}  step {steps}  fitness {fitness}  transfers {row.accepted}/{row.tried}"
        lines.append(f"{line}  {tail}")
    if width is not None:
        lines = [line[: max(width, 0)] for line in lines]
    return lines


def _is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class ProgressView:
    """Live progress of the splits: step, fitness, transfers kept/tried, ETA.

    On a terminal it redraws one line per split in place (ANSI cursor-up, no other
    dependency), at most ``refresh_s`` apart. Otherwise (a log file, a pipe, CI) it
    writes one plain line per update, at most every ``log_interval_s`` per split,
    plus a split's first and last step. Thread-safe; ``close()`` writes the final
    state. Usable as a context manager.

    Example:
        .. code-block:: python

            view = ProgressView(n_splits=4)
            view.start(split=0, total_steps=10)       # optional: times the first step too
            view.update(0, step=0, total_steps=10, fitness=0.91, accepted=0, tried=0)
            view.close()

    Args:
        n_splits: K; when given, splits that have not reported yet show as waiting.
        stream: Where to write (default: ``sys.stdout``).
        tty: Force the terminal (True) or the log-line (False) mode; default: ask
            ``stream.isatty()``.
        refresh_s: Least seconds between two redraws on a terminal (~4 Hz).
        log_interval_s: Least seconds between two log lines of one split.
        width: Line width on a terminal (default: the terminal's width).
        clock: Monotonic clock (for tests).
    """

    def __init__(
        self,
        n_splits: int | None = None,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        refresh_s: float = 0.25,
        log_interval_s: float = 10.0,
        width: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = sys.stdout if stream is None else stream
        self.tty = _is_tty(self._stream) if tty is None else bool(tty)
        self.refresh_s = float(refresh_s)
        self.log_interval_s = float(log_interval_s)
        self._width = width
        self._clock = clock
        self._rows: dict[int, SplitProgress] = {}
        if n_splits is not None:
            self._rows = {k: SplitProgress(k) for k in range(n_splits)}
        self._lock = threading.Lock()
        self._drawn = 0  # lines on screen from the previous redraw
        self._last_draw = -math.inf
        self._dirty = False
        self._printed: dict[int, float] = {}  # split -> clock time of its last log line
        self._printed_step: dict[int, int] = {}  # split -> step of its last log line
        self._pending: set[int] = set()  # splits whose latest state has no log line yet
        self._closed = False

    def start(
        self,
        split: int,
        total_steps: int | None = None,
        first_step: int = 0,
        at: float | None = None,
    ) -> None:
        """Mark the start of a split's run (so that the ETA counts its first step too).

        Args:
            split: Split index.
            total_steps: Number of steps it runs, if known.
            first_step: Step it starts from (a resumed split's next step).
            at: Clock time of the start, if earlier than now.
        """
        with self._lock:
            now = self._clock() if at is None else min(at, self._clock())
            row = self._rows.setdefault(split, SplitProgress(split))
            row.ref_time, row.ref_step = now, first_step - 1
            row.step, row.updated = first_step - 1, now
            if total_steps is not None:
                row.total_steps = total_steps

    def update(
        self,
        split: int,
        step: int,
        total_steps: int | None,
        fitness: float,
        accepted: int,
        tried: int,
    ) -> None:
        """Record that ``split`` finished ``step`` and redraw or log if it is time.

        Args:
            split: Split index.
            step: The step just reported (0-based).
            total_steps: Number of steps the split runs (None if unknown).
            fitness: The split's fitness after the step.
            accepted: Transfers kept so far.
            tried: Transfers tried so far.
        """
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            row = self._rows.setdefault(split, SplitProgress(split))
            if math.isnan(row.ref_time) or step <= row.ref_step:
                row.ref_time, row.ref_step = now, step  # first sight: time from here on
            row.step, row.total_steps, row.fitness = step, total_steps, float(fitness)
            row.accepted, row.tried, row.updated = accepted, tried, now
            if self.tty:
                self._dirty = True
                if row.done or now - self._last_draw >= self.refresh_s:
                    self._redraw(now)
                return
            if self._printed_step.get(split) == step:
                return  # nothing new to say (the monitor polls more often than steps come)
            last = self._printed.get(split)
            if last is None or row.done or now - last >= self.log_interval_s:
                self._log(row, now)
            else:
                self._pending.add(split)

    def close(self) -> None:
        """Write the final state (the last redraw, or the unlogged latest lines)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            now = self._clock()
            if self.tty:
                if self._dirty:
                    self._redraw(now)
            else:
                for split in sorted(self._pending):
                    self._log(self._rows[split], now)
            self._stream.flush()

    def __enter__(self) -> ProgressView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _redraw(self, now: float) -> None:
        width = self._width
        if width is None:
            width = shutil.get_terminal_size(fallback=(100, 24)).columns - 1
        lines = render_lines(self._rows.values(), now, width)
        out = [_UP.format(n=self._drawn)] if self._drawn else []
        out += [f"{_ERASE}{line}\n" for line in lines]
        self._stream.write("".join(out))
        self._stream.flush()
        self._drawn = len(lines)
        self._last_draw = now
        self._dirty = False

    def _log(self, row: SplitProgress, now: float) -> None:
        self._stream.write(render_lines([row], now)[0] + "\n")
        self._stream.flush()
        self._printed[row.split] = now
        self._printed_step[row.split] = row.step
        self._pending.discard(row.split)
