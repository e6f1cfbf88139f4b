"""What a dump reports: DumpError (one line, the process left as it was) and
DumpStats (times, sizes, how pages were found and captured)."""
from __future__ import annotations

from dataclasses import dataclass, field


class DumpError(Exception):
    pass


@dataclass
class DumpStats:
    frozen_s: float = 0.0
    wall_s: float = 0.0
    pages: int = 0
    stored_bytes: int = 0
    resident_bytes: int = 0
    pids: list = field(default_factory=list)  # the tree's processes, root first
    notes: list = field(default_factory=list)
    tracker: str = ""  # how changed pages were found: "uffd-wp", "soft-dirty", "hash", "none" (full)
    capture: str = ""  # "cow" or "frozen" (what "auto" chose)
    dirty_pages: int = 0  # pages the tracker reported written (and present)
    unchanged_pages: int = 0  # pages the tracker declared unchanged since the parent
    new_pages: int = 0  # page contents the store did not hold yet (stored by this dump)
