"""A one-line progress bar on stderr, shown only when stderr is a terminal
and the work is large enough to be worth watching."""
from __future__ import annotations

import sys
import time

MIN_BYTES = 256 << 20


class Progress:
    def __init__(self, label: str, total_bytes: int):
        self.label = label
        self.total = max(total_bytes, 1)
        self.done = 0
        self.shown = sys.stderr.isatty() and total_bytes >= MIN_BYTES
        self.last = 0.0

    def add(self, nbytes: int) -> None:
        self.done += nbytes
        now = time.monotonic()
        if self.shown and now - self.last > 0.1:
            self.last = now
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r{self.label} [{bar:30}] {frac * 100:3.0f}% {self.done >> 20}/{self.total >> 20} MiB")
            sys.stderr.flush()

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * (len(self.label) + 60) + "\r")
            sys.stderr.flush()
