"""Copy-on-write capture: a consistent copy of a frozen process's private
memory that can be read after the process runs again.

In the frozen process, inject clone(CLONE_FILES | CLONE_FS): a child C with
a copy-on-write copy of the address space, the SAME fd table (so no file,
pipe end or socket gains a reference while C lives: a peer still sees EOF
when the process closes its end) and exit signal 0 (no SIGCHLD; waitpid(-1)
in the process does not see it).  The thread that clones is ptrace-seized with
PTRACE_O_TRACECLONE, so C is attached to us and starts stopped: it never runs
a single instruction.  PTRACE_O_EXITKILL (inherited by C) kills C if
snapshotd dies.  The process resumes at once; C copies its pages for us
(childcopy.py), or we read them through /proc/C/mem (process_vm_readv
would unshare every page C shares with the process); then SIGKILL C (in a
thread, while the snapshot is committed), and reap it by injecting
wait4(C, NULL, __WALL|WNOHANG) into the process (its parent).

Not copied by fork, so read while frozen instead: MAP_SHARED mappings (C sees
the process's later writes), MADV_DONTFORK ("dc": absent in C) and
MADV_WIPEONFORK ("wf": zeros in C) areas.
The freeze is then the clone itself (page-table copy: ~24 ms per GiB of 4 KiB
pages here, ~1-3 ms with huge pages) instead of a copy of all memory.
"""
from __future__ import annotations

import os
import signal

from ..kernel import engine
from ..kernel import syscalls as sc
from .._engine import ffi, lib


def needs_frozen_read(shared: bool, vmflags) -> bool:
    """Whether a mapping's pages must be read while the process is frozen."""
    return shared or "dc" in vmflags or "wf" in vmflags


def fork_held_child(t: engine.Tracee) -> int:
    """Clone the frozen process t (its main thread, stopped, with a code
    page set up); returns the PID of the stopped child."""
    engine.check(lib.snp_set_ptrace_options(t.pid, sc.PTRACE_O_TRACECLONE | sc.PTRACE_O_EXITKILL), "PTRACE_SETOPTIONS")
    r = t.syscall(sc.CLONE, sc.CLONE_FILES | sc.CLONE_FS, 0, 0, 0, 0)  # low byte 0: exit signal 0
    child = t.last_new_thread()
    if r < 0:
        raise engine.EngineError(-r, f"clone in PID {t.pid}: {os.strerror(-r)}")
    if child <= 0:
        child = r
    # the auto-attached child reports its initial PTRACE_EVENT_STOP
    engine.check(lib.snp_wait_stop(child, ffi.NULL), f"wait for the capture child {child}")
    return child


def release_child(pid: int, child: int, code_page: int, code_size: int) -> None:
    """Kill the capture child, reap it inside pid (its parent), and unmap
    pid's code page (it executes there, so it returns into SIGSEGV, which is
    not delivered).  Only the main thread is stopped for this."""
    try:
        os.kill(child, signal.SIGKILL)
    except ProcessLookupError:
        pass
    lib.snp_wait_stop(child, ffi.NULL)  # the exit, as its tracer
    try:
        engine.seize(pid)
    except engine.EngineError:
        return  # the process is gone: so is its zombie child
    try:
        t = engine.Tracee(pid, code=code_page)
        t.syscall(sc.WAIT4, child, 0, sc.WNOHANG | sc.WALL, 0)
        t.syscall(sc.MUNMAP, code_page, code_size, expect_segv=True)
    finally:
        engine.detach(pid)
