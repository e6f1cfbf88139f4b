"""epoll: the watched set (fs/eventpoll.c fdinfo, one line per watch:
"tfd: %8d events: %8x data: %16llx  pos:%lli ino:%lx sdev:%x").

An epoll item is keyed by (file, fd number) in the owner's table, so the
watches are re-added from inside the target with epoll_ctl(EPOLL_CTL_ADD)
once every fd is restored.  A watch whose fd number was since closed or
reused (the item outlives the fd while the file stays open elsewhere)
cannot be re-added that way and is refused."""
from __future__ import annotations

import os
import re
import struct

from ..kernel import libc
from ..kernel import syscalls as sc

KIND = "epoll"
EPOLL_CTL_ADD = 1
_LINE = re.compile(r"tfd:\s*(\d+)\s+events:\s*([0-9a-f]+)\s+data:\s*([0-9a-f]+)\s+pos:(\d+)\s+ino:([0-9a-f]+)\s+sdev:([0-9a-f]+)")


def dump(ctx, fd: int, link: str, info: str) -> dict:
    watches = []
    for line in info.splitlines():
        if not line.startswith("tfd:"):
            continue
        m = _LINE.match(line)
        if not m:
            raise ctx.refuse(fd, f"{link}: cannot parse fdinfo line {line!r}")
        tfd, events, data, _pos, ino, _sdev = m.groups()
        try:
            st = os.stat(f"/proc/{ctx.pid}/fd/{tfd}")
        except OSError:
            st = None
        if st is None or st.st_ino != int(ino, 16):
            raise ctx.refuse(fd, f"{link} watches a file whose fd {tfd} was closed; not supported")
        watches.append({"tfd": int(tfd), "events": int(events, 16), "data": int(data, 16)})
    return {"watches": watches}


def restore(rctx, f) -> int:
    return libc.epoll_create1(os.O_CLOEXEC)


def after_fds(rctx, f, target_fd: int) -> None:
    done = rctx.cache.setdefault("epoll_done", set())
    if id(f) in done:
        return  # a dup of an epoll already filled
    done.add(id(f))
    t = rctx.r.t
    for w in f.state["watches"]:
        # struct epoll_event is packed on x86-64: u32 events, u64 data
        ev = t.put(0, struct.pack("<IQ", w["events"], w["data"]))
        t.call(f"epoll_ctl(ADD fd {w['tfd']})", sc.EPOLL_CTL, target_fd, EPOLL_CTL_ADD, w["tfd"], ev)
