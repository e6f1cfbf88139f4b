"""A tree's capture (TreeCapture), the frozen part of one process's
(capture_one), and the freeze -> capture -> release -> commit sequence every
snapshot follows (capture_trees)."""
from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .. import fdkinds
from ..faults import crashpoint
from ..image import Image, Process, to_dict
from ..incremental import TreeTracker
from ..kernel import engine, netns, procfs
from ..kernel.procfs import vmflags_by_vma
from .cow import fork_held_child, release_child
from . import refuse
from .freeze import as_dump_error, freeze_tree
from .pages import AUTO_FROZEN_MAX_PAGES, check_vmflags_unchanged
from .process import ProcessDumper
from .stats import DumpError, DumpStats
from .tree import (FrozenTree, SharedPagesOnce, capture_pipes, dedupe_description_locks, link_shared_files,
                   zombie_record)

CAPTURES = ("auto", "cow", "frozen")
DEFAULT_CAPTURE = "auto"


class TreeCapture:
    """One tree's capture, in the two phases a freeze imposes: `frozen()` runs
    while every process is stopped (metadata, tracker, pages that must be read
    frozen, the copy-on-write child); `finish()` runs once they run again
    (pages from the COW child, deferred storing, unchanged pages) and returns
    the image; `committed(sid)` tells the tracker its new baseline; `close()`
    always releases the COW child.  capture_trees() drives it, for dump()
    (one tree) and for a round (daemon/round.py: every tree of a job)."""

    def __init__(self, pid: int, writer, stats: DumpStats, tracker=None, parent_sid: str | None = None,
                 capture: str = DEFAULT_CAPTURE, hint=None):
        self.pid, self.writer, self.stats = pid, writer, stats
        # a TreeTracker holds one tracker per process of the tree
        self.tree_tracker = tracker if isinstance(tracker, TreeTracker) else None
        if self.tree_tracker is not None:
            tracker = self.tree_tracker.for_pid(pid)
        self.tracker, self.parent_sid, self.capture = tracker, parent_sid, capture
        self.parts: list = []  # (dumper, plans, tracker) of tracked processes of a tree
        self.started: list = []  # trackers started at this snapshot
        if hint is None and tracker is not None and tracker.pid == pid and tracker.vmflags:
            # the flags read after the tracker's last snapshot: smaps walks every
            # page table (~12 ms per GiB), and finish() checks them anyway
            hint = tracker.vmflags
        if tracker is not None:
            tracker.vmflags = None  # until finish() reads them again
        self.hint = hint if hint is not None else vmflags_by_vma(pid)
        self.child = 0
        self.released = None  # release_soon()'s future
        self.check = None  # the VmFlags check started by finish()
        self.pd = None
        self.plans: list = []
        self.single = False
        self.procs: list[Process] = []
        self.netns = None  # netns.of_tree

    def frozen(self, tree_ctx: FrozenTree) -> None:
        pid, writer, stats, tracker = self.pid, self.writer, self.stats, self.tracker
        procs = self.procs
        members = tree_ctx.members
        self.single = len(members) == 1 and members[0][1] is not None
        refuse.check_tree(members)
        try:
            self.netns = netns.of_tree(members)
        except netns.NetnsError as e:
            raise DumpError(str(e)) from None
        if self.single:
            with as_dump_error(pid):
                proc, self.pd, self.plans, self.child = capture_one(
                    pid, members[0][1], writer, stats, tracker, self.parent_sid, self.capture, self.hint)
            procs.append(proc)
        else:
            self._frozen_tree(members)
        for p in procs:
            p.stopped = p.pid in tree_ctx.stopped
        try:
            link_shared_files(procs)
            dedupe_description_locks(procs)
            capture_pipes(procs, writer)
        except (OSError, procfs.ProcGone) as e:
            raise DumpError(f"dump of the pipes and shared files of PID {pid}'s tree failed: {e}") from None
        try:
            fdkinds.check_tree(procs)  # socket peers inside the tree
        except fdkinds.Unsupported as e:
            raise DumpError(str(e)) from None

    def _frozen_tree(self, members) -> None:
        """A tree of several processes, captured while frozen.  With a
        TreeTracker, each process whose tracker covers the time since the
        parent snapshot has only its written pages read (copied now, stored
        after the release); the others are read in full, pages several of
        them share copy-on-write once, and their trackers start now."""
        stats, tt = self.stats, self.tree_tracker
        if self.capture == "cow" or (self.tracker is not None and tt is None):
            stats.notes.append(f"a tree of {len(members)} processes: captured frozen"
                               + ("" if tt is not None else ", without dirty-page tracker"))
        if tt is None and self.tracker is not None:
            self.tracker.baseline = None
        shared_pages = SharedPagesOnce()
        tracked, hashed = [], []
        for p, tids in members:
            with as_dump_error(p):
                if tids is None:
                    self.procs.append(zombie_record(p))
                    continue
                tr = tt.for_pid(p) if tt is not None else None
                if tr is not None and tr.usable_for(p, self.parent_sid):
                    proc, pd, plans, _ = capture_one(p, tids, self.writer, stats, tr, self.parent_sid,
                                                      "auto", None, allow_cow=False)
                    self.parts.append((pd, plans, tr))
                    tracked.append(p)
                else:
                    if tr is not None:
                        tr.baseline = None
                        if tr.active:
                            tr.close()
                        tr.start(p)  # frozen: writes from now on are seen
                        self.started.append(tr)
                    proc = ProcessDumper(p, tids, self.writer, stats, shared_pages).dump()
                    hashed.append(p)
                self.procs.append(proc)
        stats.capture = "frozen"
        if tracked:
            stats.tracker = self.parts[0][2].name
            if hashed and self.parent_sid:
                stats.notes.append(f"{stats.tracker}: PIDs {', '.join(map(str, hashed))} not tracked since the "
                                   "parent (new or restarted): compared by hash, tracked from now")

    def finish(self) -> Image:
        """Store the pages (after the release).  The VmFlags check reads
        /proc/PID/smaps, which walks every page table (~12 ms per GiB): it
        runs in a thread meanwhile, and verify() waits for its verdict, which
        the writer asks for just before the snapshot becomes visible."""
        pd, stats = self.pd, self.stats
        if pd is not None:
            ex = ThreadPoolExecutor(1, thread_name_prefix="vmflags-check")
            self.check = ex.submit(check_vmflags_unchanged, self.pid, pd.flags_used, pd.flags_guessed)
            ex.shutdown(wait=False)
            try:
                self._store_pages()
            except BaseException:
                self.drop_check()  # the page error is the one to report
                raise
        else:
            self._store_pages()
        self.writer.attrs["tracker"] = stats.tracker
        self.writer.attrs["capture"] = stats.capture
        return Image(root_pid=self.pid, processes=self.procs, notes=list(stats.notes), netns=self.netns)

    def drop_check(self) -> None:
        """After a failure: wait for the VmFlags check, whose verdict no
        longer matters (it is never left running)."""
        if self.check is not None:
            self.check.exception()
            self.check = None

    def verify(self) -> None:
        """DumpError if the VmFlags used while frozen changed (see finish)."""
        if self.check is None:
            return
        now, error = self.check.result()
        self.check = None
        if self.tracker is not None:
            self.tracker.vmflags = now  # right for the next dump's hint, even after a failure
        if error:
            raise DumpError(error)

    def _store_pages(self) -> None:
        for pd, plans, _tr in self.parts:
            pd.pages.flush_deferred()
            pd.pages.add_unchanged(plans)
        pd = self.pd
        if self.child:
            try:
                pd.pages.capture_pages(self.plans, self.child, frozen=False)
            except engine.EngineError as e:
                raise DumpError(f"dump of PID {self.pid} failed reading its copy-on-write child: {e}") from None
        if pd is not None:
            pd.pages.flush_deferred()
            pd.pages.add_unchanged(self.plans)

    def committed(self, sid: str) -> None:
        if self.tracker is not None and self.single:
            self.tracker.baseline = sid
        for tr in [t for _pd, _pl, t in self.parts] + self.started:
            tr.baseline = sid
        if self.tree_tracker is not None:  # processes that left the tree
            self.tree_tracker.prune({p.pid for p in self.procs if p.threads})

    def release_soon(self) -> None:
        """Start releasing the COW child in a thread: the kernel tears its
        copy of the page tables down (~20 ms per GiB of 4 KiB pages) while
        the snapshot is committed.  close() waits for it."""
        if self.child:
            child, self.child = self.child, 0
            ex = ThreadPoolExecutor(1, thread_name_prefix="cow-release")
            self.released = ex.submit(release_child, self.pid, child, self.pd.scratch_range[0])
            ex.shutdown(wait=False)

    def close(self) -> None:
        self.release_soon()
        if self.released is not None:
            done, self.released = self.released, None
            try:
                done.result()
            except engine.EngineError as e:  # the process exited meanwhile: the snapshot stands
                self.stats.notes.append(f"PID {self.pid}: its copy-on-write child was killed but not reaped ({e})")


def capture_one(pid: int, tids: list[int], writer, stats: DumpStats, tracker, parent_sid, capture: str, hint,
                 allow_cow: bool = True):
    """The frozen part of a one-process dump: tracker, metadata, page plan,
    pages that must be read frozen, and the COW child if the capture needs
    one (never without allow_cow: "auto" then stores large reads while
    frozen).  Returns (process, dumper, plans, child PID or 0)."""
    use_tracker = tracker is not None and tracker.usable_for(pid, parent_sid)
    if use_tracker:
        stats.tracker = tracker.name
    changes = None
    if tracker is not None:
        tracker.baseline = None  # until this snapshot commits
        if use_tracker:
            changes = tracker.collect_and_reset()
            stats.notes += changes.notes
        else:
            if tracker.active:
                tracker.close()
            tracker.start(pid)
    pd = ProcessDumper(pid, tids, writer, stats, incremental=parent_sid is not None)
    pd.vmflags_hint = hint
    pd.map_scratch()
    child = 0
    try:
        proc = pd.dump_meta()
        mode = capture
        plans = pd.pages.plan_pages(proc.mappings, changes, "cow" if capture == "auto" else capture)
        defer = False
        if capture == "auto":
            small = pd.pages.pages_to_read(plans) <= AUTO_FROZEN_MAX_PAGES
            mode = "frozen" if small or not allow_cow else "cow"
            if mode == "frozen":
                for pl in plans:
                    pl.frozen = True
            # few pages read frozen are only copied into memory now; hashed and
            # stored once it runs again
            defer = small
        stats.capture = mode
        pd.pages.defer = defer
        pd.pages.capture_pages(plans, pid, frozen=True)
        if mode == "cow":
            child = fork_held_child(pd.remote)
    finally:
        if not child:
            pd.unmap_scratch()
    return proc, pd, plans, child


@dataclass
class Part:
    """One tree of a capture: the snapshot sid being written by writer, and
    its TreeCapture."""

    pid: int
    sid: str
    writer: object
    tc: TreeCapture
    image: Image | None = None
    committed: bool = False


def capture_trees(parts: list[Part], while_frozen=None, before_commit=None) -> float:
    """The one sequence of every snapshot, for dump() (one tree) and a round
    (daemon/round.py: every tree of a job):
      1. freeze every tree (all stopped before any is captured);
      2. while_frozen(frozen trees), if given (identity and privilege checks,
         the TCP peer lock), then capture each tree while all stay frozen;
      3. release them all (they run on);
      4. per tree: finish (pages read after the release), start releasing its
         copy-on-write child, before_commit(part), commit (the snapshot
         becomes visible only once its VmFlags check passed).
    Returns the seconds the trees were frozen.  On failure the checks in
    flight are waited for and the exception propagates: the caller aborts
    the writers not committed (part.committed false) and undoes the others if it
    must.  The copy-on-write children are always released."""
    try:
        with contextlib.ExitStack() as frozen:
            trees = []
            for p in parts:
                trees.append(freeze_tree(p.pid))
                frozen.callback(trees[-1].release)
            t0 = time.monotonic()
            crashpoint("dump-frozen")
            if while_frozen is not None:
                while_frozen(trees)
            for p, tree in zip(parts, trees):
                p.tc.frozen(tree)
            frozen_s = time.monotonic() - t0
        for p in parts:
            p.image = p.tc.finish()
            p.tc.release_soon()  # its COW child is read: released while the snapshot is committed
            if before_commit is not None:
                before_commit(p)
            p.writer.commit(to_dict(p.image), before_publish=p.tc.verify)
            p.committed = True
            p.tc.committed(p.sid)
    except BaseException:
        for p in parts:
            p.tc.drop_check()
        raise
    finally:
        for p in parts:
            p.tc.close()
    return frozen_s
