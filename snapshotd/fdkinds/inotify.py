"""inotify: its watches (fs/notify/fdinfo.c, one line per watch:
"inotify wd:%x ino:%lx sdev:%x mask:%x ignored_mask:%x fhandle-bytes:%x
fhandle-type:%x f_handle:%s").

The watched path is found from the file handle: open_by_handle_at(2) on the
mount whose device is sdev (needs CAP_DAC_READ_SEARCH), then the link of
that fd.  Watches are re-added by path in increasing wd order; wd numbers
are allocated cyclically upwards (idr_alloc_cyclic), so a gap is skipped by
adding and removing a throw-away watch.  Unread events cannot be put back:
an inotify fd with queued events is refused."""
from __future__ import annotations

import os
import re

from ..kernel import libc
from ..kernel import syscalls as sc
from .errors import Failed

KIND = "inotify"
_LINE = re.compile(r"inotify wd:([0-9a-f]+) ino:([0-9a-f]+) sdev:([0-9a-f]+) mask:([0-9a-f]+) "
                   r"ignored_mask:([0-9a-f]+)(?: fhandle-bytes:([0-9a-f]+) fhandle-type:([0-9a-f]+) f_handle:([0-9a-f]+))?")


def _mount_of(sdev: int) -> str | None:
    """Mount point of the filesystem with kernel dev_t sdev (MAJOR<<20|MINOR)."""
    want = f"{sdev >> 20}:{sdev & 0xFFFFF}"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[2] == want:
                return parts[4].replace("\\040", " ")
    return None


def _path_of(sdev: int, ino: int, htype: int, handle: bytes) -> str | None:
    mnt = _mount_of(sdev)
    if mnt is None:
        return None
    mfd = os.open(mnt, os.O_RDONLY | os.O_CLOEXEC)  # not O_PATH: open_by_handle_at refuses it
    try:
        fd = libc.open_by_handle_at(mfd, htype, handle, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return None
    finally:
        os.close(mfd)
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.endswith(" (deleted)") or os.stat(path).st_ino != ino:
            return None
        return path
    except OSError:
        return None
    finally:
        os.close(fd)


def dump(ctx, fd: int, link: str, info: str) -> dict:
    watches = []
    for line in info.splitlines():
        if not line.startswith("inotify "):
            continue
        m = _LINE.match(line)
        if not m or m.group(8) is None:
            raise ctx.refuse(fd, f"{link}: cannot parse fdinfo line {line!r}")
        wd, ino, sdev, mask, _ign, _nb, htype, handle = m.groups()
        path = _path_of(int(sdev, 16), int(ino, 16), int(htype, 16), bytes.fromhex(handle))
        if path is None:
            raise ctx.refuse(fd, f"{link}: watch {int(wd, 16)} is on inode {int(ino, 16)}, which has no path; not supported")
        watches.append({"wd": int(wd, 16), "mask": int(mask, 16), "path": path})
    ours = ctx.grab(fd)
    try:
        pending = libc.ioctl_int(ours, sc.FIONREAD)
    finally:
        os.close(ours)
    if pending:
        raise ctx.refuse(fd, f"{link} has {pending} bytes of unread events, which cannot be restored")
    watches.sort(key=lambda w: w["wd"])
    return {"watches": watches}


def restore(rctx, f) -> int:
    fd = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        for w in f.state["watches"]:
            while True:
                try:
                    got = libc.inotify_add_watch(fd, w["path"], w["mask"])
                except OSError as e:
                    raise Failed(f"inotify watch on {w['path']}: {e.strerror}") from None
                if got == w["wd"]:
                    break
                if got > w["wd"]:
                    raise Failed(f"inotify watch on {w['path']} got wd {got}, not {w['wd']}")
                # a gap in the wd numbers: burn this one and add again; drop
                # the IN_IGNORED event that the removal queues
                libc.inotify_rm_watch(fd, got)
                n = libc.ioctl_int(fd, sc.FIONREAD)
                if n:
                    os.read(fd, n)
        if not f.flags & os.O_NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd
