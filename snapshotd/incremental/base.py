"""The interface every dirty-page tracker implements (Tracker), what
collect_and_reset returns (Changes), and the trackers' logger.  The life
cycle and the trackers are described in incremental/__init__.py."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("snapshotd.incremental")


@dataclass
class Changes:
    written: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))  # sorted page addresses
    tracked: list = field(default_factory=list)  # sorted, disjoint (start, end) ranges
    notes: list = field(default_factory=list)  # what was uncertain and why (also logged)

    def note(self, msg: str) -> None:
        log.info(msg)
        self.notes.append(msg)


class TrackerUnavailable(Exception):
    pass


class Tracker:
    """Base class: the interface every tracker implements."""

    name = "?"

    def __init__(self):
        self.pid = 0
        self.baseline: str | None = None  # id of the snapshot the last reset corresponds to
        self.active = False
        self.vmflags: dict | None = None  # VmFlags by VMA, as checked after the last snapshot (dump.py)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, ""

    def start(self, pid: int) -> None:
        """Begin tracking pid (which must be frozen)."""
        self.pid = pid
        self.active = True

    def collect_and_reset(self) -> Changes:
        raise NotImplementedError

    def close(self) -> None:
        self.active = False
        self.baseline = None

    def usable_for(self, pid: int, parent: str | None) -> bool:
        """Whether this tracker's record covers the interval since snapshot `parent`."""
        return self.active and self.pid == pid and parent is not None and self.baseline == parent

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
