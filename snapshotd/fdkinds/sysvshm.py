"""SysV shared memory (shmget/shmat) attached in the process.

Dump: a mapping named "/SYSV<key>" has the segment id as its inode
(/proc/PID/maps); /proc/sysvipc/shm gives key, mode (with SHM_DEST once
IPC_RMID was called) and size.  The content is read through the process's
own mapping (/proc/PID/mem), which does not touch the segment's attach count
or times, and saved like a tmpfs file: a segment does not survive a reboot.

Restore: the segment is used again if one with that id, key and size still
exists, else created with the same id (/proc/sys/kernel/shm_next_id names
the id the next shmget gets, CONFIG_CHECKPOINT_RESTORE) and key; either way
it gets the saved content, and the target attaches it with an injected
shmat(2) at the dumped address.  A segment that was marked for removal is
marked again once attached.  Only whole-segment attachments are supported;
the segment's owner and creator become root (whoever restores).
"""
from __future__ import annotations

import os

from ..kernel import libc
from ..kernel import syscalls as sc
from .errors import Failed, Unsupported


def segments() -> dict[int, dict]:
    out = {}
    with open("/proc/sysvipc/shm") as f:
        next(f)
        for line in f:
            v = line.split()
            out[int(v[1])] = {"key": int(v[0]), "id": int(v[1]), "mode": int(v[2], 8), "size": int(v[3]),
                              "uid": int(v[7]), "gid": int(v[8])}
    return out


def dump_mapping(dumper, m, start: int, end: int) -> dict:
    """The record of a SysV mapping; saves the segment's content once."""
    shmid = m.inode
    seg = segments().get(shmid)
    where = f"PID {dumper.pid}: SysV shared memory {m.path} (id {shmid})"
    if seg is None:
        raise Unsupported(f"{where} is not in /proc/sysvipc/shm (another IPC namespace?); not supported")
    if m.offset != 0 or start != m.start or end - start != (seg["size"] + sc.PAGE - 1) // sc.PAGE * sc.PAGE:
        raise Unsupported(f"{where} is mapped only in part; not supported")
    key = f"sysv:{shmid}"
    if key not in dumper.saved_content:
        fd = os.open(f"/proc/{dumper.pid}/mem", os.O_RDONLY)
        try:
            data = os.pread(fd, seg["size"], start)
        finally:
            os.close(fd)
        if len(data) != seg["size"]:
            raise Unsupported(f"{where}: read {len(data)} of {seg['size']} bytes")
        dumper.writer.add_file(key, data)
        dumper.saved_content.add(key)
    return {"id": shmid, "key": seg["key"], "size": seg["size"], "mode": seg["mode"] & 0o777,
            "removed": bool(seg["mode"] & sc.SHM_DEST), "content": key}


def _ensure(restorer, rec: dict) -> None:
    """The segment exists with the dumped id and content (once per id)."""
    # tree-wide: once the first process attached it, a removed segment is
    # marked SHM_DEST again, and the others attach that same segment
    done = restorer.shared.kinds.setdefault("sysv", set())
    if rec["id"] in done:
        return
    seg = segments().get(rec["id"])
    if seg and seg["size"] == rec["size"] and (seg["key"] == rec["key"]) and not seg["mode"] & sc.SHM_DEST:
        restorer.notes.append(f"SysV shared memory id {rec['id']} still existed: its content was reset to the snapshot's")
    else:
        if seg:
            raise Failed(f"SysV shared memory id {rec['id']} is taken by another segment (key {seg['key']:#x})")
        with open("/proc/sys/kernel/shm_next_id", "w") as f:
            f.write(str(rec["id"]))
        flags = sc.IPC_CREAT | sc.IPC_EXCL | rec["mode"]
        try:
            got = libc.shmget(rec["key"], rec["size"], flags)
        except OSError as e:
            raise Failed(f"SysV shared memory key {rec['key']:#x}: shmget: {e.strerror}") from None
        if got != rec["id"]:
            libc.shm_rmid(got)
            raise Failed(f"SysV shared memory key {rec['key']:#x} got id {got}, not {rec['id']}")
    addr = libc.shmat(rec["id"], 0)
    try:
        libc.write_mem(addr, restorer.reader.file_content(rec["content"]))
    finally:
        libc.shmdt(addr)
    done.add(rec["id"])


def attach(restorer, m) -> None:
    """Map m (a "sysv" mapping) in the target: shmat at its address."""

    rec = m.sysv
    try:
        _ensure(restorer, rec)
    except OSError as e:
        raise Failed(f"SysV shared memory id {rec['id']}: {e.strerror}") from None
    flags = (0 if m.prot & sc.PROT_WRITE else sc.SHM_RDONLY) | (sc.SHM_EXEC if m.prot & sc.PROT_EXEC else 0)
    got = restorer.t.call(f"shmat({rec['id']}) at {m.start:#x}", sc.SHMAT, rec["id"], m.start, flags)
    if got != m.start:
        raise Failed(f"SysV shared memory id {rec['id']} attached at {got:#x}, not {m.start:#x}")
    if not m.prot & sc.PROT_READ:
        restorer.t.call("mprotect", sc.MPROTECT, m.start, m.end - m.start, m.prot)
    if rec["removed"]:
        libc.shm_rmid(rec["id"])  # attached now: it lives until the last detach
