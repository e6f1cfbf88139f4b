"""Open files with another process's credentials, from one thread of ours.

Restore reopens a process's files by path on our side and hands them over
with pidfd_getfd. We run as root; had we opened them as root, a process of
a user could get, through its snapshot, a file that user could never open
(say, its log path swapped for a link to a root-only file after the dump).
So the opens happen inside `as_file_creds(creds)`:

  setgroups(2), setfsgid(2), setfsuid(2), as raw syscalls: they change the
  credentials of the calling thread only. (glibc's setgroups() wrapper would
  change every thread of the daemon at once (its "setxid" broadcast); the
  raw syscall does not.) Permission checks of open(2) use the fs uid/gid and
  the supplementary groups; and while the fs uid is not 0 the kernel drops
  CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER and the other fs
  capabilities from the thread's effective set (capabilities(7), "Effect of
  user ID changes on capabilities"), so root's override does not apply.
  Setting the fs uid back to 0 brings them back from the permitted set.

Only the calling thread is affected, and only for the duration of the block;
the fs ids are read back after each change (setfsuid(2) reports no error).

When the user may not open a path the process had open at the dump (it
opened it before dropping privileges, or its executable lies in a directory
only root may search), restore opens it as root only if the path still names
that very file: same device and inode as recorded (File.dev/inode, and
Process.cwd_id for the working directory), looked up with O_PATH, checked
with fstat(2), reopened through /proc/self/fd (restore.py, _same_file).
(Syscall injection, opening inside the restored process after its creds are
set, was not chosen: files are needed before the creds are set, for mmap of
file mappings and PR_SET_MM_MAP's exe fd, and pidfd_getfd of our fds from
inside the process needs its root creds; restore sets creds last.)
"""
from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager

from . import libc
from . import syscalls as sc


class CredsError(OSError):
    pass


def _sys(nr: int, *args) -> int:
    try:
        return libc.syscall(nr, *args)
    except OSError as e:
        raise CredsError(e.errno, f"{e.strerror} (syscall {nr})") from None


def _setgroups(groups) -> None:
    arr = (ctypes.c_uint32 * max(len(groups), 1))(*groups)
    _sys(sc.SETGROUPS, len(groups), arr)


def fs_ids() -> tuple[int, int]:
    """(fsuid, fsgid) of the calling thread (an invalid id changes nothing
    and returns the current one)."""
    return libc.raw_syscall(sc.SETFSUID, -1) & 0xFFFFFFFF, libc.raw_syscall(sc.SETFSGID, -1) & 0xFFFFFFFF


def _set_fs(uid: int, gid: int) -> None:
    # gid first: once the fs uid is not 0 we still hold CAP_SETGID, but order
    # it like setresgid/setresuid anyway
    libc.raw_syscall(sc.SETFSGID, gid)
    libc.raw_syscall(sc.SETFSUID, uid)
    if fs_ids() != (uid, gid):
        raise CredsError(1, f"cannot take fs uid {uid} / gid {gid} (have {fs_ids()})")


def file_id(path: str) -> list[int]:
    """[st_dev, st_ino] of what path names ([] if it cannot be stat'd):
    restore gives a process back a file its user may no longer open only if
    it is this very one (restore.py, Restorer._same_file)."""
    try:
        st = os.stat(path)
    except OSError:
        return []
    return [st.st_dev, st.st_ino]


def creds_of(creds: dict) -> tuple[int, int, list[int]]:
    """(fs uid, fs gid, groups) from an image's Process.creds (uid/gid lists
    are real, effective, saved, fs as in /proc/PID/status)."""
    uid, gid = creds["uid"], creds["gid"]
    return (uid[3] if len(uid) > 3 else uid[1]), (gid[3] if len(gid) > 3 else gid[1]), list(creds.get("groups", []))


@contextmanager
def as_file_creds(creds: dict | None):
    """Within the block, this thread opens files as the process whose creds
    these are. A no-op for root's processes, when creds is None, or when we
    are not root ourselves (then we could not open more than we may anyway)."""
    if creds is None:
        yield
        return
    uid, gid, groups = creds_of(creds)
    mine = fs_ids()
    if uid == 0 or os.geteuid() != 0:
        yield
        return
    old_groups = os.getgroups()  # getgroups(2): this thread's (all threads share them here)
    try:
        _setgroups(groups)
        _set_fs(uid, gid)
    except BaseException:
        _set_fs(*mine)
        _setgroups(old_groups)
        raise
    try:
        yield
    finally:
        _set_fs(*mine)
        _setgroups(old_groups)
