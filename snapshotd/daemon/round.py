"""Take one round: every tree of a job frozen together, captured, resumed,
committed, and only then the round record (storage/rounds.py).

Order:
  1. freeze every member tree (ptrace-stop all threads of all its processes), checking that each PID is
     still the process that was registered (start time, /proc/PID/stat field 22) and, for a non-root
     owner, that no thread of the tree holds more than the owner has (kernel/privilege.py);
  2. capture each member into its own snapshot writer while all stay frozen;
  3. release every member (they run again);
  4. commit each snapshot (fsync + link), then write the round record.
If anything fails, nothing of the round stays visible: writers are aborted and
snapshots already committed for this round are unlinked.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from .. import dump as dumpmod
from ..dump.capture import Part, TreeCapture, capture_trees
from ..dump.pageread import prewarm_lent_buffers
from ..kernel import privilege, procfs
from ..storage import rounds as roundstore
from ..storage.fsutil import fsync_dir, temp_of_this_process


# Free space a round needs beyond its estimated size (bytes). HDF5 must not
# meet ENOSPC: after a failed write (HDF5 2.0, h5py 3.16) closing or freeing
# that file's objects, and even closing other files later, can segfault the
# process; so a round that would not fit fails before it starts.
# SNAPSHOTD_FREE_MARGIN overrides it (0: no check).
FREE_MARGIN = 256 << 10
FIRST_ESTIMATE = 1 << 20  # a tree with no previous snapshot

# Writers of rounds that failed inside HDF5: never closed nor freed (see
# above). A process with any must not write HDF5 again: the daemon re-execs.
POISONED: list = []


def hdf5_write_failed(e: BaseException) -> bool:
    text = str(e)
    return "file write failed" in text or "errno = 28" in text or \
        (isinstance(e, OSError) and e.errno == 28 and not isinstance(e, NoSpaceError))


class NoSpaceError(OSError):
    """The free-space check refused a round (nothing was written)."""


class StrangerError(dumpmod.DumpError):
    """The PID now belongs to another process than the registered one."""


class PrivilegedError(dumpmod.DumpError):
    """A process of the tree holds privileges its owner does not have (a
    set-id exec, a set-uid child, capabilities): privilege.py."""

    def __init__(self, msg: str, pid: int = 0):
        super().__init__(msg)
        self.pid = pid  # the member (tree root) whose tree it is


class GoneError(dumpmod.DumpError):
    """The process exited (or is a zombie)."""


def start_time(pid: int) -> int | None:
    """Start time of pid in clock ticks after boot (/proc/PID/stat field 22),
    or None if it is gone or a zombie. With the PID it names one process."""
    try:
        st = procfs.stat_fields(pid)
    except (procfs.ProcGone, ValueError):
        return None
    if st[2] in ("Z", "X"):
        return None
    return int(st[21])


@dataclass
class Member:
    pid: int
    start_time: int | None = None  # expected; None: do not check
    name: str = ""
    owner_uid: int = 0  # non-zero: every thread of the tree must hold no more than this uid has
    parent: str = ""  # previous snapshot of this tree (for incremental dumps, issue 4)
    tracker: object = None  # dirty-page tracker held between snapshots (issue 4)
    estimate: int = 0  # bytes its last snapshot stored (for the free-space check)


@dataclass
class MemberResult:
    pid: int
    snapshot: str
    name: str
    stats: dumpmod.DumpStats = field(default_factory=dumpmod.DumpStats)


def check_identity(m: Member, frozen=None) -> None:
    """m.pid is still the registered process; with frozen (its FrozenTree),
    no thread of the tree holds more than m.owner_uid has (a stopped thread
    cannot change its credentials: this holds until the release)."""
    st = start_time(m.pid)
    if st is None:
        raise GoneError(f"PID {m.pid} has exited")
    if m.start_time is not None and st != m.start_time:
        raise StrangerError(f"PID {m.pid} is now another process (start time {st}, registered {m.start_time})")
    if m.owner_uid and frozen is not None:
        why = privilege.frozen_excess(frozen.members, m.owner_uid)
        if why:  # e.g. it exec'd a set-uid program, or a child did
            raise PrivilegedError(f"the tree of PID {m.pid} holds privileges uid {m.owner_uid} does not have: {why}",
                                  pid=m.pid)


def check_free_space(store, members: list["Member"]) -> None:
    margin = int(os.environ.get("SNAPSHOTD_FREE_MARGIN", FREE_MARGIN))
    if margin <= 0:
        return
    need = margin + sum(m.estimate * 5 // 4 if m.estimate else FIRST_ESTIMATE for m in members)
    st = os.statvfs(store.snapdir)
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise NoSpaceError(28, f"No space left on device: store {store.path} has {free >> 10} KiB free, "
                               f"a round of {len(members)} tree(s) needs about {need >> 10} KiB")


def take_round(store, job: str, members: list[Member], uid: int = 0) -> tuple[roundstore.Round, list[MemberResult]]:
    """Snapshot all members as one round of job (the sequence of
    dump.capture_trees: every tree frozen before any is captured); returns
    the committed round record and per-member results."""
    t0 = time.monotonic()
    roundstore.check_job(job)
    for m in members:
        dumpmod.validate_target(m.pid)
        check_identity(m)
    store.ensure_writable()
    check_free_space(store, members)
    rid = roundstore.new_round_id()
    parts: list[Part] = []
    stats: list[dumpmod.DumpStats] = []
    # tracked incrementals copy their written pages while frozen
    prewarm_lent_buffers(max([dumpmod.expected_written(m.pid) for m in members if m.tracker is not None], default=0))

    def check_frozen(trees):
        for m, tree in zip(members, trees):
            check_identity(m, tree)  # a stopped process keeps its PID and credentials: holds until release

    try:
        for m in members:
            st = dumpmod.DumpStats()
            # the previous snapshot of this tree, if retention kept it, is the parent: the
            # store then writes only content it does not hold (the tracker says which
            # pages did not change at all)
            parent = m.parent if m.parent and os.path.isfile(store.snapshot_path(m.parent)) else None
            sid, writer = store.writer(m.pid, parent=parent, job=job, round=rid)
            st.tracker, st.capture = ("hash" if parent else "none"), "frozen"
            parts.append(Part(m.pid, sid, writer, TreeCapture(m.pid, writer, st, tracker=m.tracker, parent_sid=parent)))
            stats.append(st)
        frozen_s = capture_trees(parts, check_frozen)
        results = []
        for m, p, st in zip(members, parts, stats):
            st.frozen_s = frozen_s
            st.stored_bytes = p.writer.stored_bytes
            st.wall_s = time.monotonic() - t0
            results.append(MemberResult(m.pid, p.sid, m.name, st))
        rec = roundstore.write_round(store, job, rid, [
            {"snapshot": r.snapshot, "root_pid": r.pid, "name": r.name, "stored_bytes": int(r.stats.stored_bytes),
             "frozen_s": round(r.stats.frozen_s, 6)} for r in results], uid=uid)
    except BaseException as e:
        _undo(store, parts, e)
        raise
    return rec, results


def _undo(store, parts: list[Part], e: BaseException) -> None:
    """Nothing of a failed round stays visible: writers are aborted, and the
    snapshots already committed for it are unlinked."""
    if hdf5_write_failed(e):
        # do not touch the HDF5 objects again: keep them, and remove the files by
        # name: every temp file of this process (the caller runs one round at a
        # time; a writer that HDF5 could not even create leaves one behind too)
        POISONED.extend(p.writer for p in parts)
        for d in (store.snapdir, getattr(store, "packdir", store.snapdir)):
            for n in os.listdir(d):
                if temp_of_this_process(n):
                    try:
                        os.unlink(os.path.join(d, n))
                    except FileNotFoundError:
                        pass
    else:
        for p in parts:
            if not p.committed:
                p.writer.abort()
    committed = [p.sid for p in parts if p.committed]
    for sid in committed:  # snapshots of a round that never committed are not kept
        try:
            os.unlink(os.path.join(store.snapdir, sid + ".h5"))
        except FileNotFoundError:
            pass
    if committed:
        fsync_dir(store.snapdir)
