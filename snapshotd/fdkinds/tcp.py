"""TCP sockets (AF_INET/AF_INET6) that are listening or not yet connected.

Dump: state, backlog and accept queue from TCP_INFO (for a listener
tcpi_unacked is the accept queue length and tcpi_sacked the backlog), the
bound address (getsockname) and the options that change how it binds and
accepts.  Restore: a new socket bound with TCP_REPAIR on (SK_FORCE_REUSE:
the dumped process's closed connections may still hold the port in
TIME_WAIT), then the options, then listen(backlog).  listen checks the port
again: with TIME_WAIT sockets on it, that passes only if the listener had
SO_REUSEADDR (as a restarted server would need too).

Refused at dump: established or closing connections (TCP_REPAIR of
connections is not implemented), a listener with connections not yet
accepted.
"""
from __future__ import annotations

import os
import socket
import struct

from .errors import Failed

KIND = "tcp"
TCP_REPAIR = 19
TCP_CLOSE, TCP_LISTEN = 7, 10
_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
           7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}
# (level, option) kept as integers
_OPTS = {
    "reuseaddr": (socket.SOL_SOCKET, socket.SO_REUSEADDR),
    "reuseport": (socket.SOL_SOCKET, socket.SO_REUSEPORT),
    "keepalive": (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    "nodelay": (socket.IPPROTO_TCP, socket.TCP_NODELAY),
}


def dump(ctx, fd: int, link: str, info: str) -> dict:
    ours = ctx.grab(fd)
    s = socket.socket(fileno=ours)
    try:
        ti = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
        state = ti[0]
        queued, backlog = struct.unpack_from("<II", ti, 24)  # tcpi_unacked, tcpi_sacked
        fam = s.family
        what = f"{link} ({'AF_INET6' if fam == socket.AF_INET6 else 'AF_INET'} TCP {_STATES.get(state, state)})"
        if state not in (TCP_CLOSE, TCP_LISTEN):
            raise ctx.refuse(fd, f"{what} is not supported: only listening and unconnected TCP sockets are")
        if state == TCP_LISTEN and queued:
            raise ctx.refuse(fd, f"{what} has {queued} connections not yet accepted, which is not supported")
        addr = s.getsockname()
        rec = {
            "family": int(fam), "state": "listen" if state == TCP_LISTEN else "closed",
            "backlog": backlog if state == TCP_LISTEN else 0,
            "addr": [addr[0], addr[1]], "bound": addr[1] != 0,
            "opts": {k: s.getsockopt(*lv) for k, lv in _OPTS.items()},
        }
        if fam == socket.AF_INET6:
            rec["v6only"] = s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        return rec
    finally:
        s.close()


def restore(rctx, f) -> int:
    st = f.state
    s = socket.socket(st["family"], socket.SOCK_STREAM)
    try:
        if "v6only" in st:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, st["v6only"])
        # bind in repair mode (SK_FORCE_REUSE); leaving it resets sk_reuse,
        # so the options come after, and listen last (a listener cannot
        # enter or leave repair mode)
        s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
        if st["bound"]:
            s.bind(tuple(st["addr"]))
        s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 0)
        for k, v in st["opts"].items():
            if v:
                s.setsockopt(*_OPTS[k], v)
        if st["state"] == "listen":
            s.listen(st["backlog"])
        s.setblocking(not f.flags & os.O_NONBLOCK)
    except OSError as e:
        s.close()
        raise Failed(f"TCP socket on {st['addr'][0]} port {st['addr'][1]}: {e.strerror}") from None
    return s.detach()
