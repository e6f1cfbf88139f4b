"""Roll a job back to a round: make sure none of its old processes still run,
cut the files it had open for writing back to their size at the round, and
restore every member snapshot (each with the credentials it was dumped with).
"""
from __future__ import annotations

import os
import signal
import stat as statmod
import time

from ..kernel import privilege, procfs
from .. import progress
from ..kernel.fscreds import file_id
from ..pagehash import PAGE
from ..image import from_dict
from ..restore import restore
from .round import start_time
from . import auth

O_ACCMODE = 0o3


class RollbackError(Exception):
    pass


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(procfs.stat_fields(int(d))[3])
            except (procfs.ProcGone, ValueError, IndexError, OSError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    return kids


def _tree(root: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def _gone(pid: int) -> bool:
    """True once pid no longer holds its PID (a zombie still does)."""
    return not os.path.exists(f"/proc/{pid}")


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def kill_old(members: list[dict], own: dict[int, set[int]], owner_uid: int = 0, timeout: float = 5.0) -> list[int]:
    """SIGKILL every live process tree of the job at the round's PIDs (and
    their descendants) and wait until their PIDs are free. own: PID -> start
    times the job's trees had; a process at a member PID with another start
    time belongs to someone else: refuse rather than kill a stranger.
    Each process is pinned by a pidfd before it is looked at and signalled
    through it, so a PID reused meanwhile is never hit; for a non-root
    owner, only processes that owner could kill itself are killed."""
    roots = []  # (pid, pidfd)
    try:
        for m in members:
            pid = int(m["root_pid"])
            fd = _pidfd(pid)
            st = start_time(pid) if fd is not None else None
            if st is None:
                if fd is not None:
                    os.close(fd)
                continue  # gone (or a zombie: waited for below)
            roots.append((pid, fd))
            if st not in own.get(pid, set()) or not auth.may_signal(owner_uid, pid):
                raise RollbackError(f"PID {pid} is in use by another process (not one of this job's); "
                                    "cannot restore the job there")
        killed: list[int] = []
        kids = _children_map() if roots else {}
        for r, rfd in roots:
            for p in _tree(r, kids):
                fd = rfd if p == r else _pidfd(p)
                if fd is None:
                    continue
                try:
                    if p == r or auth.may_signal(owner_uid, p):
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
                        killed.append(p)
                except ProcessLookupError:
                    pass
                finally:
                    if fd != rfd:
                        os.close(fd)
    finally:
        for _r, fd in roots:
            os.close(fd)
    deadline = time.monotonic() + timeout
    waiting = [int(m["root_pid"]) for m in members]
    while True:
        waiting = [p for p in waiting if not _gone(p)]
        if not waiting or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    for p in waiting:
        try:
            parent = procfs.stat_fields(p)[3]
        except procfs.ProcGone:
            continue
        raise RollbackError(f"PID {p} is still taken (a zombie its parent, PID {parent}, has not reaped); "
                            "cannot restore there")
    return sorted(killed)


def written_files(store, members: list[dict]) -> list[dict]:
    """Regular files the round's processes had open for writing, with their
    size, device and inode at the round (one entry per file)."""
    out: dict = {}
    for m in members:
        with store.open(m["snapshot"]) as r:
            img = from_dict(r.image())
        for p in img.processes:
            for fd in p.fds:
                f = p.files[fd.file]
                if f.kind != "reg" or f.deleted or f.content is not None:
                    continue  # deleted and tmpfs files are restored from the snapshot itself
                if f.flags & O_ACCMODE not in (os.O_WRONLY, os.O_RDWR):
                    continue
                out.setdefault((f.dev, f.inode), {"path": f.path, "size": f.size, "dev": f.dev, "inode": f.inode,
                                                  "mtime_ns": f.mtime_ns})
    return list(out.values())


def cut_files(store, members: list[dict], owner_uid: int) -> tuple[list[dict], list[str]]:
    """Truncate each written file back to its size at the round. Only the
    very file the job had open is cut (same device and inode; no symlink
    followed), and, for a job of a non-root user, only a file that user owns."""
    cut, notes = [], []
    for f in written_files(store, members):
        path = f["path"]
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            notes.append(f"not cut: {path}: {e.strerror}")
            continue
        try:
            st = os.fstat(fd)
            if not statmod.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (f["dev"], f["inode"]):
                notes.append(f"not cut: {path} is no longer the file the job had open")
                continue
            if owner_uid != 0 and st.st_uid != owner_uid:
                notes.append(f"not cut: {path} belongs to uid {st.st_uid}, not to the job's owner")
                continue
            if st.st_size > f["size"]:
                os.ftruncate(fd, f["size"])
                if f.get("mtime_ns"):  # the file as it was at the round, modification time included
                    os.utime(fd, ns=(st.st_atime_ns, f["mtime_ns"]))
                os.fsync(fd)
                cut.append({"path": path, "from": st.st_size, "to": f["size"]})
            elif st.st_size < f["size"]:
                notes.append(f"{path} is shorter ({st.st_size} bytes) than at the round ({f['size']} bytes)")
        finally:
            os.close(fd)
    return cut, notes


def _files_to_reopen(store, members: list[dict]):
    """(uid, gid, groups, [(path, flags)]) per member: what restore will open
    by path for that process."""
    out = []
    for m in members:
        with store.open(m["snapshot"]) as r:
            img = from_dict(r.image())
        for p in img.processes:
            paths = [(f.path, f.flags & O_ACCMODE, f.kind, f.dev, f.inode) for f in p.files
                     if f.kind in ("reg", "dir", "chr") and not f.deleted and f.content is None]
            out.append((p.creds["uid"][0], p.creds["gid"][0], p.creds.get("groups", []), paths))
    return out


def check_user_access(store, members: list[dict]) -> None:
    """Restore reopens a process's files by path with that process's own fs
    uid/gid and groups (snapshotd/fscreds.py), so a path swapped since the
    round (say, for a symlink to a root-only file) fails the restore. This
    check refuses such a rollback earlier, before the job's processes are
    killed: a forked child with the process's uid, gid and groups tries each
    open. (A swap between this check and the restore fails the restore.)"""
    for uid, gid, groups, paths in _files_to_reopen(store, members):
        if uid == 0 or not paths:
            continue
        r, w = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - child
            bad = []
            try:
                os.close(r)
                os.setgroups(groups)
                os.setgid(gid)
                os.setuid(uid)
                for i, (path, acc, kind, _dev, _ino) in enumerate(paths):
                    flags = (os.O_RDONLY | os.O_DIRECTORY) if kind == "dir" else acc
                    try:
                        os.close(os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC))
                    except OSError as e:
                        bad.append(f"{i}\t{path}: {e.strerror}")
                os.write(w, "\n".join(bad).encode() or b"ok")
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            ans = f.read().decode()
        os.waitpid(child, 0)
        if ans == "ok":
            continue
        bad = []
        for line in ans.splitlines():
            i, _, why = line.partition("\t")
            path, _acc, _kind, dev, ino = paths[int(i)] if i.isdigit() and int(i) < len(paths) else ("", 0, "", 0, 0)
            # restore gives back a file the user may not open only if it is the very one
            # the process had (restore.py, _same_file): check the same way
            if not (path and ino and file_id(path) == [dev, ino]):
                bad.append(why or line)
        if bad or not ans.strip():
            raise RollbackError(f"not restored: uid {uid} may not open what the job had open: "
                                + "; ".join(bad[:3] or ["the check failed"]))


def restore_bytes(store, members: list[dict]) -> int:
    """Page bytes restore will write for all members (what the restore
    progress bars count)."""
    n = 0
    for m in members:
        with store.open(m["snapshot"]) as r:
            n += sum(len(r.page_table(pid)[0]) for pid in r.pids())
    return n * PAGE


def check_images(store, members: list[dict], owner_uid: int) -> None:
    """Refuse a round of a non-root owner whose image would give a process
    more than that owner has (privilege.py), whatever made it so: restore
    checks again, this refuses before the job is killed."""
    if owner_uid == 0:
        return
    for m in members:
        with store.open(m["snapshot"]) as r:
            why = privilege.image_excess(from_dict(r.image()).processes, owner_uid)
        if why:
            raise RollbackError(f"not restored: snapshot {m['snapshot']} would give uid {owner_uid} "
                                f"privileges it does not have ({why})")


def restore_members(store, members: list[dict], owner_uid: int = 0) -> tuple[list[dict], list[str]]:
    """Restore every member (as no more than owner_uid has); if one fails,
    kill those already restored."""
    done, notes = [], []
    progress.expect(restore_bytes(store, members))  # one bar for the job (a client that asked for it)
    try:
        for m in members:
            with store.open(m["snapshot"]) as r:
                # same PIDs or nothing: the job's PIDs were freed above, and its
                # registrations name them (no PID namespace fallback)
                pid, st, n = restore(r, pidns=False, owner_uid=owner_uid)
            done.append({"pid": pid, "snapshot": m["snapshot"], "name": m.get("name", ""),
                         "wall_s": round(st.wall_s, 6)})
            notes += n
    except BaseException:
        for d in done:
            try:
                os.kill(d["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
        raise
    return done, notes
