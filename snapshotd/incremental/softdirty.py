"""Soft-dirty tracker: `echo 4 > /proc/PID/clear_refs` clears the soft-dirty
bit of every pte and marks VMAs VM_SOFTDIRTY; /proc/PID/pagemap bit 55 is then
set for every page written (or moved by mremap, or in a new VMA) since.
Needs CONFIG_MEM_SOFT_DIRTY, which this kernel (and arm64) lacks: the tracker
is only chosen where its probe (kernel/probes.py) sees bit 55 work."""
from __future__ import annotations

import os

import numpy as np

from ..kernel import probes, procfs
from ..kernel import syscalls as sc
from .base import Changes, Tracker

PM_SOFT_DIRTY = np.uint64(1 << 55)
PM_PRESENT_OR_SWAP = np.uint64(3 << 62)


class SoftDirtyTracker(Tracker):
    name = "soft-dirty"
    _available = None

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if cls._available is None:
            try:
                cls._available = probes.probe_soft_dirty()[:2]
            except Exception as e:  # noqa: BLE001
                cls._available = (False, str(e))
        return cls._available

    def _clear(self) -> None:
        with open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("4")  # CLEAR_REFS_SOFT_DIRTY

    def start(self, pid: int) -> None:
        super().start(pid)
        self._clear()

    def collect_and_reset(self) -> Changes:
        ch = Changes()
        written = []
        fd = os.open(f"/proc/{self.pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        try:
            for m in procfs.maps(self.pid, with_flags=False):
                if m.perms[3] != "p" or m.path in procfs.SPECIAL_MAPS:
                    continue
                # soft-dirty covers every private mapping, new or moved ones included
                ent = np.frombuffer(os.pread(fd, (m.end - m.start) // sc.PAGE * 8, m.start // sc.PAGE * 8), np.uint64)
                sel = np.nonzero((ent & PM_SOFT_DIRTY) != 0)[0]
                written.append(np.uint64(m.start) + sel.astype(np.uint64) * np.uint64(sc.PAGE))
                ch.tracked.append((m.start, m.end))
        finally:
            os.close(fd)
        self._clear()
        ch.written = np.sort(np.concatenate(written)) if written else np.empty(0, np.uint64)
        return ch
