"""signalfd: its signal mask (fs/signalfd.c fdinfo "sigmask: %016llx").
A signalfd reads the queue of whichever process reads it, so one made by
snapshotd and passed into the target behaves as the target's own."""
from __future__ import annotations

import os

from ..kernel import libc
from .eventfd import _field

KIND = "signalfd"


def dump(ctx, fd: int, link: str, info: str) -> dict:
    mask = _field(info, "sigmask")
    if mask is None:
        raise ctx.refuse(fd, f"{link}: no sigmask in fdinfo")
    return {"sigmask": int(mask, 16)}


def restore(rctx, f) -> int:
    return libc.signalfd(f.state["sigmask"], os.O_CLOEXEC | (f.flags & os.O_NONBLOCK))
