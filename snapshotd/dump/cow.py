"""Copy-on-write capture: a consistent copy of a frozen process's private
memory that can be read after the process runs again.

In the frozen process, inject clone(CLONE_FILES | CLONE_FS): a child C with
a copy-on-write copy of the address space, the SAME fd table (so no file,
pipe end or socket gains a reference while C lives: a peer still sees EOF
when the process closes its end) and exit signal 0 (no SIGCHLD; waitpid(-1)
in the process does not see it).  The thread that clones is ptrace-seized with
PTRACE_O_TRACECLONE, so C is attached to us and starts stopped: it never runs
a single instruction.  PTRACE_O_EXITKILL, set on C, kills C if snapshotd
dies (and a C left untraced before that exits at once: kernel/inject.py).  The process resumes at once; C copies its pages for us
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

from ..kernel import engine, inject
from ..kernel import syscalls as sc
from .._engine import ffi, lib
from ..faults import crashpoint


def needs_frozen_read(shared: bool, vmflags) -> bool:
    """Whether a mapping's pages must be read while the process is frozen."""
    return shared or "dc" in vmflags or "wf" in vmflags


def fork_held_child(remote: inject.Remote) -> int:
    """Clone the frozen process (its main thread, stopped, with a scratch
    area); returns the PID of the stopped child.  The freeze's
    PTRACE_O_TRACECLONE attaches the child, stopped; PTRACE_O_EXITKILL is set
    on the child alone once it stops (on the job's process it would kill the
    job if we died), and until then a child left untraced exits at once
    (the clone trampoline of kernel/inject.py)."""
    t = remote.t
    r = t.syscall(sc.CLONE, sc.CLONE_FILES | sc.CLONE_FS, 0, 0, 0, 0, clone=True)  # low byte 0: exit signal 0
    child = t.last_new_thread()
    if r < 0:
        raise engine.EngineError(-r, f"clone in PID {t.pid}: {os.strerror(-r)}")
    if child <= 0:
        child = r
    # the auto-attached child reports its initial PTRACE_EVENT_STOP
    engine.check(lib.snp_wait_stop(child, ffi.NULL), f"wait for the capture child {child}")
    engine.check(lib.snp_set_ptrace_options(child, sc.PTRACE_O_EXITKILL), "PTRACE_SETOPTIONS of the capture child")
    crashpoint("dump-cow-child")
    return child


def release_child(pid: int, child: int, scratch: int) -> None:
    """Kill the capture child, reap it inside pid (its parent), and unmap
    pid's scratch area (at address scratch), with self-restoring calls
    (kernel/inject.py): pid runs again meanwhile, so only its main thread is
    stopped for this."""
    try:
        os.kill(child, signal.SIGKILL)
    except ProcessLookupError:
        pass
    lib.snp_wait_stop(child, ffi.NULL)  # the exit, as its tracer
    try:
        engine.seize(pid)
    except engine.EngineError:
        return  # the process is gone: so is its zombie child
    crashpoint("dump-cow-release")
    try:
        remote = inject.attach(pid, scratch)
        remote.t.syscall(sc.WAIT4, child, 0, sc.WNOHANG | sc.WALL, 0)
        remote.cure()
    finally:
        engine.detach(pid)
