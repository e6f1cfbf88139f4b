"""Restore of a whole process tree: every process with its PID, as a child of
its original parent, in its process group and session; zombies; then each
live process rebuilt by restore.Restorer, and all resumed together.

How a child is created: its parent's stub forks it.  We inject
clone3(set_tid=[PID], exit_signal=SIGCHLD) into the parent while the parent is
still the bare stub (before any of its image is rebuilt).  The child is then a
copy of the stub -- the same nearly empty address space, stopped under our
ptrace (PTRACE_O_TRACEFORK, inherited by every stub) -- and a real child of
its parent, which can waitpid() it after the restore.  Why this way: the
kernel only lets a process's parent be the process that forked it (or
CLONE_PARENT's caller's parent, which gives siblings), and forking from the
stub avoids copying a rebuilt address space.  The stub holds only the
parent's private anonymous memory by then (restore_cow.py: the child shares
it copy-on-write).  Nothing else is inherited on purpose: what processes
share (pipes, file descriptions, shared memory) is created once on our side
and handed to each of them (restore_shared.py).

Order:
  1. the root stub (spawn.c: reparented to init, never our child; it leads a
     new session and process group);
  2. the skeleton, depth first.  A parent's private anonymous memory is
     mapped and filled in its stub before it forks, so that its children
     share it copy-on-write as after the original forks (restore_cow.py).
     Sessions are only inherited, so a session
     leader calls setsid() right after its own fork, and its children that
     stayed in the parent's previous session are forked before that;
  3. process groups: group leaders setpgid(0, 0), then members join.  A group
     whose leader is gone (the leader exited, members live on) gets a helper
     with the leader's PID: forked from a member, setpgid(0, 0), members join,
     then the helper is killed and reaped inside its parent.  A session whose
     leader is gone is made the same way, during step 2: a helper with the
     leader's PID calls setsid() and forks the members with CLONE_PARENT
     (fork_in_lost_session);
  4. zombies: each zombie's stub exits with the recorded status (exit_group,
     or the terminating signal with core dumps off); the SIGCHLD this sends to
     the parent is taken back (rt_sigtimedwait) so that the parent sees only
     the signals it had pending at dump time;
  5. every live process is rebuilt in its stub, parents first;
  6. all are resumed (detached), children first.
A failure at any step SIGKILLs every process created so far: no
half-restored process of the tree stays behind.

The root's session and group may have been led by a process outside the tree
(e.g. the shell that started it): the restored root leads its own, and the
members that were in the root's session or group follow it there.
"""
from __future__ import annotations

import os
import resource
import signal
import struct
import time

from ..kernel import engine, procfs
from .. import fdkinds
from ..kernel import syscalls as sc
from .._engine import ffi, lib
from ..image import Image, Process
from .process import Restorer, RestoreError, RestoreStats, _check_pids_free
from .cow import CowPlan
from .shared import SharedObjects


class TreeRestorer:
    def __init__(self, img: Image, reader, stats: RestoreStats, pidns: bool | None = None):
        """pidns: True forces a new PID namespace, False forbids it, None
        uses one only if an original PID is taken."""
        self.pidns = pidns
        self.init_pid = 0  # the init of the new PID namespace, as we see it
        self.img = img
        self.reader = reader
        self.stats = stats
        self.procs = img.processes
        self.root = self.procs[0]
        self.by_pid = {p.pid: p for p in self.procs}
        self.kids: dict[int, list[Process]] = {p.pid: [] for p in self.procs}
        for p in self.procs[1:]:
            if p.ppid not in self.kids:
                raise RestoreError(f"the snapshot is inconsistent: PID {p.pid}'s parent {p.ppid} is not in it")
            self.kids[p.ppid].append(p)
        self.shared = SharedObjects(reader, self.procs)
        self.cow = self.shared.cow = CowPlan(reader)
        self.tracees: dict[int, engine.Tracee] = {}  # stubs we trace
        self.created: list[int] = []  # every process we made, for cleanup
        self.code = 0
        self.outer = self.shared.outer  # PID in the image -> PID as we see it
        self.lost_sessions: set[int] = set()  # sessions recreated by a helper (fork_in_lost_session)

    def o(self, pid: int) -> int:
        """The PID we use for ptrace, /proc and kill: the same as in the image
        unless the tree lives in a new PID namespace."""
        return self.outer[pid]

    # -- ids as they will be after restore --
    def want_sid(self, p: Process) -> int:
        return self.root.pid if p.sid == self.root.sid else p.sid

    def want_pgid(self, p: Process) -> int:
        return self.root.pid if p.pgid == self.root.pgid else p.pgid

    # -- injection helpers working in a bare stub --
    def _stack(self, pid: int, data: bytes) -> int:
        """Put data on the stub's stack, well below its stack pointer (the
        stub runs no code of its own that would use it)."""
        addr = (engine.getregs(self.o(pid)).rsp - 2048) & ~15
        engine.mem_write(self.o(pid), addr, data)
        return addr

    def fork(self, parent: int, child: int, flags: int = 0) -> None:
        """Inject clone3(set_tid=[child]) into the stub of parent (with
        CLONE_PARENT the child is parent's sibling; clone3 then wants
        exit_signal 0 and the child inherits parent's)."""
        t = self.tracees[parent]
        base = self._stack(parent, struct.pack("<i", child) + bytes(12))
        args = struct.pack("<11Q", flags, 0, 0, 0, 0 if flags & sc.CLONE_PARENT else sc.SIGCHLD, 0, 0, 0, base, 1, 0)
        addr = base + 16
        engine.mem_write(self.o(parent), addr, args)
        got = t.syscall(sc.CLONE3, addr, len(args))
        if got == -sc.EEXIST:
            if child in self.by_pid:
                _check_pids_free(self.by_pid[child])
            raise RestoreError(f"cannot restore: PID {child} is in use")
        if got < 0:
            raise RestoreError(f"cannot create PID {child} as a child of PID {parent}: {os.strerror(-got)}")
        seen = t.last_new_thread() or got  # PTRACE_GETEVENTMSG: its PID as we see it
        self.created.append(seen)
        self.outer[child] = seen
        if got != child:
            raise RestoreError(f"PID {parent} forked PID {got} instead of {child}")
        engine.check(lib.snp_adopt_child(seen), f"take over the new process {child}")
        self.tracees[child] = engine.Tracee(seen, code=self.code)
        self.cow.inherit(parent, child)

    def create(self, p: Process, s_in: int) -> None:
        """Create p's children (p's stub exists, in session s_in)."""
        kids = self.kids[p.pid]
        if any(not c.zombie for c in kids):  # children share its memory copy-on-write
            self.cow.premap(self.tracees[p.pid], self.o(p.pid), p)
        s_after = s_in
        early: list[Process] = []
        if p is not self.root and self.want_sid(p) == p.pid:
            early = [c for c in kids if self.want_sid(c) == s_in != c.pid]
            for c in early:
                self.fork(p.pid, c.pid)
                self.create(c, s_in)
            self.tracees[p.pid].call("setsid", sc.SETSID)
            s_after = p.pid
        elif self.want_sid(p) != s_in:
            raise RestoreError(f"cannot recreate the session {p.sid} of PID {p.pid}: its leader is not in the "
                               f"snapshot and PID {p.ppid} (its parent) is in another session")
        lost: dict[int, list[Process]] = {}  # session whose leader exited -> p's children in it
        for c in kids:
            s = self.want_sid(c)
            if c not in early and s not in (s_after, c.pid) and s not in self.by_pid:
                lost.setdefault(s, []).append(c)
        for sid, members in lost.items():
            self.fork_in_lost_session(p, members, sid)
        for c in kids:
            if c in early:
                continue
            if any(c in m for m in lost.values()):
                self.create(c, self.want_sid(c))
                continue
            self.fork(p.pid, c.pid)
            self.create(c, s_after)

    def fork_in_lost_session(self, parent: Process, members: list[Process], sid: int) -> None:
        """members (children of parent) are in session sid, whose leader has
        exited (e.g. it called setsid(), forked them and exited; a subreaper
        in the tree adopted them).  Sessions are only inherited, so: a
        helper with the leader's PID, forked by parent, calls setsid() (now
        sid leads session and group sid) and forks each member with
        CLONE_PARENT, which makes it parent's child but in the helper's
        session and group; then the helper exits and parent reaps it.  The
        session's other members descend from these."""
        if sid in self.lost_sessions:
            raise RestoreError(f"cannot recreate the session {sid} (its leader exited): processes of it have different "
                               "parents outside it, which snapshotd cannot recreate")
        self.lost_sessions.add(sid)
        self.fork(parent.pid, sid)
        self.tracees[sid].call("setsid", sc.SETSID)
        for c in members:
            self.fork(sid, c.pid, sc.CLONE_PARENT)
        self.drop_helper(sid, parent.pid)

    def drop_helper(self, h: int, parent: int) -> None:
        """Kill helper h and reap it inside its parent (which must not see
        it: its SIGCHLD is taken back)."""
        os.kill(self.o(h), signal.SIGKILL)
        lib.snp_wait_stop(self.o(h), ffi.new("int *"))  # its exit, as its tracer
        self.tracees.pop(h)
        self.created.remove(self.o(h))
        r = self.tracees[parent].syscall(sc.WAIT4, h, 0, sc.WALL, 0)
        if r != h:
            raise RestoreError(f"cannot reap the helper {h}: {os.strerror(-r) if r < 0 else r}")
        self.drain_sigchld(parent)

    def set_groups(self) -> None:
        helpers: dict[int, int] = {}  # pgid -> the member that forked its helper
        for p in self.procs:
            if self.want_pgid(p) == p.pid and self.want_sid(p) != p.pid:
                self.tracees[p.pid].call("setpgid", sc.SETPGID, 0, 0)
        for p in self.procs:
            g = self.want_pgid(p)
            if g == p.pid:
                continue
            if int(procfs.stat_fields(self.o(p.pid))[4]) == self.outer.get(g):
                continue  # there already (inherited from a session helper, whose group outlives it)
            if g not in self.by_pid and g not in helpers:
                # the group outlived its leader: a helper with the leader's PID
                # creates it, as a child of this member (same session)
                self.fork(p.pid, g)
                self.tracees[g].call("setpgid", sc.SETPGID, 0, 0)
                helpers[g] = p.pid
            self.tracees[p.pid].call(f"setpgid(0, {g})", sc.SETPGID, 0, g)
        for g, parent in helpers.items():
            self.drop_helper(g, parent)

    def verify_ids(self) -> None:
        for p in self.procs:
            st = procfs.stat_fields(self.o(p.pid))
            got = (int(st[4]), int(st[5]))  # as we see them
            want = (self.o(self.want_pgid(p)), self.o(self.want_sid(p)))
            if got != want:
                raise RestoreError(f"PID {p.pid} came back in process group {got[0]}, session {got[1]} instead of "
                                   f"{want[0]}, {want[1]}: snapshotd cannot recreate that arrangement")

    def drain_sigchld(self, pid: int) -> None:
        """Take back the SIGCHLD our helper or zombie sent to pid."""
        addr = self._stack(pid, struct.pack("<Qqq", 1 << (sc.SIGCHLD - 1), 0, 0))
        r = self.tracees[pid].syscall(sc.RT_SIGTIMEDWAIT, addr, 0, addr + 8, 8)
        if r not in (sc.SIGCHLD, -sc.EAGAIN):
            raise RestoreError(f"rt_sigtimedwait in PID {pid} failed: {os.strerror(-r)}")

    def make_zombies(self) -> None:
        parents = []
        for z in (p for p in self.procs if p.zombie):
            t = self.tracees.pop(z.pid)
            t.call("PR_SET_NAME", sc.PRCTL, sc.PR_SET_NAME, self._stack(z.pid, z.comm.encode()[:15] + b"\0"))
            st = z.exit_status
            zp = self.o(z.pid)
            if st & 0x7F == 0:  # exited: run exit_group(code) on the way out of this stop
                regs = engine.getregs(zp)
                regs.set("rip", self.code)
                regs.set("rax", sc.EXIT_GROUP)
                regs.set("rdi", (st >> 8) & 0xFF)
                regs.set("orig_rax", -1)
                engine.setregs(zp, regs)
                engine.detach(zp, 0)
            else:  # killed by a signal: deliver it, default action, no core file
                resource.prlimit(zp, resource.RLIMIT_CORE, (0, 0))
                engine.setsigmask(zp, 0)
                engine.detach(zp, st & 0x7F)
            end = time.monotonic() + 5
            while procfs.stat_fields(zp)[2] != "Z":
                if time.monotonic() > end:
                    raise RestoreError(f"zombie {z.pid} did not exit")
                time.sleep(0.001)
            if z.ppid not in parents:
                parents.append(z.ppid)
        for pid in parents:
            self.drain_sigchld(pid)

    def check_free(self) -> None:
        for p in self.procs:
            _check_pids_free(p)

    def choose_pidns(self) -> None:
        """Decide whether the tree needs a new PID namespace (a PID is taken)."""
        if self.pidns is None:
            try:
                self.check_free()
                self.pidns = False
            except RestoreError as e:
                self.pidns = True
                self.shared.notes.append(f"{str(e)[len('cannot restore: '):]}: restoring into a new PID namespace, "
                                         "where the tree keeps its PIDs")
        elif not self.pidns:
            self.check_free()

    def run(self) -> int:
        self.choose_pidns()
        restorers: list[Restorer] = []
        try:
            out, init = ffi.new("int *"), ffi.new("int *")
            r = lib.snp_spawn_stub(self.root.pid, 1 if self.pidns else 0, out, init)
            self.init_pid = init[0]
            if r == -sc.EEXIST:
                _check_pids_free(self.root)
                raise RestoreError(f"cannot restore: PID {self.root.pid} is in use")
            engine.check(r, f"create a process with PID {self.root.pid}")
            self.created.append(out[0])
            self.outer[self.root.pid] = out[0]
            self.code = engine.getregs(out[0]).rip  # the stub stops just after its int3, at "syscall; int3"
            self.tracees[self.root.pid] = engine.Tracee(out[0], code=self.code)
            if (self.root.sid, self.root.pgid) != (self.root.pid, self.root.pid):
                self.shared.notes.append(
                    f"PID {self.root.pid} was in session {self.root.sid}, process group {self.root.pgid} (led from "
                    f"outside the snapshot); it now leads its own session and group, with the members that shared them")
            self.create(self.root, self.root.pid)
            self.set_groups()
            self.verify_ids()
            self.make_zombies()
            for p in self.procs:
                if p.zombie:
                    continue
                rs = Restorer(p, self.reader, self.stats, self.shared)
                rs.attach(self.o(p.pid), self.code)
                rs.build()
                restorers.append(rs)
            try:
                fdkinds.after_tree(self.shared)  # TCP peers in different processes
            except fdkinds.Failed as e:
                raise RestoreError(f"cannot restore {e}") from None
            for rs in reversed(restorers):
                rs.resume()
            for rs in restorers:  # stopped when dumped (SIGSTOP, scontrol suspend): stopped again
                if rs.p.stopped:
                    os.kill(rs.s, signal.SIGSTOP)
        except engine.EngineError as e:
            self.kill_all()
            raise RestoreError(f"restore of PID {self.root.pid}'s tree failed: {e}") from None
        except BaseException:
            self.kill_all()
            raise
        finally:
            self.shared.close()
        self.stats.pids = [p.pid for p in self.procs]
        self.stats.pidns = bool(self.pidns)
        self.stats.outside_pids = [self.o(p.pid) for p in self.procs]
        return self.root.pid

    def kill_all(self) -> None:
        for pid in reversed(self.created):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in reversed(self.created):
            # as tracer (fails harmlessly if detached); a traced leader's exit
            # is only reported once its other threads are reaped: them first
            try:
                tids = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
            except OSError:
                tids = []
            for tid in tids:
                lib.snp_wait_stop(tid, ffi.new("int *"))
            lib.snp_wait_stop(pid, ffi.new("int *"))
        self.created = []
        # the namespace's init exits by itself once it has no child left

