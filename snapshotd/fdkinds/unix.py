"""Unix sockets (AF_UNIX): stream, datagram and seqpacket; unnamed pairs and
named (bound) sockets; connected, listening and unconnected; with the data
queued in each receive queue, message by message.

Dump: take the socket with pidfd_getfd (same open file), ask sock_diag
(NETLINK_SOCK_DIAG, linux/unix_diag.h) for its state, name, peer inode,
pending connections and shutdown mask, and read the receive queue without
consuming it: MSG_PEEK with SO_PEEK_OFF moving forward (one datagram per
recvmsg for dgram/seqpacket, so boundaries are kept), then SO_PEEK_OFF back
to its old value.

Restore builds all unix sockets of the whole tree at once, on snapshotd's
side (peers need each other, and may be in different processes), keyed by
the dumped inode: a socket several processes hold (inherited across fork)
is built once and handed to each of them, so they share one description.
Order: listeners (bind + listen), bound sockets, connected
stream/seqpacket pairs (socketpair(2) when unnamed; else connect to the
name through the restored listener or a short-lived one, then accept, so
both ends carry their names), datagram connects, then the queued data sent
again from the peer, buffer sizes, shutdowns, SO_PEEK_OFF.  Relative names
are bound in the working directory of the dumped process holding the
socket.

Limits (refused at dump): a peer outside the dumped tree (fdkinds.check_tree), a listener with
connections not yet accepted, queued file descriptors or credentials
(SCM_RIGHTS/SCM_CREDENTIALS), zero-length datagrams, a connected datagram
socket whose peer is gone.  Not kept: SO_PEERCRED of restored pairs
(snapshotd's own credentials), the sender address of a datagram queued on an
unconnected socket by a socket outside the process.
"""
from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct

from ..kernel import syscalls as sc
from .errors import Failed, Unsupported

KIND = "unix"
# unix_diag.h
UDIAG_SHOW_NAME, UDIAG_SHOW_PEER, UDIAG_SHOW_ICONS, UDIAG_SHOW_RQLEN = 0x1, 0x4, 0x8, 0x10
UNIX_DIAG_NAME, UNIX_DIAG_PEER, UNIX_DIAG_ICONS, UNIX_DIAG_RQLEN, UNIX_DIAG_SHUTDOWN = 0, 2, 3, 4, 6
SEND_SHUTDOWN = 2
PEEK_BUF = 1 << 22


def diag(ino: int) -> dict:
    """sock_diag of one unix socket by inode."""
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, sc.NETLINK_SOCK_DIAG)
    try:
        req = struct.pack("=BBHIIIII", socket.AF_UNIX, 0, 0, 0xFFFFFFFF, ino,
                          UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN | 0x80,  # 0x80: SHUTDOWN
                          0xFFFFFFFF, 0xFFFFFFFF)
        nl.send(struct.pack("=IHHII", 16 + len(req), sc.SOCK_DIAG_BY_FAMILY, 1, 1, 0) + req)
        data = nl.recv(1 << 16)
    finally:
        nl.close()
    ln, typ = struct.unpack_from("=IH", data)
    if typ == sc.NLMSG_ERROR:
        err = -struct.unpack_from("=i", data, 16)[0]
        raise OSError(err, f"sock_diag of socket:[{ino}]: {os.strerror(err)}")
    _fam, stype, state, _pad, got = struct.unpack_from("=BBBBI", data, 16)
    out = {"type": stype, "state": state, "name": None, "peer": 0, "icons": [], "rqlen": (0, 0), "shutdown": 0}
    off = 16 + 16
    while off + 4 <= ln:
        alen, atype = struct.unpack_from("=HH", data, off)
        body = data[off + 4: off + alen]
        if atype == UNIX_DIAG_NAME:
            out["name"] = body
        elif atype == UNIX_DIAG_PEER:
            out["peer"] = struct.unpack("=I", body)[0]
        elif atype == UNIX_DIAG_ICONS:
            out["icons"] = list(struct.unpack(f"={len(body) // 4}I", body))
        elif atype == UNIX_DIAG_RQLEN:
            out["rqlen"] = struct.unpack("=II", body)
        elif atype == UNIX_DIAG_SHUTDOWN:
            out["shutdown"] = body[0]
        off += (alen + 3) & ~3
    return out


def _peek_queue(ctx, fd: int, link: str, s: socket.socket, stream: bool) -> list:
    """The receive queue, without consuming it: [(data, sender name)]."""
    old = s.getsockopt(socket.SOL_SOCKET, sc.SO_PEEK_OFF)
    s.setsockopt(socket.SOL_SOCKET, sc.SO_PEEK_OFF, 0)
    msgs = []
    try:
        while True:
            try:
                data, anc, flags, addr = s.recvmsg(PEEK_BUF, 1024, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if anc:
                for level, typ, body in anc:  # close the fds the peek handed us
                    if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                        for f in struct.unpack(f"{len(body) // 4}i", body[: len(body) // 4 * 4]):
                            os.close(f)
                raise ctx.refuse(fd, f"{link} has queued file descriptors or credentials, which are not supported")
            if flags & socket.MSG_TRUNC:
                raise ctx.refuse(fd, f"{link} has a queued message larger than {PEEK_BUF} bytes")
            if not data:
                if stream:
                    break  # end of stream after shutdown
                raise ctx.refuse(fd, f"{link} has a zero-length datagram queued, which is not supported")
            if stream and msgs:
                msgs[-1][0] += data
            else:
                msgs.append([data, _name_rec(addr if isinstance(addr, bytes) else os.fsencode(addr or ""))])
    finally:
        s.setsockopt(socket.SOL_SOCKET, sc.SO_PEEK_OFF, old)
    return [[m[0], m[1]] for m in msgs]


def _name_rec(raw: bytes | None):
    """sun_path bytes -> JSON-able name: {"path": str} / {"abstract": hex} / None."""
    if not raw:
        return None
    if raw[0] == 0:
        return {"abstract": raw[1:].hex()}
    return {"path": os.fsdecode(raw.rstrip(b"\0"))}


def _addr(name: dict):
    return b"\0" + bytes.fromhex(name["abstract"]) if "abstract" in name else name["path"]


def _has_peer(s: socket.socket) -> bool:
    try:
        s.getpeername()
        return True
    except OSError:
        return False


def dump(ctx, fd: int, link: str, info: str) -> dict:
    ours = ctx.grab(fd)
    s = socket.socket(fileno=ours)
    try:
        typ = s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        ino = int(link[len("socket:["):-1])
        try:
            d = diag(ino)
        except OSError as e:
            raise ctx.refuse(fd, f"{link}: {e.strerror}") from None
        rec = {
            "ino": ino, "type": typ, "name": _name_rec(d["name"]), "peer": d["peer"],
            "shutdown": d["shutdown"], "backlog": 0, "queue": [],
            "sndbuf": s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            "rcvbuf": s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            "passcred": s.getsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED),
            "peek_off": s.getsockopt(socket.SOL_SOCKET, sc.SO_PEEK_OFF),
        }
        if d["state"] == sc.TCP_LISTEN:
            if d["icons"] or d["rqlen"][0]:
                raise ctx.refuse(fd, f"{link} (listening) has {max(len(d['icons']), d['rqlen'][0])} connections not yet accepted, which is not supported")
            rec["state"], rec["backlog"] = "listen", d["rqlen"][1]
        else:
            if typ == socket.SOCK_DGRAM:
                # datagram sockets show TCP_ESTABLISHED once anyone connect()ed
                # to them; connected means having a peer.  A dead peer has no
                # inode any more, but getpeername still answers for it
                rec["state"] = "connected" if rec["peer"] else "unconnected"
                if not rec["peer"] and _has_peer(s):
                    raise ctx.refuse(fd, f"{link} is a datagram socket connected to a closed peer; not supported")
            else:
                rec["state"] = "connected" if d["state"] == sc.TCP_ESTABLISHED else "unconnected"
            rec["queue"] = _peek_queue(ctx, fd, link, s, typ == socket.SOCK_STREAM)
        return rec
    finally:
        s.close()


def check_tree(socks: dict) -> None:
    """Every connected peer must be in the dumped tree.  socks: inode ->
    (pid, fd, record) of every unix socket of the tree (one per socket: a
    socket shared by several processes is one open file description)."""
    for ino, (pid, fd, r) in socks.items():
        if r["state"] != "connected":
            continue
        link = f"socket:[{ino}]"
        if r["peer"] == 0:
            continue  # a stream whose peer was closed: restored as such
        if r["peer"] not in socks:
            raise Unsupported(f"PID {pid} fd {fd}: {link} is connected to socket:[{r['peer']}] outside the process "
                              "tree; not supported")
        peer = socks[r["peer"]][2]
        if r["type"] == socket.SOCK_DGRAM and peer["peer"] != ino and not peer["name"]:
            raise Unsupported(f"PID {pid} fd {fd}: {link} is connected to an unnamed datagram socket that is not its "
                              "pair; not supported")


# ---- restore ----

@contextlib.contextmanager
def _in_dir(path: str):
    """Relative socket names resolve against the dumped process's cwd."""
    here = os.open(".", os.O_PATH | os.O_CLOEXEC)
    try:
        try:
            os.chdir(path)
        except OSError:
            os.chdir("/")
        yield
    finally:
        os.fchdir(here)
        os.close(here)


def _bind(s: socket.socket, name: dict) -> None:
    addr = _addr(name)
    if isinstance(addr, str):
        try:
            if stat.S_ISSOCK(os.lstat(addr).st_mode):
                os.unlink(addr)  # left over from the dumped process
        except FileNotFoundError:
            pass
    s.bind(addr)


def _tree_sockets(procs) -> tuple[dict, dict]:
    """inode -> record and inode -> working directory of the process that
    holds it, for every unix socket of the tree (a socket held by several
    processes is one open file description: built once)."""
    st, cwd = {}, {}
    for p in procs:
        if p.zombie:
            continue
        for f in p.files:
            if f.kind == KIND and f.state["ino"] not in st:
                st[f.state["ino"]] = f.state
                cwd[f.state["ino"]] = p.cwd
    return st, cwd


def _build(procs) -> dict:
    """Every unix socket of the tree, keyed by its dumped inode, built on our
    side at once (peers may be in different processes) and handed to each
    process that holds it."""
    st, cwd = _tree_sockets(procs)
    socks: dict[int, socket.socket] = {}
    orphans: dict[int, socket.socket] = {}  # the other end of a pair whose peer was closed
    paired: set[int] = set()  # made by socketpair (dgram: already connected)
    listeners = {}
    try:
        for i, s in st.items():
            if s["state"] == "listen":
                ls = socks[i] = socket.socket(socket.AF_UNIX, s["type"])
                with _in_dir(cwd[i]):
                    _bind(ls, s["name"])
                ls.listen(s["backlog"])
                listeners[repr(s["name"])] = ls
        for i, s in st.items():
            if i in socks:
                continue
            j = s["peer"] if s["peer"] in st else None
            mutual = j is not None and st[j]["peer"] == i
            if s["type"] != socket.SOCK_DGRAM and s["state"] == "connected":
                with _in_dir(cwd[i]):
                    if j is None:
                        a, b = _stream_pair(s, None, listeners)
                        socks[i], orphans[i] = a, b
                    else:
                        socks[i], socks[j] = _stream_pair(s, st[j], listeners)
                continue
            if s["type"] == socket.SOCK_DGRAM and mutual and not s["name"] and not st[j]["name"]:
                socks[i], socks[j] = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
                paired.update((i, j))
                continue
            socks[i] = socket.socket(socket.AF_UNIX, s["type"])
            if s["name"]:
                with _in_dir(cwd[i]):
                    _bind(socks[i], s["name"])
        for i, s in st.items():
            if s["type"] == socket.SOCK_DGRAM and s["peer"] and i not in paired:
                with _in_dir(cwd[s["peer"]]):
                    socks[i].connect(_addr(st[s["peer"]]["name"]))
        for i, s in st.items():
            so = socks[i]
            for opt, v in ((sc.SO_SNDBUFFORCE, s["sndbuf"] // 2), (sc.SO_RCVBUFFORCE, s["rcvbuf"] // 2)):
                so.setsockopt(socket.SOL_SOCKET, opt, v)  # the kernel doubles what it is given
            if s["passcred"]:
                so.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        notes: list[str] = []
        for i, s in st.items():
            if s["queue"]:
                with _in_dir(cwd[i]):
                    _requeue(notes, i, s, socks, orphans, st)
        for i, s in st.items():
            if i in orphans:
                orphans.pop(i).close()  # the peer was closed: EOF after the data
            elif s["shutdown"] & SEND_SHUTDOWN or (s["type"] == socket.SOCK_DGRAM and s["shutdown"]):
                how = s["shutdown"] - 1 if s["type"] == socket.SOCK_DGRAM else socket.SHUT_WR
                socks[i].shutdown(how)
            if s["peek_off"] != -1:
                socks[i].setsockopt(socket.SOL_SOCKET, sc.SO_PEEK_OFF, s["peek_off"])
    except BaseException:
        for so in [*socks.values(), *orphans.values()]:
            so.close()
        raise
    return socks, notes


def _stream_pair(a: dict, b: dict | None, listeners: dict):
    """A connected stream/seqpacket pair (a's end first) with the names the
    dumped ends had."""
    names = (a["name"], b["name"] if b else None)
    if not any(names):
        return socket.socketpair(socket.AF_UNIX, a["type"])
    # the end with a name connects to the other's name: whichever accepts
    # gets the listener's name, the connector keeps the one it bound
    if names[1] is None or (names[0] and repr(names[0]) in listeners):
        srv_name, cli_name, flip = names[0], names[1], True
    else:
        srv_name, cli_name, flip = names[1], names[0], False
    cli = socket.socket(socket.AF_UNIX, a["type"])
    if cli_name:
        _bind(cli, cli_name)
    lst = listeners.get(repr(srv_name))
    temp = lst is None
    if temp:
        lst = socket.socket(socket.AF_UNIX, a["type"])
        addr = _addr(srv_name)
        existed = isinstance(addr, str) and os.path.lexists(addr)
        _bind(lst, srv_name)
        lst.listen(1)
    try:
        cli.connect(_addr(srv_name))
        srv, _ = lst.accept()
    finally:
        if temp:
            lst.close()
            if isinstance(addr, str) and not existed:
                os.unlink(addr)
    return (srv, cli) if flip else (cli, srv)


def _requeue(notes, i, s, socks, orphans, st):
    """Send i's saved receive queue to it again: a stream or seqpacket from
    its peer; a datagram from the socket that sent it if that is ours (a
    connected datagram socket only receives from its peer), else from a
    fresh unnamed socket."""
    j = s["peer"] if s["peer"] in st else None
    named = {repr(st[k]["name"]): k for k in st if st[k]["name"]}
    tmp = None
    try:
        for data, sender in s["queue"]:
            if s["type"] != socket.SOCK_DGRAM:
                src = orphans.get(i) or socks[j]
                src.setblocking(False)
                if s["type"] == socket.SOCK_STREAM:
                    src.sendall(data)
                elif src.send(data) != len(data):
                    raise Failed(f"socket:[{s['ino']}]: a queued message was cut")
                continue
            k = named.get(repr(sender)) if sender else (j if s["state"] == "connected" else None)
            if k is not None and st[k]["peer"] == s["ino"]:
                socks[k].setblocking(False)
                socks[k].send(data)  # connected to i (a socketpair, or connect()ed to i's name)
                continue
            if not s["name"]:
                raise Failed(f"socket:[{s['ino']}]: no way to requeue its datagrams")
            if k is None:
                if sender:
                    notes.append(f"socket:[{s['ino']}]: a queued datagram from {sender} now comes from an unnamed socket")
                tmp = tmp or socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            src = socks[k] if k is not None else tmp
            src.setblocking(False)
            src.sendto(data, _addr(s["name"]))
    except BlockingIOError:
        raise Failed(f"socket:[{s['ino']}]: its queued data no longer fits in the socket buffers") from None
    except OSError as e:
        raise Failed(f"socket:[{s['ino']}]: requeueing its data failed: {e.strerror}") from None
    finally:
        if tmp:
            tmp.close()


def restore(rctx, f) -> int:
    """Our fd for f: a new fd of the one socket built for its inode (the
    tree-wide set is built on the first call, kept in SharedObjects)."""
    shared = rctx.r.shared
    built = shared.kinds.get(KIND)
    if built is None:
        try:
            built, notes = _build(shared.procs)
        except OSError as e:
            raise Failed(f"unix sockets: {e}") from None
        shared.kinds[KIND] = built
        shared.notes.extend(notes)
        shared.closers.extend(so.close for so in built.values())
    so = built[f.state["ino"]]
    fd = os.dup(so.fileno())
    os.set_blocking(fd, not f.flags & os.O_NONBLOCK)
    return fd
