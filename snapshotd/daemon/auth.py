"""Who is calling, and what they may touch.

The daemon runs as root. Each connection's peer is identified by the kernel
(SO_PEERCRED on the unix socket: pid, uid, gid of the connecting process at
connect time), never by anything the client says. Root may do anything; any
other user only acts on processes whose real uid is theirs and on jobs they
own (the uid that registered the job's first tree)."""
from __future__ import annotations

import socket
import struct

from .. import procfs
from ..round import unprivileged_as  # noqa: F401 (part of this module's API)


class Denied(Exception):
    pass


def peercred(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a unix socket."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)


def process_uid(pid: int) -> int | None:
    """Real uid of pid (/proc/PID/status Uid: real, effective, saved, fs), None if gone."""
    try:
        return int(procfs.status(pid)["Uid"].split()[0])
    except (procfs.ProcGone, KeyError, ValueError, IndexError):
        return None


def require_process(caller_uid: int, pid: int) -> int:
    """The owner uid of pid, if the caller may act on it."""
    owner = process_uid(pid)
    if owner is None:
        raise Denied(f"no process with PID {pid}")
    if caller_uid != 0 and owner != caller_uid:
        raise Denied(f"permission denied: PID {pid} belongs to uid {owner}, not to you (uid {caller_uid})")
    if owner != 0:
        why = unprivileged_as(pid, owner)
        if why:
            raise Denied(f"permission denied: PID {pid} is privileged ({why}); only root may register it")
    return owner


def require_job(caller_uid: int, job: str, owner_uid: int) -> None:
    if caller_uid != 0 and owner_uid != caller_uid:
        raise Denied(f"permission denied: job {job} belongs to uid {owner_uid}, not to you (uid {caller_uid})")


def may_see(caller_uid: int, owner_uid: int) -> bool:
    return caller_uid == 0 or caller_uid == owner_uid
