"""One set of buffers kept for the next user in this process.

A dump reads, copies and compresses pages through buffers of tens of MiB,
and the daemon dumps every few minutes: memory already faulted in is
reused instead of faulted in again, which is slow and varies on VMs."""
from __future__ import annotations

import threading


class Spare:
    """At most one idle set of buffers, for whoever asks next."""

    def __init__(self):
        self._kept = None
        self._lock = threading.Lock()

    def take(self, make, fits=None):
        """The kept set if there is one (and fits(it)), else make()."""
        with self._lock:
            kept = self._kept
            if kept is not None and (fits is None or fits(kept)):
                self._kept = None
                return kept
        return make()

    def give(self, bufs) -> None:
        """Keep bufs (idle from now on), unless a set is kept already."""
        with self._lock:
            if self._kept is None:
                self._kept = bufs
