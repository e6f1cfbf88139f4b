"""Network namespaces: where a tree lives, and keeping a remote TCP peer
unaware while the tree is away.

A tree whose processes live in a network namespace other than snapshotd's
(e.g. one made with `ip netns add`, standing for a host) is restored into
that namespace: the image records its inode (`/proc/PID/ns/net`) and, when
one of /run/netns/* is the same namespace, its name.  Restore enters it by
name, else through a process that still lives in it, else refuses.  The
restorer's own thread calls setns(CLONE_NEWNET): the stubs it spawns and the
sockets it creates (fdkinds/tcp.py) are then in that namespace; it goes back
to its own namespace afterwards.

TCP connections whose peer is on another host (no socket of the same
namespace holds the reverse address pair) can be dumped.  With `dump
--kill` the peer must not notice the tree going away and coming back, and
this machine has no netfilter (CRIU's network lock), so the lock is a
blackhole route to each such peer in the tree's namespace (in a table of
its own, see below), installed while the tree is frozen and BEFORE any
socket state is read:
  - nothing the tree's host sends to the peer leaves any more: not the ACK
    of bytes that arrive after the lock (so the peer will retransmit them to
    the restored socket, whose receive sequence is the dumped one), not data
    the process writes while it runs between the dump and the kill, and not
    the RST the kernel answers with for a segment to a closed port (measured
    here: the route lookup of the reset fails, nothing is sent; a cached
    route of an established socket is invalidated by the route change);
  - at kill, our own copy (pidfd_getfd) of each such socket keeps it open
    while the processes die; then it enters TCP_REPAIR and we close it: a
    close in repair mode sends no FIN or RST and leaves no FIN_WAIT socket
    behind (tcp_disconnect: repair -> ECONNABORTED locally, nothing sent);
  - restore rebuilds the socket in repair mode (tcp.py), marked so that
    it passes the lock and with a drop-all socket filter so that the peer's
    retransmissions cannot reach it half-built (a socket in repair mode
    still receives and acknowledges, measured here); both go once it is
    complete, and the lock goes once the whole tree runs again: the peer's
    next retransmission reaches the restored socket.
The routes stay until a restore succeeds (a failed restore can be retried).
Without --kill nothing is locked: the dump only reads the sockets (repair
mode in and out without a window probe) and the connection goes on.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
import time

from . import libc
from . import syscalls as sc

NETNS_RUN_DIR = "/run/netns"


class NetnsError(Exception):
    pass


def _setns(fd: int) -> None:
    if libc.dll.setns(ctypes.c_int(fd), ctypes.c_int(sc.CLONE_NEWNET)) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _ident(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _name_of(ident: tuple[int, int]) -> str:
    try:
        names = sorted(os.listdir(NETNS_RUN_DIR))
    except OSError:
        return ""
    for n in names:
        try:
            if _ident(os.path.join(NETNS_RUN_DIR, n)) == ident:
                return n
        except OSError:
            continue
    return ""


def of_tree(members) -> dict | None:
    """The network namespace of a frozen tree (FrozenTree.members: (pid,
    tids or None for a zombie)); "host" when it is snapshotd's own (restored
    into the restorer's namespace, whatever its inode then, e.g. after a
    reboot).  Raises
    NetnsError when the live processes are not all in one namespace."""
    ident = None
    first = 0
    for pid, tids in members:
        if tids is None:
            continue  # a zombie has no namespaces left
        got = _ident(f"/proc/{pid}/ns/net")
        if ident is None:
            ident, first = got, pid
        elif got != ident:
            raise NetnsError(f"PID {pid} is in network namespace net:[{got[1]}], PID {first} in net:[{ident[1]}]: "
                             "a tree spanning several network namespaces is not supported")
    if ident is None:
        return None  # only zombies: they have no namespace to return to
    return {"dev": ident[0], "inode": ident[1], "name": _name_of(ident),
            "host": ident == _ident("/proc/self/ns/net"), "locked": []}


def _find(rec: dict, notes: list) -> str:
    """A path to open for the recorded namespace."""
    if rec.get("host"):
        return "/proc/thread-self/ns/net"
    ident = (rec["dev"], rec["inode"])
    name = rec.get("name") or ""
    if name and os.path.exists(os.path.join(NETNS_RUN_DIR, name)):
        path = os.path.join(NETNS_RUN_DIR, name)
        if _ident(path) != ident:
            notes.append(f"network namespace {name} was recreated since the dump (net:[{rec['inode']}] is gone): "
                         "restoring into the namespace of that name")
        return path
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if _ident(f"/proc/{d}/ns/net") == ident:
                    return f"/proc/{d}/ns/net"
            except OSError:
                continue
    what = f"{name} (net:[{rec['inode']}])" if name else f"net:[{rec['inode']}]"
    raise NetnsError(f"the network namespace {what} the tree was dumped in no longer exists")


@contextlib.contextmanager
def entered(rec: dict | None, notes: list):
    """Run the block in the recorded namespace (this thread only), then come
    back.  rec None: an image without the record (older, or only zombies):
    the restorer's namespace."""
    if not rec:
        yield
        return
    path = _find(rec, notes)
    if _ident(path) == _ident("/proc/thread-self/ns/net"):
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(fd)
        except OSError as e:
            raise NetnsError(f"cannot enter network namespace {path}: {e.strerror}") from None
        finally:
            os.close(fd)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


@contextlib.contextmanager
def _socket_in(pid_or_path, *args):
    """A socket created in another network namespace (a socket stays in the
    namespace it was created in)."""
    path = pid_or_path if isinstance(pid_or_path, str) else f"/proc/{pid_or_path}/ns/net"
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(fd)
            try:
                s = socket.socket(*args)
            finally:
                _setns(home)
        finally:
            os.close(fd)
    finally:
        os.close(home)
    try:
        yield s
    finally:
        s.close()


# ---- the TCP table of a namespace (/proc/PID/net/tcp, tcp6) ----

def _addr(hexaddr: str) -> str:
    a, port = hexaddr.split(":")
    raw = bytes.fromhex(a)
    # the kernel prints each 32-bit word in host order (little endian here)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    fam = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return socket.inet_ntop(fam, raw), int(port, 16)


def tcp_table(pid: int) -> list[tuple[tuple, tuple, int, int]]:
    """Every TCP socket of pid's network namespace: (local, remote, state,
    inode) with addresses as (ip string, port)."""
    out = []
    for f in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{f}") as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for ln in lines:
            x = ln.split()
            out.append((_addr(x[1]), _addr(x[2]), int(x[3], 16), int(x[9])))
    return out


def norm_addr(a) -> tuple:
    """(ip, port) with a v4-mapped IPv6 address (::ffff:a.b.c.d) as its IPv4 one."""
    ip = a[0]
    if ip.startswith("::ffff:") and "." in ip:
        ip = ip[7:]
    return ip, a[1]


def peer_is_remote(pid: int, local, peer) -> bool:
    """True when no socket of pid's network namespace is the other end of
    the connection local -> peer: the peer is on another host (or another
    namespace)."""
    want = (norm_addr(peer), norm_addr(local))
    return not any((norm_addr(lo), norm_addr(re)) == want for lo, re, _st, _ino in tcp_table(pid))


# ---- the lock: blackhole routes to remote peers ----
#
# A blackhole route in the main table would also make the restored socket's
# connect() fail (the route lookup answers EINVAL).  So the routes live in a
# table of their own, consulted by one rule for packets WITHOUT our mark:
#     ip rule add pref LOCK_PREF not fwmark LOCK_MARK lookup LOCK_TABLE
#     ip route add blackhole PEER table LOCK_TABLE
# Everything the host sends to PEER (data, ACKs, FIN, and the RST the kernel
# answers with for a segment to a closed port, whose reply mark is 0) is
# dropped; a restored socket carries LOCK_MARK (SO_MARK) until it is fully
# built, so its connect() passes (tcp.py).  Destinations without a route in
# LOCK_TABLE fall through to the main table: other peers are not affected.

LOCK_TABLE = 0x736E6170  # "snap"
LOCK_MARK = 0x736E6170
LOCK_PREF = 1  # right after the local table (pref 0), before main
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE, RTM_NEWRULE, RTM_DELRULE = 24, 25, 26, 32, 33
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP, NLM_F_EXCL, NLM_F_CREATE = 1, 4, 0x300, 0x200, 0x400
RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_BLACKHOLE = 4, 0, 6
RTA_DST, RTA_TABLE = 1, 15
FRA_PRIORITY, FRA_FWMARK, FRA_TABLE, FRA_FWMASK = 6, 10, 15, 16
FR_ACT_TO_TBL, FIB_RULE_INVERT = 1, 2


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _attr(kind: int, data: bytes) -> bytes:
    return struct.pack("<HH", 4 + len(data), kind) + data + bytes(-len(data) % 4)


def _ask(nl: socket.socket, op: int, flags: int, body: bytes) -> int:
    """One rtnetlink request; 0 or the negative errno of the answer."""
    nl.send(struct.pack("<IHHII", 16 + len(body), op, NLM_F_REQUEST | NLM_F_ACK | flags, 1, 0) + body)
    got = nl.recv(65536)
    if struct.unpack_from("<H", got, 4)[0] != sc.NLMSG_ERROR:
        return 0
    return struct.unpack_from("<i", got, 16)[0]


def _route(nl: socket.socket, op: int, ip: str) -> int:
    fam = _family(ip)
    raw = socket.inet_pton(fam, ip)
    rtm = struct.pack("<BBBBBBBBI", fam, len(raw) * 8, 0, 0, 0, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_BLACKHOLE, 0)
    body = rtm + _attr(RTA_DST, raw) + _attr(RTA_TABLE, struct.pack("<I", LOCK_TABLE))
    return _ask(nl, op, NLM_F_CREATE | NLM_F_EXCL if op == RTM_NEWROUTE else 0, body)


def _rule(nl: socket.socket, op: int, fam: int) -> int:
    frh = struct.pack("<BBBBBBBBI", fam, 0, 0, 0, 0, 0, 0, FR_ACT_TO_TBL, FIB_RULE_INVERT)
    body = (frh + _attr(FRA_PRIORITY, struct.pack("<I", LOCK_PREF)) + _attr(FRA_FWMARK, struct.pack("<I", LOCK_MARK))
            + _attr(FRA_FWMASK, struct.pack("<I", 0xFFFFFFFF)) + _attr(FRA_TABLE, struct.pack("<I", LOCK_TABLE)))
    return _ask(nl, op, NLM_F_CREATE | NLM_F_EXCL if op == RTM_NEWRULE else 0, body)


def _table_has_routes(nl: socket.socket, fam: int) -> bool:
    """Any route left in LOCK_TABLE for fam (RTM_GETROUTE dump)?"""
    rtm = struct.pack("<BBBBBBBBI", fam, 0, 0, 0, 0, 0, 0, 0, 0)
    nl.send(struct.pack("<IHHII", 16 + len(rtm), RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, 2, 0) + rtm)
    found = False
    while True:
        got = nl.recv(65536)
        off = 0
        while off < len(got):
            ln, typ = struct.unpack_from("<IH", got, off)
            if typ in (sc.NLMSG_DONE, sc.NLMSG_ERROR):
                return found
            a = off + 16 + 12
            while a < off + ln:
                alen, akind = struct.unpack_from("<HH", got, a)
                if akind == RTA_TABLE and struct.unpack_from("<I", got, a + 4)[0] == LOCK_TABLE:
                    found = True
                a += (alen + 3) & ~3
            off += (ln + 3) & ~3


def _lock(nl: socket.socket, peers: list[str]) -> list[str]:
    """Install the rule (once per family) and a route per peer; returns the
    peers whose route we added.  Raises NetnsError (nothing left behind)."""
    added: list[str] = []
    for fam in sorted({_family(ip) for ip in peers}):
        err = _rule(nl, RTM_NEWRULE, fam)
        if err and err != -sc.EEXIST:  # EEXIST: another tree's lock is in place
            raise NetnsError(f"cannot cut the tree off from its TCP peers (ip rule): {os.strerror(-err)}")
    for ip in peers:
        err = _route(nl, RTM_NEWROUTE, ip)
        if err and err != -sc.EEXIST:
            _unlock(nl, added)
            raise NetnsError(f"cannot cut the tree off from its TCP peer {ip} (blackhole route): {os.strerror(-err)}")
        if not err:
            added.append(ip)
    return added


def _unlock(nl: socket.socket, peers: list[str]) -> None:
    fams = {socket.AF_INET, socket.AF_INET6}
    for ip in peers:
        _route(nl, RTM_DELROUTE, ip)
    for fam in fams:
        if not _table_has_routes(nl, fam):
            _rule(nl, RTM_DELRULE, fam)  # ENOENT when this family had none: fine


class PeerLock:
    """The lock (above) towards the remote TCP peers of a frozen tree, and
    our copies of the sockets concerned (closed silently at kill)."""

    def __init__(self, members):
        self.members = [(p, t) for p, t in members if t is not None]
        self.peers: list[str] = []  # routes we installed
        self.held: list[socket.socket] = []
        self.nspath = ""

    def take(self) -> None:
        if not self.members:
            return
        root = self.members[0][0]
        table = tcp_table(root)
        pairs = {(norm_addr(lo), norm_addr(re)) for lo, re, _s, _i in table}
        remote = {}  # inode -> peer ip
        for lo, re, st, ino in table:
            if st == sc.TCP_ESTABLISHED and (norm_addr(re), norm_addr(lo)) not in pairs:
                remote[ino] = norm_addr(re)[0]
        if not remote:
            return
        peers: set[str] = set()
        for pid, _tids in self.members:
            pidfd = -1
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    try:
                        link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    except OSError:
                        continue
                    if not link.startswith("socket:[") or int(link[8:-1]) not in remote:
                        continue
                    if pidfd < 0:
                        pidfd = os.pidfd_open(pid)
                    self.held.append(socket.socket(fileno=libc.pidfd_getfd(pidfd, int(fd))))
                    peers.add(remote[int(link[8:-1])])
            finally:
                if pidfd >= 0:
                    os.close(pidfd)
        if not peers:
            return
        self.nspath = f"/proc/{root}/ns/net"
        with _socket_in(self.nspath, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as nl:
            try:
                self.peers = _lock(nl, sorted(peers))
            except NetnsError:
                self.release()
                raise

    def record(self) -> list[str]:
        return list(self.peers)

    def close_silently(self, pids) -> None:
        """After SIGKILL of pids: once they are dead, our copies are the last
        references; closed in repair mode, they send nothing."""
        end = time.monotonic() + 5
        for pid in pids:
            while time.monotonic() < end:
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        if f.read().rsplit(")", 1)[1].split()[0] in "ZX":
                            break
                except OSError:
                    break
                time.sleep(0.001)
        for s in self.held:
            try:
                s.setsockopt(socket.IPPROTO_TCP, sc.TCP_REPAIR, 1)
            except OSError:
                pass  # not established any more: the lock still hides its close
            s.close()
        self.held = []

    def release(self) -> None:
        """The dump failed: remove our routes (and the rule if it is unused),
        let the sockets be."""
        for s in self.held:
            s.close()
        self.held = []
        if self.peers:
            with _socket_in(self.nspath, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as nl:
                _unlock(nl, self.peers)
        self.peers = []


def unlock(rec: dict | None) -> None:
    """After a restore (called inside entered()): remove the routes the
    dump installed, and the rule once no lock needs it; missing ones are
    fine (e.g. a namespace recreated since)."""
    if not rec or not rec.get("locked"):
        return
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        _unlock(nl, rec["locked"])
    finally:
        nl.close()
