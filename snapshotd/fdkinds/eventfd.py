"""eventfd: the 64-bit counter and EFD_SEMAPHORE (fs/eventfd.c fdinfo:
"eventfd-count: %16llx", "eventfd-semaphore: %d").  O_NONBLOCK travels in the
File's flags."""
from __future__ import annotations

import os

KIND = "eventfd"


def _field(info: str, key: str) -> str | None:
    for line in info.splitlines():
        k, _, v = line.partition(":")
        if k.strip() == key:
            return v.strip()
    return None


def dump(ctx, fd: int, link: str, info: str) -> dict:
    count = _field(info, "eventfd-count")
    sem = _field(info, "eventfd-semaphore")
    if count is None or sem is None:
        raise ctx.refuse(fd, f"{link}: this kernel's fdinfo lacks eventfd-count/eventfd-semaphore")
    return {"count": int(count, 16), "semaphore": int(sem) != 0}


def restore(rctx, f) -> int:
    flags = os.EFD_CLOEXEC | (os.EFD_SEMAPHORE if f.state["semaphore"] else 0) | (f.flags & os.O_NONBLOCK)
    fd = os.eventfd(0, flags)
    if f.state["count"]:
        # write adds to the counter; the counter may exceed the 32-bit initval
        os.eventfd_write(fd, f.state["count"])
    return fd
