"""Run code inside another process: the one owner of the remote scratch area.

In the spirit of CRIU's compel, in four steps, used by dump, the dirty-page
tracker, the copy-on-write child and restore alike:
  1. prepare: the process is ptrace-stopped (engine.Tracee);
  2. infect: map the scratch area, one private RWX anonymous mapping of
     SCRATCH_SIZE bytes, and write our code at its start;
  3. syscall: `Remote.t.call(...)` runs any syscall there; its pointer
     arguments go to the argument area (`put`/`get` at offsets into it);
  4. cure: unmap the scratch area.

A dump must never harm the job, even if snapshotd dies at any instruction
(issue 16). In a job's process (`infect`, `oneshot`), every injected call is
*self-restoring* (engine/csrc/inject.c snp_inject_safe): the code written
for it is "syscall; then back home", a trampoline that puts the thread's
signal mask and registers back and jumps to where it was, so a thread left
behind by a dead snapshotd returns to exactly where it was. The calls made
without a scratch area (the mmap of infect, the munmap of cure, the
tracker's one-off calls) run their trampoline from the unused tail of the
process's vDSO, zeroed again afterwards. Processes of our own (restore
stubs, the copy-on-write child) die with us (PTRACE_O_EXITKILL): they use
the plain "syscall; int3" (`infect_at`, `Remote.for_child`).

Layout of the scratch area (the same for every user):
  +0           "syscall; int3" (engine.SYSCALL_INT3): our own processes
  +SAFE        the self-restoring calls' trampoline (engine.SAFE_CODE_MAX)
  +CODE_ROOM   room for injected code up to the end of the first page
               (the copy-on-write child's copy loop, dump/childcopy.py)
  +ARGS        syscall arguments, up to the end of the mapping
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .._engine import lib
from . import engine, procfs
from . import syscalls as sc

SCRATCH_SIZE = 1 << 20  # restore passes whole arrays (sigactions, fd tables, set_tid lists) through it
SAFE = 64
CODE_ROOM = SAFE + engine.SAFE_CODE_MAX
ARGS = 4096
# how snp_inject_safe's trampolines begin: syscall, then rt_sigprocmask (or the clone test)
TRAMPOLINE_STARTS = (b"\x0f\x05\xb8\x0e\x00\x00\x00", b"\x0f\x05\x48\x89\xc1\xe3", b"\x0f\x05\x48\x89\xc7\xb8")
ARG = object()  # placeholder in Remote.ask's arguments: "the argument area's address"


class InjectError(Exception):
    pass


@dataclass
class Remote:
    """A stopped process with a scratch area: t runs syscalls in it."""

    t: engine.Tracee
    base: int  # the scratch mapping's address (SCRATCH_SIZE bytes)

    def ask(self, what: str, nr: int, *args, size: int, tid: int | None = None) -> bytes:
        """Run a syscall that writes `size` bytes at ARG (the argument area);
        return those bytes."""
        self.t.call(what, nr, *[self.t.scratch if a is ARG else a for a in args], tid=tid)
        return self.t.get(0, size)

    def for_child(self, child: int) -> "Remote":
        """The same scratch area in a child forked while it was mapped (its
        copy-on-write copy is at the same address); the child is ours."""
        return Remote(_tracee(child, self.base, safe=False), self.base)

    def cure(self) -> None:
        """Unmap the scratch area (from the vDSO tail: the call must not
        return into the page it unmaps)."""
        if self.t.code:
            self.t.code = 0
            r = oneshot(self.t.pid, sc.MUNMAP, self.base, SCRATCH_SIZE)
            if -4096 < r < 0:
                raise InjectError(f"cannot unmap the scratch area of PID {self.t.pid}: {os.strerror(-r)}")

    def cure_from_inside(self) -> None:
        """(Our own processes) unmap the scratch area with a call run from
        it: the thread comes back in a SIGSEGV stop (the int3 is gone),
        which detaching with signal 0 drops; its registers are set after."""
        r = self.t.syscall(sc.MUNMAP, self.base, SCRATCH_SIZE, expect_segv=True)
        self.t.code = 0
        if r < 0:
            raise InjectError(f"munmap of the scratch area failed: {os.strerror(-r)}")


def _tracee(pid: int, base: int, safe: bool) -> engine.Tracee:
    return engine.Tracee(pid, code=base + (SAFE if safe else 0), scratch=base + ARGS,
                         scratch_size=SCRATCH_SIZE - ARGS, safe=safe)


def _vdso_tail(pid: int) -> int:
    """Where a trampoline can run in pid without touching anything it uses:
    the last SAFE_CODE_MAX bytes of its vDSO, which are padding (zeros)."""
    n = engine.SAFE_CODE_MAX
    for m in procfs.maps(pid, with_flags=False):
        if m.path == "[vdso]":
            tail = engine.mem_read(pid, m.end - n, n)
            # zeros, or a trampoline a killed snapshotd left there (never run since)
            if tail != bytes(n) and not tail.startswith(TRAMPOLINE_STARTS):
                raise InjectError(f"PID {pid}: the end of its vDSO is not padding; no safe place to inject")
            return m.end - n
    raise InjectError(f"PID {pid} has no vDSO: no safe place to inject")


def oneshot(pid: int, nr: int, *args: int, tid: int | None = None, undo: int = 0) -> int:
    """One self-restoring syscall in a stopped process of the job that has no
    scratch area (raw result: negative errno on failure).  undo: what it
    makes, undone by the trampoline if we die before we have the result
    (engine.Tracee.syscall)."""
    code = _vdso_tail(pid)
    t = engine.Tracee(pid, code=code, safe=True)
    try:
        return t.syscall(nr, *args, tid=tid, undo=undo)
    finally:
        engine.mem_write(pid, code, bytes(engine.SAFE_CODE_MAX))


def infect(pid: int) -> Remote:
    """Map a scratch area anywhere in the stopped process pid (of the job:
    every call self-restoring)."""
    for lo in leftovers(pid):  # first: a new area next to an old one would merge with it
        oneshot(pid, sc.MUNMAP, lo, SCRATCH_SIZE)
    prot = sc.PROT_READ | sc.PROT_WRITE | sc.PROT_EXEC
    addr = oneshot(pid, sc.MMAP, 0, SCRATCH_SIZE, prot, sc.MAP_PRIVATE | sc.MAP_ANONYMOUS, -1, 0,
                   undo=lib.SNP_SAFE_UNMAP_RESULT)
    if -4096 < addr < 0:
        raise InjectError(f"cannot map a scratch area in PID {pid}: {os.strerror(-addr)}")
    engine.mem_write(pid, addr, engine.SYSCALL_INT3)
    return Remote(_tracee(pid, addr, safe=True), addr)


def leftovers(pid: int) -> list[int]:
    """Scratch areas a snapshotd killed between infect and cure left in pid:
    private anonymous RWX mappings of SCRATCH_SIZE that begin with our
    "syscall; int3"."""
    out = []
    for m in procfs.maps(pid, with_flags=False):
        if (m.end - m.start == SCRATCH_SIZE and m.perms == "rwxp" and m.inode == 0 and not m.path
                and engine.mem_read(pid, m.start, 3) == engine.SYSCALL_INT3):
            out.append(m.start)
    return out


def attach(pid: int, base: int) -> Remote:
    """The scratch area infect() mapped at base in pid, used again (after a
    release and a new freeze)."""
    return Remote(_tracee(pid, base, safe=True), base)


def infect_at(t: engine.Tracee, addr: int) -> Remote:
    """Map the scratch area at addr (MAP_FIXED: the caller chose a hole) in a
    stopped process of ours whose Tracee already has a code page (a restore
    stub)."""
    prot = sc.PROT_READ | sc.PROT_WRITE | sc.PROT_EXEC
    got = t.call("mmap scratch", sc.MMAP, addr, SCRATCH_SIZE, prot,
                 sc.MAP_PRIVATE | sc.MAP_ANONYMOUS | sc.MAP_FIXED, -1, 0)
    engine.mem_write(t.pid, got, engine.SYSCALL_INT3)
    return Remote(_tracee(t.pid, got, safe=False), got)
