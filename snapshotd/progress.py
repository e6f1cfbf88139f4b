"""A one-line progress bar on stderr, shown only when stderr is a terminal
and the work is large enough to be worth watching (never with --json).

Work done inside the daemon has no terminal: a request handler routes the
bars of its thread to the client instead (`to_sink`), which draws one bar
for the whole request (daemon/server.py, cli.py)."""
from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager

MIN_BYTES = 256 << 20
ENABLED = True  # cli.py turns bars off for --json

_local = threading.local()


def min_bytes() -> int:
    """Smallest work shown (SNAPSHOTD_PROGRESS_MIN_BYTES overrides it)."""
    try:
        return int(os.environ.get("SNAPSHOTD_PROGRESS_MIN_BYTES", MIN_BYTES))
    except ValueError:
        return MIN_BYTES


@contextmanager
def to_sink(sink):
    """Within the block, bars created by this thread report to
    sink.add(label, nbytes, total) instead of drawing themselves."""
    prev = getattr(_local, "sink", None)
    _local.sink = sink
    try:
        yield sink
    finally:
        _local.sink = prev


def expect(total_bytes: int) -> None:
    """Announce the size of the whole request to this thread's sink (if any),
    so that its one bar does not restart with each part."""
    sink = getattr(_local, "sink", None)
    if sink is not None:
        sink.expect(total_bytes)


class Progress:
    def __init__(self, label: str, total_bytes: int):
        self.label = label
        self.total = max(total_bytes, 1)
        self.done = 0
        self.sink = getattr(_local, "sink", None)
        self.shown = self.sink is None and ENABLED and sys.stderr.isatty() and total_bytes >= min_bytes()
        self.last = 0.0
        self.width = 0

    def add(self, nbytes: int) -> None:
        self.done += nbytes
        if self.sink is not None:
            self.sink.add(self.label, nbytes, self.total)
            return
        self.show()

    def update(self, done: int, total: int | None = None) -> None:
        """Set the position directly (a bar drawn for the daemon's work)."""
        if total:
            self.total = max(total, 1)
            self.shown = self.shown or (self.sink is None and ENABLED and sys.stderr.isatty()
                                        and self.total >= min_bytes())
        self.done = done
        self.show(force=done >= self.total)

    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.shown and (force or now - self.last > 0.1):
            self.last = now
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            line = f"\r{self.label} [{bar:30}] {frac * 100:3.0f}% {self.done >> 20}/{self.total >> 20} MiB"
            self.width = max(self.width, len(line))
            sys.stderr.write(line)
            sys.stderr.flush()

    def close(self) -> None:
        if self.shown and self.last:
            sys.stderr.write("\r" + " " * max(self.width, len(self.label) + 60) + "\r")
            sys.stderr.flush()
