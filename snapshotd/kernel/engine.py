"""Python face of the C engine: errors as exceptions, registers as objects,
and a Tracee that injects syscalls.  All ptrace calls must come from one OS
thread (the tracer is a thread, not a process): dump and restore run them on
the thread that called them."""
from __future__ import annotations

import os
import struct

from .._engine import ffi, lib
from . import syscalls as sc

PAGE = sc.PAGE  # engine.PAGE, as its callers spell it
REGS_SIZE = lib.SNP_REGS_SIZE
# struct user_regs_struct, x86-64, in order
REG_NAMES = (
    "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags rsp ss "
    "fs_base gs_base ds es fs gs"
).split()
REG = {n: i for i, n in enumerate(REG_NAMES)}


class EngineError(OSError):
    pass


def check(ret: int, what: str) -> int:
    if ret < 0:
        e = -ret
        raise EngineError(e, f"{what}: {os.strerror(e)}")
    return ret


class Regs:
    """A thread's general registers (struct user_regs_struct)."""

    def __init__(self, raw: bytes):
        self.v = list(struct.unpack("<27Q", raw))

    def __getattr__(self, n):
        try:
            return self.v[REG[n]]
        except KeyError:
            raise AttributeError(n) from None

    def set(self, n: str, value: int) -> None:
        self.v[REG[n]] = value & 0xFFFFFFFFFFFFFFFF

    def raw(self) -> bytes:
        return struct.pack("<27Q", *self.v)


def getregs(tid: int) -> Regs:
    buf = ffi.new("char[]", REGS_SIZE)
    check(lib.snp_getregs(tid, buf), f"PTRACE_GETREGS {tid}")
    return Regs(ffi.buffer(buf)[:])


def setregs(tid: int, regs: Regs | bytes) -> None:
    raw = regs.raw() if isinstance(regs, Regs) else regs
    check(lib.snp_setregs(tid, raw), f"PTRACE_SETREGS {tid}")


def getxstate(tid: int) -> bytes:
    buf = ffi.new("char[]", 16384)
    n = check(lib.snp_getxstate(tid, buf, 16384), f"NT_X86_XSTATE {tid}")
    return ffi.buffer(buf, n)[:]


def setxstate(tid: int, data: bytes) -> None:
    check(lib.snp_setxstate(tid, data, len(data)), f"SETREGSET NT_X86_XSTATE {tid}")


def getsigmask(tid: int) -> int:
    m = ffi.new("uint64_t *")
    check(lib.snp_getsigmask(tid, m), f"PTRACE_GETSIGMASK {tid}")
    return m[0]


def setsigmask(tid: int, mask: int) -> None:
    check(lib.snp_setsigmask(tid, mask), f"PTRACE_SETSIGMASK {tid}")


def get_rseq(tid: int) -> dict | None:
    out = ffi.new("uint64_t[3]")
    if lib.snp_get_rseq(tid, out) < 0 or out[0] == 0:
        return None
    return {"ptr": out[0], "len": out[1] & 0xFFFFFFFF, "flags": out[1] >> 32, "sig": out[2]}


def get_robust_list(tid: int) -> tuple[int, int]:
    out = ffi.new("uint64_t[2]")
    check(lib.snp_get_robust_list(tid, out), f"get_robust_list {tid}")
    return out[0], out[1]


def peek_siginfo(tid: int, shared: bool) -> list[bytes]:
    """Queued signals (struct siginfo, 128 bytes each), oldest first, without
    dequeuing them (PTRACE_PEEKSIGINFO, 32 per call from a moving offset)."""
    out: list[bytes] = []
    buf = ffi.new("char[]", 128 * 32)
    while True:
        n = check(lib.snp_peek_siginfo(tid, 1 if shared else 0, len(out), buf, 32), f"PTRACE_PEEKSIGINFO {tid}")
        raw = ffi.buffer(buf, 128 * n)[:]
        out += [raw[128 * i : 128 * (i + 1)] for i in range(n)]
        if n < 32:
            return out


def seize(tid: int) -> None:
    check(lib.snp_seize(tid), f"PTRACE_SEIZE {tid}")


def detach(tid: int, sig: int = 0) -> None:
    check(lib.snp_detach(tid, sig), f"PTRACE_DETACH {tid}")


def mem_read(pid: int, addr: int, size: int) -> bytes:
    buf = ffi.new("char[]", size)
    check(lib.snp_mem_read(pid, addr, buf, size), f"read memory of {pid} at {addr:#x}")
    return ffi.buffer(buf, size)[:]


def mem_write(pid: int, addr: int, data: bytes) -> None:
    check(lib.snp_mem_write(pid, addr, data, len(data)), f"write memory of {pid} at {addr:#x}")


SYSCALL_INT3 = b"\x0f\x05\xcc"
SAFE_CODE_MAX = 208  # the self-restoring call's trampoline (inject.c snp_inject_safe)


class Tracee:
    """A stopped process we can run syscalls in.

    `code` is an address holding `syscall; int3` (SYSCALL_INT3), or, with
    safe, room for a self-restoring call's trampoline (kernel/inject.py);
    `scratch` an address of a private scratch area (`scratch_size` bytes)
    for syscall arguments."""

    def __init__(self, pid: int, code: int = 0, scratch: int = 0, scratch_size: int = 0, safe: bool = False):
        self.pid = pid
        self.code = code
        self.scratch = scratch
        self.scratch_size = scratch_size
        # safe: every call undoes itself if we die (inject.c snp_inject_safe);
        # code then has SAFE_CODE_MAX bytes for its trampoline
        self.safe = safe
        self._args = ffi.new("uint64_t[6]")
        self._res = ffi.new("int64_t *")
        self._newt = ffi.new("int *")

    def _set_args(self, args):
        if len(args) > 6:
            raise ValueError("at most 6 syscall arguments")
        for i in range(6):
            self._args[i] = (args[i] & 0xFFFFFFFFFFFFFFFF) if i < len(args) else 0

    def syscall(self, nr: int, *args: int, tid: int | None = None, expect_segv: bool = False,
                clone: bool = False, undo: int = 0) -> int:
        """Run syscall nr in thread tid (default the main thread); return its
        raw result (negative errno on failure, as the kernel gives it)."""
        self._set_args(args)
        if self.safe:
            if expect_segv:
                raise ValueError("a self-restoring injection cannot expect a SIGSEGV")
            # undo: lib.SNP_SAFE_CLOSE_RESULT / SNP_SAFE_UNMAP_RESULT, what the trampoline
            # undoes if we die before the result is ours
            flags = (lib.SNP_SAFE_CLONE if clone else 0) | undo
            r = lib.snp_inject_safe(tid or self.pid, self.code, nr, self._args, flags, self._res, self._newt)
        else:
            flags = lib.SNP_INJ_EXPECT_SEGV if expect_segv else 0
            r = lib.snp_inject(tid or self.pid, self.code, nr, self._args, flags, self._res, self._newt)
        check(r, f"inject syscall {nr} into {tid or self.pid}")
        return self._res[0]

    def last_new_thread(self) -> int:
        return self._newt[0]

    def call(self, what: str, nr: int, *args: int, tid: int | None = None) -> int:
        """syscall() that raises on a negative result."""
        r = self.syscall(nr, *args, tid=tid)
        if -4096 < r < 0:
            raise EngineError(-r, f"{what} in {tid or self.pid}: {os.strerror(-r)}")
        return r

    def put(self, offset: int, data: bytes) -> int:
        """Write data into the scratch area at offset; returns its address."""
        if offset + len(data) > self.scratch_size:
            raise ValueError("scratch area too small")
        mem_write(self.pid, self.scratch + offset, data)
        return self.scratch + offset

    def get(self, offset: int, size: int) -> bytes:
        return mem_read(self.pid, self.scratch + offset, size)

