"""Process state snapshotd does not restore yet, refused at dump with one
line naming the PID and the feature (exact or refused: a restore that came
back without it would be silently wrong).  docs/COVERAGE.md lists what is
saved and what is refused."""
from __future__ import annotations

import struct

from .._engine import lib
from ..kernel import inject, procfs
from ..kernel import syscalls as sc
from .stats import DumpError

# VmFlags (/proc/PID/smaps) of madvise advice and locking restore does not re-apply
VMFLAGS_REFUSED = {"lo": "locked memory (mlock)", "mg": "KSM-mergeable memory (MADV_MERGEABLE)",
                   "sr": "MADV_SEQUENTIAL memory", "rr": "MADV_RANDOM memory"}
CRED_FIELDS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")


def check_process(pid: int, tids: list[int], remote: inject.Remote, st: dict, cwd: str) -> None:
    """The process-wide and per-thread state no restore would bring back
    (st: its /proc/PID/status, cwd: readlink /proc/PID/cwd, as the dump read them)."""
    timers = procfs.read_bytes(f"/proc/{pid}/timers").strip()
    if timers:
        n = timers.count(b"ID:")
        raise DumpError(f"PID {pid} has {n} POSIX timer(s) (timer_create): not restored yet")
    if cwd.endswith(" (deleted)"):
        raise DumpError(f"PID {pid} works in a removed directory ({cwd}): not restored yet")
    if st.get("Seccomp", "0") != "0":
        raise DumpError(f"PID {pid} runs under seccomp (mode {st.get('Seccomp')}): not restored yet")
    if st.get("THP_enabled", "1") == "0":
        raise DumpError(f"PID {pid} disabled transparent huge pages (PR_SET_THP_DISABLE): not restored yet")
    lead = {k: st.get(k) for k in CRED_FIELDS}
    for tid in tids:
        if tid != pid:
            tst = procfs.status(pid, tid)
            diff = [k for k in CRED_FIELDS if tst.get(k) != lead[k]]
            if diff:
                raise DumpError(f"PID {pid} thread {tid} has other credentials than its process ({diff[0]}: "
                                f"{tst.get(diff[0])} vs {lead[diff[0]]}): not restored yet")
        sig = struct.unpack("<i", remote.ask("PR_GET_PDEATHSIG", sc.PRCTL, sc.PR_GET_PDEATHSIG, inject.ARG,
                                             size=4, tid=tid))[0]
        if sig:
            raise DumpError(f"PID {pid} thread {tid} has a parent-death signal ({sig}, PR_SET_PDEATHSIG): "
                            "not restored yet")


def check_mappings(pid: int, mappings) -> None:
    for mp in mappings:
        for flag, what in VMFLAGS_REFUSED.items():
            if flag in mp.vmflags:
                raise DumpError(f"PID {pid} has {what} at {mp.start:#x}-{mp.end:#x}: not restored yet")


def check_tree(members: list[tuple[int, list[int] | None]]) -> None:
    """Processes of the tree sharing one fd table (clone(CLONE_FILES) without
    CLONE_THREAD): kcmp(KCMP_FILES) between each process and the others."""
    live = [pid for pid, tids in members if tids is not None]
    for i, a in enumerate(live):
        for b in live[i + 1:]:
            if lib.snp_kcmp(a, b, sc.KCMP_FILES, 0, 0) == 0:
                raise DumpError(f"PIDs {a} and {b} share one file descriptor table (CLONE_FILES): not restored yet")
