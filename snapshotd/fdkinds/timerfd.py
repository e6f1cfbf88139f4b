"""timerfd: clock, remaining time, interval, settime flags and unread
expirations (fs/timerfd.c fdinfo: clockid, ticks, "settime flags", it_value
(remaining, relative), it_interval).  The time the process spent dumped is
not counted: the timer resumes with the remaining time it had at the dump."""
from __future__ import annotations

import os
import re
import time

from ..kernel import libc
from ..kernel import syscalls as sc
from .eventfd import _field

KIND = "timerfd"
_ALARM_BASE = {8: 0, 9: 7}  # CLOCK_{REALTIME,BOOTTIME}_ALARM read as their base clock


def _pair(s: str) -> tuple[int, int]:
    m = re.match(r"\((\d+),\s*(\d+)\)", s)
    return int(m.group(1)), int(m.group(2))


def dump(ctx, fd: int, link: str, info: str) -> dict:
    try:
        return {
            "clockid": int(_field(info, "clockid")),
            "ticks": int(_field(info, "ticks")),
            "settime_flags": int(_field(info, "settime flags"), 8),
            "value": list(_pair(_field(info, "it_value"))),
            "interval": list(_pair(_field(info, "it_interval"))),
        }
    except (TypeError, AttributeError, ValueError):
        raise ctx.refuse(fd, f"{link}: cannot parse its fdinfo") from None


def restore(rctx, f) -> int:
    s = f.state
    fd = libc.timerfd_create(s["clockid"], os.O_CLOEXEC | (f.flags & os.O_NONBLOCK))
    try:
        value, flags = tuple(s["value"]), s["settime_flags"]
        if value == (0, 0) and tuple(s["interval"]) != (0, 0):
            # a periodic timer that expired and was not read since: the kernel
            # re-arms it only on read (hrtimer_forward in timerfd_read), so it
            # shows no time left; run it on from one interval away
            value = tuple(s["interval"])
            flags &= ~sc.TFD_TIMER_ABSTIME
        if value != (0, 0) and flags & sc.TFD_TIMER_ABSTIME:
            # fdinfo gives the remaining time: turn it back into a deadline
            # (TFD_TIMER_CANCEL_ON_SET needs ABSTIME, so keep the flag)
            ns = time.clock_gettime_ns(_ALARM_BASE.get(s["clockid"], s["clockid"])) + value[0] * 10**9 + value[1]
            value = divmod(ns, 10**9)
        if value != (0, 0):
            libc.timerfd_settime(fd, flags, value, tuple(s["interval"]))
        if s["ticks"]:
            libc.ioctl_u64(fd, sc.TFD_IOC_SET_TICKS, s["ticks"])
    except BaseException:
        os.close(fd)
        raise
    return fd
