"""libc through ctypes, loaded once for the whole package: the CDLL object,
syscall(2) with and without raising, and the few syscalls Python's os and
socket modules lack (numbers in kernel/syscalls.py)."""
from __future__ import annotations

import ctypes
import os
import struct

from . import syscalls as sc

dll = ctypes.CDLL(None, use_errno=True)  # calls release the GIL
dll.syscall.restype = ctypes.c_long
dll.ptrace.restype = ctypes.c_long
dll.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
# calls keep the GIL: the child of a clone3(2) made here returns holding it
pydll = ctypes.PyDLL(None, use_errno=True)
pydll.syscall.restype = ctypes.c_long


def raw_syscall(nr: int, *args, via=dll) -> int:
    """syscall(2) with ints widened to long (a variadic int leaves the upper
    half of the register undefined); ctypes objects and buffers pass as they
    are.  Returns what libc returns: -1 with errno (ctypes.get_errno()) set
    on failure.  via=pydll keeps the GIL."""
    return via.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) if isinstance(a, int) else a for a in args))


def syscall(nr: int, *args) -> int:
    """raw_syscall that raises OSError on failure."""
    r = raw_syscall(nr, *args)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def pidfd_getfd(pidfd: int, fd: int) -> int:
    """Our own copy of fd of the process behind pidfd (needs ptrace access)."""
    return syscall(sc.PIDFD_GETFD, ctypes.c_int(pidfd), ctypes.c_int(fd), ctypes.c_uint(0))


def signalfd(mask: int, flags: int) -> int:
    m = ctypes.c_uint64(mask)
    return syscall(sc.SIGNALFD4, ctypes.c_int(-1), ctypes.byref(m), ctypes.c_size_t(8), ctypes.c_int(flags))


def timerfd_create(clock: int, flags: int) -> int:
    return syscall(sc.TIMERFD_CREATE, ctypes.c_int(clock), ctypes.c_int(flags))


def timerfd_settime(fd: int, flags: int, value: tuple, interval: tuple) -> None:
    spec = ctypes.create_string_buffer(struct.pack("<4q", *interval, *value))
    syscall(sc.TIMERFD_SETTIME, ctypes.c_int(fd), ctypes.c_int(flags), spec, None)


def ioctl_u64(fd: int, req: int, value: int) -> None:
    v = ctypes.c_uint64(value)
    if dll.ioctl(ctypes.c_int(fd), ctypes.c_ulong(req), ctypes.byref(v)) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def ioctl_int(fd: int, req: int) -> int:
    v = ctypes.c_int(0)
    if dll.ioctl(ctypes.c_int(fd), ctypes.c_ulong(req), ctypes.byref(v)) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return v.value


def epoll_create1(flags: int) -> int:
    return syscall(sc.EPOLL_CREATE1, ctypes.c_int(flags))


def inotify_init1(flags: int) -> int:
    return syscall(sc.INOTIFY_INIT1, ctypes.c_int(flags))


def inotify_add_watch(fd: int, path: str, mask: int) -> int:
    return syscall(sc.INOTIFY_ADD_WATCH, ctypes.c_int(fd), os.fsencode(path), ctypes.c_uint32(mask))


def inotify_rm_watch(fd: int, wd: int) -> None:
    syscall(sc.INOTIFY_RM_WATCH, ctypes.c_int(fd), ctypes.c_int(wd))


def open_by_handle_at(mount_fd: int, htype: int, handle: bytes, flags: int) -> int:
    """struct file_handle {u32 handle_bytes; int handle_type; u8 f_handle[]}."""
    fh = ctypes.create_string_buffer(struct.pack("<Ii", len(handle), htype) + handle)
    return syscall(sc.OPEN_BY_HANDLE_AT, ctypes.c_int(mount_fd), fh, ctypes.c_int(flags))


def shmget(key: int, size: int, flags: int) -> int:
    return syscall(sc.SHMGET, ctypes.c_int(key), ctypes.c_size_t(size), ctypes.c_int(flags))


def shmat(shmid: int, flags: int) -> int:
    r = raw_syscall(sc.SHMAT, ctypes.c_int(shmid), None, ctypes.c_int(flags))
    if r == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def shmdt(addr: int) -> None:
    syscall(sc.SHMDT, ctypes.c_void_p(addr))


def shm_rmid(shmid: int) -> None:
    syscall(sc.SHMCTL, ctypes.c_int(shmid), ctypes.c_int(sc.IPC_RMID), None)


def read_mem(addr: int, size: int) -> bytes:
    return ctypes.string_at(addr, size)


def write_mem(addr: int, data: bytes) -> None:
    ctypes.memmove(addr, data, len(data))
