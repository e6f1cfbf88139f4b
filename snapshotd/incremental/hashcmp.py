"""Content-hash tracker: knows nothing between snapshots, so every region is
uncertain and dump compares each resident page's hash with the parent
snapshot's page at the same address.  Reads all memory, but stores only what
changed.  Always available; what the one-shot CLI uses."""
from __future__ import annotations

from .base import Changes, Tracker


class HashTracker(Tracker):
    name = "hash"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, "compares page hashes with the parent snapshot (reads all memory)"

    def collect_and_reset(self) -> Changes:
        return Changes()  # nothing tracked: hash everything
