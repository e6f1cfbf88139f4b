"""What a non-root owner may hold, checked against a live tree and an image.

A user may have snapshotted and restored only processes they could have made
themselves: every thread of every process (credentials are per thread,
/proc/PID/task/TID/status) runs with the owner's uid as real, effective, saved
and fs uid; each of its four gids and each supplementary group is a group the
owner belongs to (the group database: getgrouplist); and it holds no
capability (CapInh, CapPrm, CapEff, CapAmb all empty).  A set-id program or a
process given capabilities would come back from a rollback with privileges
the user could then steer.  The bounding set and no-new-privs only take
privileges away: they are restored as dumped, never checked here.
"""
from __future__ import annotations

import grp
import os
import pwd

from . import procfs

CAP_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapAmb")


class NoSuchUser(Exception):
    pass


def owner_groups(uid: int) -> set[int]:
    """Every gid uid may run with: its primary group and the groups that list it."""
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        raise NoSuchUser(f"uid {uid} has no passwd entry: which groups it may hold is unknown") from None
    try:
        return set(os.getgrouplist(pw.pw_name, pw.pw_gid))
    except OSError:
        return {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if pw.pw_name in g.gr_mem}


def _excess(uids: list[int], gids: list[int], groups: list[int], caps: dict, uid: int, allowed: set[int]) -> str:
    """"" if these credentials are the owner's own, else what is more."""
    if any(u != uid for u in uids):
        return f"it runs with uids {' '.join(map(str, uids))}"
    bad = sorted({g for g in gids if g not in allowed})
    if bad:
        return f"it runs with gid {bad[0]}, not a group of uid {uid}"
    bad = sorted({g for g in groups if g not in allowed})
    if bad:
        return f"it holds supplementary group {bad[0]}, not a group of uid {uid}"
    for k in CAP_FIELDS:
        if int(str(caps.get(k, "0")), 16):
            return f"it holds capabilities ({k} {caps[k]})"
    return ""


def _split(text: str) -> list[int]:
    return [int(x) for x in text.split()]


def thread_excess(pid: int, tid: int | None, uid: int, allowed: set[int]) -> str:
    """What one live thread holds beyond uid's own (read from /proc)."""
    st = procfs.status(pid, tid)
    return _excess(_split(st.get("Uid", "")), _split(st.get("Gid", "")), _split(st.get("Groups", "")),
                   {k: st.get(k, "0") for k in CAP_FIELDS}, uid, allowed)


def frozen_excess(members: list[tuple[int, list[int] | None]], uid: int) -> str:
    """For a frozen tree (dump.FrozenTree.members: (pid, tids or None for a
    zombie)): "" if every thread holds only what uid has, else which and why.
    A stopped thread cannot change its credentials, so this holds until the
    tree is released."""
    try:
        allowed = owner_groups(uid)
    except NoSuchUser as e:
        return str(e)
    for pid, tids in members:
        for tid in tids or ():
            try:
                why = thread_excess(pid, tid, uid, allowed)
            except procfs.ProcGone:
                continue
            if why:
                return f"PID {pid}" + (f" (thread {tid})" if tid != pid else "") + f": {why}"
    return ""


def tree_excess(root: int, uid: int) -> str:
    """As frozen_excess, for a running tree (every descendant of root, read
    once: the check at each round, made frozen, is the one that counts)."""
    members, todo, seen = [], [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            members.append((pid, procfs.tids(pid)))
            todo += procfs.children(pid)
        except procfs.ProcGone:
            if pid == root:
                return "it has exited"
    return frozen_excess(members, uid)


def image_excess(processes, uid: int) -> str:
    """For the processes of an image (image.Process, each with .creds): ""
    if restoring them as uid gives no more than uid has, else why not."""
    try:
        allowed = owner_groups(uid)
    except NoSuchUser as e:
        return str(e)
    for p in processes:
        if p.zombie:  # its stub only exits with the recorded status
            continue
        c = p.creds or {}
        try:
            why = _excess([int(x) for x in c.get("uid", [])], [int(x) for x in c.get("gid", [])],
                          [int(x) for x in c.get("groups", [])], c.get("caps", {}), uid, allowed)
            if not c.get("uid") or not c.get("gid"):
                why = why or "its credentials are missing from the image"
        except (TypeError, ValueError):
            why = "its credentials in the image are malformed"
        for th in p.threads:
            s = th.sched or {}
            if not why and (s.get("nice", 0) < 0 or s.get("policy", 0) & 0xFF in (1, 2, 6)):
                why = (f"thread {th.tid} runs with nice {s.get('nice')} and policy {s.get('policy')}: "
                       "only root may give a process a negative nice or a real-time policy")
        if why:
            return f"PID {p.pid}: {why}"
    return ""
