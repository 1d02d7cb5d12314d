"""Progress of a batch run: a redrawn bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Rows done, rows/s and ETA (when the total is known: Parquet metadata has it, CSV not).

    On a TTY the line is redrawn in place at most ``redraw`` times a second; otherwise (logs
    of a CronJob or an Airflow task) a full line is written every ``interval`` seconds."""

    def __init__(
        self,
        stream: TextIO,
        total: int | None,
        *,
        tty: bool | None = None,
        interval: float = 10.0,
        redraw: float = 0.2,
    ) -> None:
        self._stream = stream
        self.total = total
        self.tty = stream.isatty() if tty is None else tty
        self._interval = redraw if self.tty else interval
        self._start = time.perf_counter()
        self._last = self._start
        self.rows = 0
        self.rejected = 0

    def line(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        rate = self.rows / elapsed
        parts = [f"{self.rows:,}" + (f"/{self.total:,} rows" if self.total else " rows")]
        if self.total:
            share = min(self.rows / self.total, 1.0)
            if self.tty:
                filled = int(share * 30)
                parts.insert(0, "[" + "#" * filled + "." * (30 - filled) + "]")
            parts.append(f"{share:6.1%}")
        parts.append(f"{rate:,.0f} rows/s")
        if self.rejected:
            parts.append(f"{self.rejected:,} rejected")
        if self.total and rate > 0:
            parts.append(f"ETA {_duration((self.total - self.rows) / rate)}")
        parts.append(f"elapsed {_duration(elapsed)}")
        return "  ".join(parts)

    def update(self, rows: int, rejected: int = 0) -> None:
        self.rows += rows
        self.rejected += rejected
        now = time.perf_counter()
        if now - self._last >= self._interval:
            self._last = now
            self._write(now)

    def _write(self, now: float) -> None:
        if self.tty:
            self._stream.write("\r\x1b[K" + self.line(now))
        else:
            self._stream.write(self.line(now) + "\n")
        self._stream.flush()

    def finish(self) -> float:
        """Draw the last state (ending the TTY line); returns the seconds since the start."""
        now = time.perf_counter()
        if self.tty:
            self._write(now)
            self._stream.write("\n")
            self._stream.flush()
        return now - self._start
