"""Progress of a long pass over data, on stderr: a line every few seconds in logs, a bar on a terminal."""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


class Progress:
    """Report rows done and rows/s to ``stream`` at most every ``interval`` seconds.

    ``fraction`` (optional) returns the share of the input read so far, for a percentage and a bar.
    """

    def __init__(
        self,
        label: str,
        interval: float = 5.0,
        stream: TextIO | None = None,
        fraction: Callable[[], float | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        # A bar redraws in place, so it can afford to move more often than log lines.
        self.interval = min(interval, 0.5) if self.tty else interval
        self.fraction = fraction
        self.clock = clock
        self.rows = 0
        self.started = clock()
        self._last = self.started
        self._drawn = False

    def rate(self) -> float:
        elapsed = self.clock() - self.started
        return self.rows / elapsed if elapsed > 0 else 0.0

    def update(self, rows: int) -> None:
        self.rows += rows
        now = self.clock()
        if self.interval >= 0 and now - self._last >= self.interval:
            self._last = now
            self._write(final=False)

    def _line(self) -> str:
        share = self.fraction() if self.fraction else None
        text = f"{self.label}: {self.rows:,} rows, {self.rate():,.0f} rows/s"
        if share is not None:
            share = min(max(share, 0.0), 1.0)
            if self.tty:
                width = 24
                filled = int(round(share * width))
                return f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {share:4.0%} {self.rows:,} rows, {self.rate():,.0f} rows/s"
            text += f", {share:.0%} of the input read"
        return text

    def _write(self, final: bool) -> None:
        try:
            if self.tty:
                self.stream.write("\r" + self._line() + ("\n" if final else ""))
            else:
                self.stream.write(self._line() + "\n")
            self.stream.flush()
            self._drawn = True
        except (OSError, ValueError):  # a closed stderr must not fail the workload
            pass

    def done(self) -> None:
        """Write the final line (always, so short runs report too)."""
        self._write(final=True)
