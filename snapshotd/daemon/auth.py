"""Who is calling, and what they may touch.

The daemon runs as root. Each connection's peer is identified by the kernel
(SO_PEERCRED on the unix socket: pid, uid, gid of the connecting process at
connect time), never by anything the client says. Root may do anything; any
other user acts only on processes whose real uid is theirs, and on jobs and
rounds they own:
- a job belongs to the uid of its processes, and its name is scoped by that
  uid (storage/rounds.py job_key: "NAME" for root, "UID:NAME" otherwise), so
  names of different users never meet;
- a round belongs, forever, to the uid recorded in it when it was taken;
- no process of a non-root owner's tree may hold more than that uid has
  (privilege.py), at register, at every round, and in an image restored.
docs/SECURITY.md has the threat model.
"""
from __future__ import annotations

import errno
import os
import signal
import socket
import stat
import struct

from ..kernel import privilege, procfs
from ..storage import rounds as roundstore
from .round import start_time


class Denied(Exception):
    pass


def peercred(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a unix socket."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)


def _start_time_and_uid(pid: int) -> tuple[int, int] | None:
    """(start time, real uid) of pid, None if gone or a zombie."""
    st = start_time(pid)
    try:
        return None if st is None else (st, int(procfs.status(pid)["Uid"].split()[0]))
    except (procfs.ProcGone, KeyError, ValueError, IndexError):
        return None


def claim_process(caller_uid: int, pid: int) -> tuple[int, int]:
    """(owner uid, start time) of pid, if the caller may register it.

    Race-free against PID reuse: a pidfd pins the process first; its start
    time, owner and tree are read; then the pidfd must still name a live
    process (pidfd_send_signal with signal 0), so what was read was that
    process and not one that took the PID meanwhile."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise Denied(f"no process with PID {pid}") from None
    except OSError as e:
        raise Denied(f"PID {pid}: {e.strerror}") from None
    try:
        got = _start_time_and_uid(pid)
        if got is None:
            raise Denied(f"no process with PID {pid}")
        st, owner = got
        if caller_uid != 0 and owner != caller_uid:
            raise Denied(f"permission denied: PID {pid} belongs to uid {owner}, not to you (uid {caller_uid})")
        if owner != 0:
            why = privilege.tree_excess(pid, owner)
            if why:
                raise Denied(f"permission denied: the tree of PID {pid} holds privileges uid {owner} does not "
                             f"have ({why}); only root's processes may be privileged")
        try:
            signal.pidfd_send_signal(pidfd, 0)
        except ProcessLookupError:
            raise Denied(f"no process with PID {pid} (it exited)") from None
        return owner, st
    finally:
        os.close(pidfd)


def require_key(caller_uid: int, key: str) -> None:
    """The caller may act on the job with this key (its own, or root)."""
    owner, name = roundstore.split_key(key)
    if caller_uid != 0 and owner != caller_uid:
        raise Denied(f"permission denied: job {name} belongs to uid {owner}, not to you (uid {caller_uid})")


def may_see(caller_uid: int, owner_uid: int) -> bool:
    return caller_uid == 0 or caller_uid == owner_uid


def may_signal(owner_uid: int, pid: int) -> bool:
    """Whether a process of owner_uid could itself kill pid (kill(2): the
    sender's uid is the target's real or saved uid); root's jobs may kill
    any process of their tree."""
    if owner_uid == 0:
        return True
    try:
        uids = procfs.status(pid)["Uid"].split()
        return str(owner_uid) in (uids[0], uids[2])
    except (procfs.ProcGone, KeyError, IndexError):
        return False


def check_store_private(path: str) -> None:
    """The daemon restores what its store says (credentials, files, code),
    and verify proves integrity, not authenticity (docs/SECURITY.md): so the
    store and what it holds must be root's and writable by root only."""
    for sub in ("", "snapshots", "packs", "rounds", "daemon"):
        p = os.path.join(path, sub)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            raise OSError(errno.EPERM, "a store must be directories owned by root and writable by root only "
                          f"(this one: uid {st.st_uid}, mode {stat.filemode(st.st_mode)}); snapshot images are "
                          "trusted, see docs/SECURITY.md", p)
