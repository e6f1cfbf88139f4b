"""Run code inside another process: the one owner of the remote scratch area.

In the spirit of CRIU's compel, in four steps, used by dump, the copy-on-write
child and restore alike:
  1. prepare: the process is ptrace-stopped (engine.Tracee); until it has a
     code page, one syscall can run by borrowing the bytes at its rip
     (`Tracee.inject_at_rip`, engine/csrc/inject.c);
  2. infect: map the scratch area, one private RWX anonymous mapping of
     SCRATCH_SIZE bytes, and write "syscall; int3" at its start;
  3. syscall: `Remote.t.call(...)` runs any syscall there; its pointer
     arguments go to the argument area (`put`/`get` at offsets into it);
  4. cure: unmap the scratch area, from outside (borrowing rip again) or from
     inside (a restored process's last injected call: it returns into a
     SIGSEGV stop, which the detach drops).

Layout of the scratch area (the same for every user):
  +0           "syscall; int3" (engine.SYSCALL_INT3)
  +CODE_ROOM   room for injected code up to the end of the first page
               (the copy-on-write child's copy loop, dump/childcopy.py)
  +ARGS        syscall arguments, up to the end of the mapping
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from . import engine
from . import syscalls as sc

SCRATCH_SIZE = 1 << 20  # restore passes whole arrays (sigactions, fd tables, set_tid lists) through it
CODE_ROOM = 64
ARGS = 4096
ARG = object()  # placeholder in Remote.ask's arguments: "the argument area's address"


class InjectError(Exception):
    pass


@dataclass
class Remote:
    """A stopped process with a scratch area: t runs syscalls in it."""

    t: engine.Tracee
    base: int  # the scratch mapping's address (SCRATCH_SIZE bytes)

    @property
    def code_room(self) -> int:
        return self.base + CODE_ROOM

    def ask(self, what: str, nr: int, *args, size: int, tid: int | None = None) -> bytes:
        """Run a syscall that writes `size` bytes at ARG (the argument area);
        return those bytes."""
        self.t.call(what, nr, *[self.t.scratch if a is ARG else a for a in args], tid=tid)
        return self.t.get(0, size)

    def for_child(self, child: int) -> "Remote":
        """The same scratch area in a child forked while it was mapped (its
        copy-on-write copy is at the same address)."""
        return Remote(_tracee(child, self.base), self.base)

    def cure(self) -> None:
        """Unmap the scratch area from outside (rip borrowed once more)."""
        if self.t.code:
            r = self.t.inject_at_rip(sc.MUNMAP, self.base, SCRATCH_SIZE)
            self.t.code = 0
            if -4096 < r < 0:
                raise InjectError(f"cannot unmap the scratch area of PID {self.t.pid}: {os.strerror(-r)}")

    def cure_from_inside(self) -> None:
        """Unmap the scratch area with a call run from it: the thread comes
        back in a SIGSEGV stop (the int3 is gone), which detaching with
        signal 0 drops; its registers are set afterwards."""
        r = self.t.syscall(sc.MUNMAP, self.base, SCRATCH_SIZE, expect_segv=True)
        self.t.code = 0
        if r < 0:
            raise InjectError(f"munmap of the scratch area failed: {os.strerror(-r)}")


def _tracee(pid: int, base: int) -> engine.Tracee:
    return engine.Tracee(pid, code=base, scratch=base + ARGS, scratch_size=SCRATCH_SIZE - ARGS)


def _write_code(pid: int, base: int) -> None:
    engine.mem_write(pid, base, engine.SYSCALL_INT3)


def infect(pid: int) -> Remote:
    """Map a scratch area anywhere in the stopped process pid, running the
    mmap at its rip (a process that has no code page of ours yet)."""
    t = engine.Tracee(pid)
    prot = sc.PROT_READ | sc.PROT_WRITE | sc.PROT_EXEC
    addr = t.inject_at_rip(sc.MMAP, 0, SCRATCH_SIZE, prot, sc.MAP_PRIVATE | sc.MAP_ANONYMOUS, -1, 0)
    if -4096 < addr < 0:
        raise InjectError(f"cannot map a scratch area in PID {pid}: {os.strerror(-addr)}")
    _write_code(pid, addr)
    return Remote(_tracee(pid, addr), addr)


def infect_at(t: engine.Tracee, addr: int) -> Remote:
    """Map the scratch area at addr (MAP_FIXED: the caller chose a hole) in a
    stopped process whose Tracee already has a code page (a restore stub)."""
    prot = sc.PROT_READ | sc.PROT_WRITE | sc.PROT_EXEC
    got = t.call("mmap scratch", sc.MMAP, addr, SCRATCH_SIZE, prot,
                 sc.MAP_PRIVATE | sc.MAP_ANONYMOUS | sc.MAP_FIXED, -1, 0)
    _write_code(t.pid, got)
    return Remote(_tracee(t.pid, got), got)
