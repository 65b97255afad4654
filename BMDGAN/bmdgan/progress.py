"""Progress display of long engine jobs: a tqdm bar on a terminal, a few plain lines in a pipe or a log file.

A tqdm bar redraws itself with carriage returns; written to a pipe or a log (the Slicer modules read the engine's
log, CI keeps it) a 1024-chunk projection became a thousand updates. :func:`progress_bar` gives the bar on a
terminal and otherwise a :class:`LineProgress` that writes, for bars that stay (``leave=True``), a first line when
the job starts (a reader of the log, such as a Slicer module, learns at once which phase runs) and one per tenth of
the job; one line at least :data:`HEARTBEAT_S` after the previous one while the job runs, and a last line when it
ends: a 1024-step job writes at most twelve lines.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable

LINE_EVERY_FRACTION = 0.1
"""Share of the job between two lines of a bar that stays (leave=True)."""
HEARTBEAT_S = 30.0
"""Longest silence (s) while a job advances: slow jobs still show that they are alive."""


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    disable: bool = False,
    leave: bool = True,
    file=None,
    **tqdm_options,
):
    """A tqdm bar when ``file`` (default: stderr) is a terminal, else a :class:`LineProgress` with the same use
    (iterate, ``update``, ``set_postfix``, ``set_postfix_str``, ``close``, context manager)."""
    stream = sys.stderr if file is None else file
    if not disable and _is_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=stream, **tqdm_options)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave, file=stream)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class LineProgress:
    """Throttled line logger with the part of tqdm's interface the engine uses."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        disable: bool = False,
        leave: bool = True,
        file=None,
    ):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit, self.disable, self.leave = total, desc, unit, disable, leave
        self.file = sys.stderr if file is None else file
        self.n = 0
        self.postfix = ""
        self._started = self._last_line_time = time.monotonic()
        self._last_line_n = 0
        self._closed = False
        if leave and not disable:
            self._line(self._started)

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.disable:
            return
        now = time.monotonic()
        tenth_done = (
            self.leave
            and self.total
            and (self.n - self._last_line_n) >= LINE_EVERY_FRACTION * self.total
            and self.n < self.total
        )
        if tenth_done or now - self._last_line_time >= HEARTBEAT_S:
            self._line(now)

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = text

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **values) -> None:
        values = {**(ordered_dict or {}), **values}
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.disable and self.n > self._last_line_n:
            self._line(time.monotonic())

    def _line(self, now: float) -> None:
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        share = f" ({100.0 * self.n / self.total:.0f} %)" if self.total else ""
        postfix = f", {self.postfix}" if self.postfix else ""
        prefix = f"{self.desc}: " if self.desc else ""
        print(f"{prefix}{done} {self.unit}{share}, {now - self._started:.1f} s{postfix}", file=self.file, flush=True)
        self._last_line_time, self._last_line_n = now, self.n
