"""One progress display for the whole job (rank 0 only): done/total, rate and ETA.

On a terminal it redraws one bar line; in a batch log it prints a plain line every few
seconds, so a Slurm output file stays readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    """Seconds as ``1h02m``, ``3m05s`` or ``4.2s``.

    Examples
    --------
    >>> format_duration(4.23), format_duration(185), format_duration(3725)
    ('4.2s', '3m05s', '1h02m')
    """
    if seconds != seconds or seconds == float("inf"):
        return "?"
    if round(seconds, 1) < 60:  # 59.97 is '1m00s', not '60.0s'
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


class Progress:
    """Progress of ``total`` tasks.

    Parameters
    ----------
    total : int
        Number of tasks.
    stream : text stream, optional
        Where to write (standard error by default).
    interval : float, optional
        Seconds between plain lines when ``stream`` is not a terminal.
    enabled : bool
        ``False`` makes every call a no-op.
    label : str
        Shown before the counts.
    work : float, optional
        Estimated cost of all ``total`` tasks (seconds). With it, and with the finished
        tasks' estimated cost passed to :meth:`update`, the ETA is the remaining estimated
        work at the rate estimated work gets done: the right ETA when the costly tasks go
        first, where a count-based one is far too long at the start.
    """

    def __init__(
        self,
        total: int,
        stream: TextIO | None = None,
        interval: float = 5.0,
        enabled: bool = True,
        label: str = "fits",
        work: float | None = None,
    ) -> None:
        self.total = int(total)
        self.work_total = work if work is not None and work > 0 else None
        self._work = 0.0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and self.total > 0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.2 if self.tty else interval
        self.label = label
        self.start = time.monotonic()
        self._last = -1e9
        self._done = 0
        self._shown = -1
        self._skipped = 0

    def skip(self, n: int) -> None:
        """Count ``n`` tasks as already done before this run (they do not enter the rate)."""
        self._skipped = n

    def line(self, done: int) -> str:
        """The text shown for ``done`` finished tasks."""
        elapsed = time.monotonic() - self.start
        fresh = max(done - self._skipped, 0)
        rate = fresh / elapsed if elapsed > 0 else 0.0
        if self.work_total is not None and self._work > 0:
            eta = elapsed * max(self.work_total - self._work, 0.0) / self._work
        else:
            eta = (self.total - done) / rate if rate > 0 else float("nan")
        pct = 100.0 * done / self.total if self.total else 100.0
        text = (
            f"{self.label} {done}/{self.total} ({pct:5.1f}%) | {rate:.2f}/s | "
            f"elapsed {format_duration(elapsed)} | ETA {format_duration(eta)}"
        )
        if self.tty:
            width = 24
            fill = int(width * done / self.total) if self.total else width
            text = f"[{'#' * fill}{'.' * (width - fill)}] " + text
        return text

    def update(self, done: int, force: bool = False, work: float | None = None) -> None:
        """Report ``done`` finished tasks, of estimated cost ``work`` (throttled to ``interval``)."""
        if not self.enabled:
            return
        self._done = done
        if work is not None:
            self._work = work
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        self._shown = done
        if self.tty:
            self.stream.write("\r" + self.line(done) + "\x1b[K")
        else:
            self.stream.write(self.line(done) + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Print the final state and end the line."""
        if not self.enabled:
            return
        if self._shown != self._done:
            self.update(self._done, force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
