"""A one-line progress report for long row-by-row work (scoring): rows done, rows/s and time left.

A person at a terminal wants one line that updates in place; a log file or CI console wants a few
whole lines, not thousands of carriage returns. So a TTY gets the updating line (at most every
`REFRESH_SECONDS`), anything else a line each time another tenth of the rows is done.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

# The in-place line is redrawn at most this often: a redraw per batch would cost more than it tells.
REFRESH_SECONDS = 0.2
# Without a terminal, a line each time this fraction of the rows is done (10 lines for a whole run).
STEP_FRACTION = 0.1


def format_duration(seconds: float) -> str:
    """`42s`, `3m05s`, `1h02m`: short enough for a progress line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Rows done out of `total_rows`, with rows/s and an ETA, written to `stream` (stderr).

    `advance(rows)` after each batch, `close()` once at the end (it writes the final line and ends
    the in-place one). `total_rows` of 0 or less means unknown: no percentage and no ETA.
    """

    def __init__(
        self,
        total_rows: int,
        label: str,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        tty: bool | None = None,
    ):
        self.total_rows, self.label = total_rows, label
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.tty = tty if tty is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = 0
        self.started = clock()
        self._drawn_at = float("-inf")
        self._next_step = 1
        self._closed = False

    def line(self) -> str:
        """The progress line as it stands now."""
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        parts = [f"{self.label}:"]
        if self.total_rows > 0:
            percent = 100.0 * self.done / self.total_rows
            parts.append(f"{self.done}/{self.total_rows} rows ({percent:.0f}%)")
        else:
            parts.append(f"{self.done} rows")
        parts.append(f"{rate:.1f} rows/s")
        if self.total_rows > 0 and not self._closed:
            left = max(self.total_rows - self.done, 0)
            parts.append(f"ETA {format_duration(left / rate)}" if rate > 0 else "ETA ?")
        else:
            parts.append(f"in {format_duration(elapsed)}")
        return " ".join(parts)

    def advance(self, rows: int) -> None:
        self.done += rows
        if self.tty:
            now = self.clock()
            if now - self._drawn_at >= REFRESH_SECONDS:
                self._drawn_at = now
                self.stream.write("\r" + self.line() + "\x1b[K")
                self.stream.flush()
            return
        if self.total_rows <= 0:
            return
        reached = int(self.done / self.total_rows / STEP_FRACTION + 1e-9)
        if reached >= self._next_step and self.done < self.total_rows:
            self._next_step = reached + 1
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        """Writes the final line (rows, rate, time taken); a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        self.stream.write(("\r" if self.tty else "") + self.line() + ("\x1b[K\n" if self.tty else "\n"))
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
