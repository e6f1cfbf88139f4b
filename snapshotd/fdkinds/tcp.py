"""TCP sockets (AF_INET/AF_INET6): listening, not yet connected, and
established connections whose peer is in the dumped process tree
(loopback).

Dump: state, backlog and accept queue from TCP_INFO (for a listener
tcpi_unacked is the accept queue length and tcpi_sacked the backlog), the
bound address (getsockname) and the options that change how it binds and
accepts.  Restore: a new socket bound with TCP_REPAIR on (SK_FORCE_REUSE:
the dumped process's closed connections may still hold the port in
TIME_WAIT), then the options, then listen(backlog).  listen checks the port
again: with TIME_WAIT sockets on it, that passes only if the listener had
SO_REUSEADDR (as a restarted server would need too).

Established connections go through TCP_REPAIR (linux/tcp.h): at dump the
socket enters repair mode for a moment to read its sequence numbers
(TCP_QUEUE_SEQ of each queue), window (TCP_REPAIR_WINDOW), timestamp and
the unread receive queue (MSG_PEEK), and leaves it without a window probe
(TCP_REPAIR_OFF_NO_WP), so the running process and its peer see nothing.  At
restore, leftovers of the killed process on the same address pair are
destroyed (SOCK_DESTROY, CONFIG_INET_DIAG_DESTROY), a socket in repair mode
gets the sequence numbers, bind + connect (established without a
handshake), options, window, timestamp and the queued bytes; repair mode is
left only once every process of the tree has its fds back, so the window
probe finds the restored peer (which may be in another process of the tree).

A connection to another host (no socket of the same network namespace is
its other end: "remote") is dumped the same way; netns.py keeps the peer
from noticing a dump --kill and the restore.

Bytes not yet acknowledged by the peer (SIOCOUTQ > 0) are read too
(MSG_PEEK of the send queue in repair mode); restore queues the part that
had been sent as sent (the retransmission timer sends it again) and sends
the rest (SIOCOUTQNSD) normally once repair mode is left.

Refused at dump: connections in other states (SYN_SENT, FIN_WAIT, ...),
a peer on this host outside the dumped tree (killing the dumped process
would reset it), a listener with connections not yet accepted.
"""
from __future__ import annotations

import ctypes
import os
import socket
import struct

from ..kernel import netns
from ..kernel import libc
from ..kernel import syscalls as sc
from .errors import Failed, Unsupported

KIND = "tcp"
# TCP repair (linux/tcp.h; TCP_REPAIR itself is in kernel/syscalls.py, netns uses it too)
TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ, TCP_REPAIR_OPTIONS = 20, 21, 22
TCP_TIMESTAMP, TCP_REPAIR_WINDOW = 24, 29
TCP_NO_QUEUE, TCP_RECV_QUEUE, TCP_SEND_QUEUE = 0, 1, 2
TCP_USER_TIMEOUT = 18
SO_GET_FILTER, SO_BUF_LOCK = 26, 72  # asm-generic/socket.h (SO_GET_FILTER is SO_ATTACH_FILTER read back)
TCP_REPAIR_OFF_NO_WP = -1
TCPOPT_MSS, TCPOPT_WINDOW, TCPOPT_SACK_PERM, TCPOPT_TIMESTAMP = 2, 3, 4, 8
TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE = 1, 2, 4
_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
           7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}
# (level, option) kept as integers
_OPTS = {
    "reuseaddr": (socket.SOL_SOCKET, socket.SO_REUSEADDR),
    "reuseport": (socket.SOL_SOCKET, socket.SO_REUSEPORT),
    "keepalive": (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    "nodelay": (socket.IPPROTO_TCP, socket.TCP_NODELAY),
    "keepidle": (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
    "keepintvl": (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
    "keepcnt": (socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
    "cork": (socket.IPPROTO_TCP, socket.TCP_CORK),
    "user_timeout": (socket.IPPROTO_TCP, TCP_USER_TIMEOUT),
    "priority": (socket.SOL_SOCKET, socket.SO_PRIORITY),
}


def _dump_extras(ctx, fd: int, what: str, s: socket.socket) -> dict:
    """The options that are not plain integers: SO_LINGER, buffer sizes the
    program fixed (SO_BUF_LOCK says which: it set SO_SNDBUF/SO_RCVBUF; the
    others grow by themselves), SO_BINDTODEVICE.  A socket filter is refused."""
    try:
        nfilter = s.getsockopt(socket.SOL_SOCKET, SO_GET_FILTER)
    except OSError:
        nfilter = 1
    if nfilter:
        raise ctx.refuse(fd, f"{what} has a socket filter attached (SO_ATTACH_FILTER), which is not restored yet")
    lock = s.getsockopt(socket.SOL_SOCKET, SO_BUF_LOCK)
    return {"linger": list(struct.unpack("<ii", s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))),
            "sndbuf": s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2 if lock & 1 else 0,
            "rcvbuf": s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2 if lock & 2 else 0,
            "device": s.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0").decode()}


def _restore_device(s: socket.socket, st: dict) -> None:
    if st.get("device"):  # before bind: it decides which addresses are ours
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, st["device"].encode())


def _restore_extras(s: socket.socket, st: dict) -> None:
    on, secs = st.get("linger") or (0, 0)
    if on:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("<ii", on, secs))
    # the kernel doubles what it is given (socket(7)); FORCE: beyond the sysctl limits, as the program had it
    if st.get("sndbuf"):
        s.setsockopt(socket.SOL_SOCKET, sc.SO_SNDBUFFORCE, st["sndbuf"])
    if st.get("rcvbuf"):
        s.setsockopt(socket.SOL_SOCKET, sc.SO_RCVBUFFORCE, st["rcvbuf"])


def dump(ctx, fd: int, link: str, info: str) -> dict:
    ours = ctx.grab(fd)
    s = socket.socket(fileno=ours)
    try:
        ti = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
        state = ti[0]
        queued, backlog = struct.unpack_from("<II", ti, 24)  # tcpi_unacked, tcpi_sacked
        fam = s.family
        what = f"{link} ({'AF_INET6' if fam == socket.AF_INET6 else 'AF_INET'} TCP {_STATES.get(state, state)})"
        if state == sc.TCP_ESTABLISHED:
            return _dump_established(ctx, fd, what, s, ti)
        if state not in (sc.TCP_CLOSE, sc.TCP_LISTEN):
            raise ctx.refuse(fd, f"{what} is not supported: only listening, unconnected and established TCP sockets are")
        if state == sc.TCP_LISTEN and queued:
            raise ctx.refuse(fd, f"{what} has {queued} connections not yet accepted, which is not supported")
        addr = s.getsockname()
        rec = {
            "family": int(fam), "state": "listen" if state == sc.TCP_LISTEN else "closed",
            "backlog": backlog if state == sc.TCP_LISTEN else 0,
            "addr": [addr[0], addr[1]], "bound": addr[1] != 0,
            "opts": {k: s.getsockopt(*lv) for k, lv in _OPTS.items()},
            **_dump_extras(ctx, fd, what, s),
        }
        if fam == socket.AF_INET6:
            rec["v6only"] = s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        return rec
    finally:
        s.close()


class _DropAll:
    """struct sock_fprog of one classic BPF instruction, "ret #0": a socket
    filter that drops every incoming segment before TCP sees it
    (tcp_filter in tcp_v4_rcv): no acknowledgement, no reset."""

    def __init__(self):
        self.insn = ctypes.create_string_buffer(struct.pack("<HBBI", 0x06, 0, 0, 0))  # BPF_RET | BPF_K, k = 0
        self.arg = struct.pack("<HxxxxxxQ", 1, ctypes.addressof(self.insn))


_DROP_ALL = _DropAll()


def _u32(s: socket.socket, opt: int) -> int:
    return struct.unpack("<I", s.getsockopt(socket.IPPROTO_TCP, opt, 4))[0]


def _peek(s: socket.socket, n: int) -> bytes:
    """The first n bytes of the queue chosen by TCP_REPAIR_QUEUE (MSG_PEEK
    in repair mode reads it without consuming)."""
    data = b""
    while len(data) < n:
        got = s.recv(n, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        if not got or len(got) <= len(data):
            break
        data = got
    return data


def _dump_established(ctx, fd: int, what: str, s: socket.socket, ti: bytes) -> dict:
    s.setsockopt(socket.IPPROTO_TCP, sc.TCP_REPAIR, 1)
    try:
        # in repair mode nothing moves on our side: the queue lengths and
        # the contents agree (the peer may still acknowledge: counted below)
        inq = libc.ioctl_int(s.fileno(), sc.SIOCINQ)
        s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)
        rcv_nxt = _u32(s, TCP_QUEUE_SEQ)
        data = _peek(s, inq)
        if len(data) != inq:
            raise ctx.refuse(fd, f"{what}: read {len(data)} of its {inq} queued bytes")
        s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)
        # bytes not yet acknowledged by the peer, of which the last
        # `notsent` were never sent (SIOCOUTQNSD); one pass under the
        # socket lock each, so read until two agree
        for _ in range(100):
            write_seq = _u32(s, TCP_QUEUE_SEQ)
            outq = libc.ioctl_int(s.fileno(), sc.SIOCOUTQ)
            notsent = libc.ioctl_int(s.fileno(), sc.SIOCOUTQNSD)
            sndq = _peek(s, outq)
            if len(sndq) == outq and _u32(s, TCP_QUEUE_SEQ) == write_seq and \
                    libc.ioctl_int(s.fileno(), sc.SIOCOUTQ) == outq:
                break
        else:
            raise ctx.refuse(fd, f"{what}: its send queue kept changing while being read")
        s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE)
        window = list(struct.unpack("<5I", s.getsockopt(socket.IPPROTO_TCP, TCP_REPAIR_WINDOW, 20)))
        tsval = _u32(s, TCP_TIMESTAMP)
    finally:
        s.setsockopt(socket.IPPROTO_TCP, sc.TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)
    options, wscale = ti[5], ti[6]
    local, peer = s.getsockname(), s.getpeername()
    rec = {
        "family": int(s.family), "state": "established", "backlog": 0,
        "addr": [local[0], local[1]], "bound": True, "peer": [peer[0], peer[1]],
        "opts": {k: s.getsockopt(*lv) for k, lv in _OPTS.items()},
        **_dump_extras(ctx, fd, what, s),
        "rcv_nxt": rcv_nxt, "write_seq": write_seq, "recv_queue": data,
        "send_queue": sndq, "send_notsent": min(notsent, len(sndq)),
        "mss": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG),
        "timestamps": bool(options & TCPI_OPT_TIMESTAMPS), "sack": bool(options & TCPI_OPT_SACK),
        "wscale": [wscale & 0xF, wscale >> 4] if options & TCPI_OPT_WSCALE else None,
        "window": window, "tsval": tsval,
        # no socket of this network namespace is the other end: the peer is
        # another host (netns.py keeps it unaware across dump --kill/restore)
        "remote": netns.peer_is_remote(ctx.pid, local, peer),
        "mark": s.getsockopt(socket.SOL_SOCKET, socket.SO_MARK),
    }
    if s.family == socket.AF_INET6:
        rec["v6only"] = s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    return rec


def check_tree(ends: list) -> None:
    """The peer of an established connection must be in the dumped tree,
    or on another host (netns.py).  ends: (pid, fd, record) of every TCP
    socket of the tree."""
    # an IPv4 end meets its peer's v4-mapped IPv6 address (::ffff:a.b.c.d) on a dual-stack socket
    have = {(netns.norm_addr(r["addr"]), netns.norm_addr(r["peer"])) for _p, _f, r in ends
            if r.get("state") == "established"}
    for pid, fd, r in ends:
        if r.get("state") == "established" and not r.get("remote") and \
                (netns.norm_addr(r["peer"]), netns.norm_addr(r["addr"])) not in have:
            raise Unsupported(f"PID {pid} fd {fd}: TCP connection {r['addr'][0]}:{r['addr'][1]} -> "
                              f"{r['peer'][0]}:{r['peer'][1]} has its peer outside the process tree; not supported")


def _destroy(family: int, local, peer) -> None:
    """SOCK_DESTROY whatever socket (a leftover of the killed process, e.g.
    in TIME_WAIT or FIN_WAIT) holds this address pair."""
    def raw(a):
        return socket.inet_pton(family, a).ljust(16, b"\0")
    sid = struct.pack(">HH", local[1], peer[1]) + raw(local[0]) + raw(peer[0]) + struct.pack("<III", 0, 0xFFFFFFFF, 0xFFFFFFFF)
    req = struct.pack("<BBBBI", family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + sid
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, sc.NETLINK_SOCK_DIAG)
    try:
        for _ in range(8):
            # the kernel finds the socket as an incoming packet would
            # (inet_lookup): with no connection left on the pair, that is a
            # listener on the local port -- perhaps one just restored, which
            # must live.  Ask first (SOCK_DIAG_BY_FAMILY, same lookup).
            nl.send(struct.pack("<IHHII", 16 + len(req), sc.SOCK_DIAG_BY_FAMILY, 1, 1, 0) + req)
            got = nl.recv(4096)
            if struct.unpack_from("<H", got, 4)[0] == sc.NLMSG_ERROR or got[17] == sc.TCP_LISTEN:
                return  # nothing there, or only a listener
            nl.send(struct.pack("<IHHII", 16 + len(req), sc.SOCK_DESTROY, 1 | 4, 1, 0) + req)  # REQUEST|ACK
            err = -struct.unpack_from("<i", nl.recv(4096), 16)[0]
            if err:
                return  # ENOENT: nothing (more) there
    finally:
        nl.close()


def _connections_on(procs, listener: dict) -> list:
    """(local, peer) of the tree's established TCP sockets on a listener's
    port (its accepted connections), from the image."""
    out = []
    for p in procs:
        for f in p.files:
            o = f.state or {}
            if f.kind == KIND and o.get("state") == "established" and o["addr"][1] == listener["addr"][1] \
                    and o.get("family") == listener["family"]:
                out.append((o["addr"], o["peer"]))
    return out


def _restore_established(s: socket.socket, st: dict) -> None:
    def opt(name: str, value) -> None:
        try:
            # the repair options are named here, TCP_REPAIR itself in kernel/syscalls.py
            s.setsockopt(socket.IPPROTO_TCP, globals()[name] if name in globals() else getattr(sc, name), value)
        except OSError as e:
            raise OSError(e.errno, f"{name}: {e.strerror}") from None

    _destroy(st["family"], st["addr"], st["peer"])
    data = st["recv_queue"]
    if st.get("remote"):
        # through the dump's lock (netns.py), and deaf until complete: a
        # socket in repair mode would take in and acknowledge the peer's
        # retransmissions before its queue and window are back
        s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, netns.LOCK_MARK)
        s.setsockopt(socket.SOL_SOCKET, sc.SO_ATTACH_FILTER, _DROP_ALL.arg)
    opt("TCP_REPAIR", 1)
    opt("TCP_REPAIR_QUEUE", TCP_RECV_QUEUE)
    opt("TCP_QUEUE_SEQ", struct.pack("<I", (st["rcv_nxt"] - len(data)) & 0xFFFFFFFF))
    sndq = st.get("send_queue") or b""
    sent = sndq[: len(sndq) - st.get("send_notsent", 0)]
    opt("TCP_REPAIR_QUEUE", TCP_SEND_QUEUE)
    # the send queue starts at the first unacknowledged byte (snd_una)
    opt("TCP_QUEUE_SEQ", struct.pack("<I", (st["write_seq"] - len(sndq)) & 0xFFFFFFFF))
    _restore_device(s, st)
    for what, call, arg in (("bind", s.bind, st["addr"]), ("connect", s.connect, st["peer"])):
        try:
            call(tuple(arg))  # connect in repair mode: established at once, nothing sent
        except OSError as e:
            raise OSError(e.errno, f"{what} {arg[0]}:{arg[1]}: {e.strerror}") from None
    opts = [(TCPOPT_MSS, st["mss"])]
    if st["wscale"]:
        opts.append((TCPOPT_WINDOW, st["wscale"][0] | st["wscale"][1] << 16))
    if st["sack"]:
        opts.append((TCPOPT_SACK_PERM, 0))
    if st["timestamps"]:
        opts.append((TCPOPT_TIMESTAMP, 0))
    opt("TCP_REPAIR_OPTIONS", b"".join(struct.pack("<II", *o) for o in opts))
    if st["timestamps"]:
        opt("TCP_TIMESTAMP", struct.pack("<I", st["tsval"]))
    # sent in repair mode, bytes go to the queue chosen: the receive queue,
    # and the part of the send queue the peer had been sent (queued as sent
    # and not acknowledged: the retransmission timer sends it again); the
    # rest is sent normally once repair mode is left (after_tree)
    if sndq and s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < 2 * len(sndq):
        # a new socket's buffer (tcp_wmem[1]) may be smaller than the queue
        # the old one had grown to; a send that waits for room would wait
        # for acknowledgements that cannot come yet
        s.setsockopt(socket.SOL_SOCKET, sc.SO_SNDBUFFORCE, len(sndq))  # the kernel doubles it
    for q, b in ((TCP_RECV_QUEUE, data), (TCP_SEND_QUEUE, sent)):
        if b:
            opt("TCP_REPAIR_QUEUE", q)
            _send_now(s, b)
    opt("TCP_REPAIR_QUEUE", TCP_NO_QUEUE)
    # after the data: the window's rcv_wup may not lie beyond rcv_nxt
    opt("TCP_REPAIR_WINDOW", struct.pack("<5I", *st["window"]))
    # repair mode stays on until every process has its fds (after_tree)


def _send_now(s: socket.socket, b: bytes) -> None:
    done = 0
    while done < len(b):
        try:
            n = s.send(b[done:], socket.MSG_DONTWAIT)
        except BlockingIOError:
            n = 0
        if n <= 0:
            raise OSError(105, f"{len(b) - done} of {len(b)} queued bytes do not fit the socket buffer")  # ENOBUFS
        done += n


def after_tree(shared) -> None:
    """Leave repair mode once every process of the tree has its fds back:
    both ends of a connection between two processes exist by then, so the
    window probe sent on leaving finds the restored peer (not a closed port,
    which would answer with a reset)."""
    for s, st in shared.kinds.pop(KIND, []):
        try:
            s.setsockopt(socket.IPPROTO_TCP, sc.TCP_REPAIR, 0)
            sndq = st.get("send_queue") or b""
            notsent = sndq[len(sndq) - st.get("send_notsent", 0):]
            if notsent:  # never sent before the dump: an ordinary send now
                _send_now(s, notsent)
            if st.get("remote"):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, st.get("mark", 0))
                s.setsockopt(socket.SOL_SOCKET, sc.SO_DETACH_FILTER, 0)
            for k, v in st["opts"].items():
                if v:
                    s.setsockopt(*_OPTS[k], v)
            _restore_extras(s, st)
        except OSError as e:
            raise Failed(f"TCP connection {st['addr']}: leaving repair mode: {e.strerror}") from None
        finally:
            s.close()


def restore(rctx, f) -> int:
    st = f.state
    s = socket.socket(st["family"], socket.SOCK_STREAM)
    try:
        if "v6only" in st:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, st["v6only"])
        if st["state"] == "established":
            _restore_established(s, st)
            s.setblocking(not f.flags & os.O_NONBLOCK)
            shared = rctx.r.shared  # repair mode is left in after_tree
            ours = socket.socket(fileno=os.dup(s.fileno()))
            shared.kinds.setdefault(KIND, []).append((ours, st))
            shared.closers.append(ours.close)
            return s.detach()
        # bind in repair mode (SK_FORCE_REUSE); leaving it resets sk_reuse,
        # so the options come after, and listen last (a listener cannot
        # enter or leave repair mode)
        _restore_device(s, st)
        s.setsockopt(socket.IPPROTO_TCP, sc.TCP_REPAIR, 1)
        if st["bound"]:
            s.bind(tuple(st["addr"]))
        s.setsockopt(socket.IPPROTO_TCP, sc.TCP_REPAIR, 0)
        for k, v in st["opts"].items():
            if v:
                s.setsockopt(*_OPTS[k], v)
        _restore_extras(s, st)
        if st["state"] == "listen":
            # the dumped process's own connections may hold the port in TIME_WAIT
            # (killed, then restored on this node: every rollback); SO_REUSEADDR for
            # listen alone lets it pass, and on a listening socket it changes
            # nothing else, so the dumped value is put back after
            reuse = bool(st["opts"].get("reuseaddr"))
            if not reuse:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.listen(st["backlog"])
            except OSError as e:
                if e.errno != 98:  # EADDRINUSE
                    raise
                # the tree's own connections on this port, killed but not yet gone
                # (FIN_WAIT, LAST_ACK...: only TIME_WAIT lets a listener in): they
                # are restored afterwards anyway
                for pair in _connections_on(rctx.r.shared.procs, st):
                    _destroy(st["family"], *pair)
                s.listen(st["backlog"])
            if not reuse:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        s.setblocking(not f.flags & os.O_NONBLOCK)
    except OSError as e:
        s.close()
        raise Failed(f"TCP socket on {st['addr'][0]} port {st['addr'][1]}: {e.strerror}") from None
    return s.detach()
