"""Readers for /proc files of another process (plain parsing, no ptrace)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

PF_KTHREAD = 0x00200000  # task flags, /proc/PID/stat field 9
# the kernel's special mappings, as /proc/PID/maps names them: no pages of
# the process's own (dump saves none of their pages; trackers cannot watch them)
SPECIAL_MAPS = ("[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[uprobes]")


class ProcGone(Exception):
    """The process disappeared while we were reading it."""


def _read(path: str) -> str:
    try:
        with open(path, "r", errors="surrogateescape") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError) as e:
        raise ProcGone(path) from e


def read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError) as e:
        raise ProcGone(path) from e


def stat_fields(pid: int, tid: int | None = None) -> list[str]:
    """/proc/PID/stat split so that index i is field i+1 of proc(5).
    The comm (field 2) may hold spaces and parentheses: split after the last ')'."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    s = _read(path)
    lp, rp = s.index("("), s.rindex(")")
    return [s[:lp].strip(), s[lp + 1 : rp]] + s[rp + 2 :].split()


def status(pid: int, tid: int | None = None) -> dict[str, str]:
    path = f"/proc/{pid}/task/{tid}/status" if tid else f"/proc/{pid}/status"
    out = {}
    for line in _read(path).splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def tids(pid: int) -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError as e:
        raise ProcGone(pid) from e


def children(pid: int) -> list[int]:
    out = []
    for t in tids(pid):
        try:
            out += [int(c) for c in _read(f"/proc/{pid}/task/{t}/children").split()]
        except ProcGone:
            pass
    return out


@dataclass
class MapLine:
    start: int
    end: int
    perms: str  # e.g. "rw-p"
    offset: int
    dev: str
    inode: int
    path: str
    vmflags: tuple[str, ...] = ()


_MAPS_RE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) (\S+) (\d+)\s*(.*)$")


def maps(pid: int, with_flags: bool = True) -> list[MapLine]:
    """The mappings of PID; with_flags reads /proc/PID/smaps for VmFlags."""
    text = _read(f"/proc/{pid}/smaps" if with_flags else f"/proc/{pid}/maps")
    out: list[MapLine] = []
    for line in text.splitlines():
        m = _MAPS_RE.match(line)
        if m:
            out.append(MapLine(int(m[1], 16), int(m[2], 16), m[3], int(m[4], 16), m[5], int(m[6]), m[7]))
        elif line.startswith("VmFlags:") and out:
            out[-1].vmflags = tuple(line.split()[1:])
    return out


def vma_key(m: MapLine) -> tuple:
    return (m.start, m.end, m.perms, m.offset, m.inode)


def vmflags_by_vma(pid: int) -> dict:
    """{vma_key: VmFlags} of PID's mappings ({} if it is gone).  smaps walks
    every page table: ~15 ms per GiB of memory."""
    try:
        return {vma_key(m): m.vmflags for m in maps(pid)}
    except ProcGone:
        return {}


def fdinfo(pid: int, fd: int) -> dict:
    """/proc/PID/fdinfo/FD as key -> value; its "lock:" lines (fs/proc/fd.c
    show_fd_locks: the locks this process, or this open file description,
    holds on the file) under "locks", each split: [n, class ("POSIX",
    "OFDLCK", "FLOCK", "LEASE"...), "ADVISORY"/..., "READ"/"WRITE", pid,
    dev:inode, start, end ("EOF")]."""
    out: dict = {"locks": []}
    for line in _read(f"/proc/{pid}/fdinfo/{fd}").splitlines():
        k, _, v = line.partition(":")
        if k == "lock":
            out["locks"].append(v.split())
        else:
            out[k] = v.strip()
    return out


def fds(pid: int) -> list[int]:
    try:
        return sorted(int(f) for f in os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError as e:
        raise ProcGone(pid) from e


def readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except (FileNotFoundError, ProcessLookupError) as e:
        raise ProcGone(path) from e


def ancestors(pid: int) -> list[int]:
    out = []
    while pid > 1:
        try:
            pid = int(stat_fields(pid)[3])
        except ProcGone:
            break
        out.append(pid)
    return out


def proc_name(pid: int) -> str:
    try:
        return _read(f"/proc/{pid}/comm").strip()
    except ProcGone:
        return "?"
