"""A store: a directory of snapshots and the page packs they share (docs/FORMAT.md).

    STORE/snapshots/<id>.h5      committed snapshots (metadata + page tables)
    STORE/packs/<id>-<n>.h5      committed page packs (unique pages, compressed)
    STORE/catalog.json           a cache of every snapshot's attributes; rebuilt
                                 from snapshots/ whenever it disagrees
    STORE/lock                   flock: writers shared, garbage collection exclusive
    .<name>.tmp-<host>-<pid>     being written (ignored; removed once <pid> on <host> is dead)

A store is a directory holding snapshots/.  Commands that only read refuse
anything else (check_readable); commands that write create a store in a
missing or empty directory, never in a file or in a directory holding other
things (check_writable).

Nothing in the store is modified after commit; removal (prune, gc) deletes
whole files, snapshots before the packs they used, so a crash at any moment
leaves every kept snapshot complete."""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import stat
import time

from ..faults import crashpoint
from .fsutil import h5py, remove_durably, temp_writer_dead, write_atomic
from .pack import FormatError, read_pack_hashes
from .pageindex import PageIndex, pack_names
from .snapshot import DamagedError, SnapshotReader, SnapshotWriter, read_attrs

DEFAULT_STORE = "/var/lib/snapshotd"
CATALOG_VERSION = 1


class StoreError(Exception):
    pass


# what snapshotd itself puts in a store's directory (besides temporary files):
# a directory holding only these is a store being created, not someone else's
_OWN_NAMES = frozenset({"snapshots", "packs", "catalog.json", "lock", "damaged", "daemon", "rounds"})


def newest_key(row: dict):
    """Order of snapshots in time; a compacted copy ranks just after the
    snapshot it copies (same moment, fewer dependencies)."""
    return (row.get("created", 0), 1 if row.get("compacted_from") else 0, row["id"])


class _Lock:
    """flock(2) on STORE/lock: shared for writers, exclusive for gc."""

    def __init__(self, path: str, exclusive: bool, wait: bool = True):
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise StoreError(f"cannot open the store lock {path}: {e.strerror}") from None
        op = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(self.fd, op if wait else op | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise StoreError("the store is busy (a dump or garbage collection is running)") from None
        except OSError as e:
            os.close(self.fd)
            raise StoreError(f"cannot lock {path}: {e.strerror} (does this filesystem support flock? "
                             "see docs/FORMAT.md, Concurrency)") from None

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Store:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.snapdir = os.path.join(self.path, "snapshots")
        self.packdir = os.path.join(self.path, "packs")
        self.catalog_path = os.path.join(self.path, "catalog.json")
        self.damaged_dir = os.path.join(self.path, "damaged")
        self._index: PageIndex | None = None  # kept by long-lived users (the daemon)
        self._index_packs: set[str] = set()

    # -- layout --
    def _stat(self, path: str, what: str):
        """os.stat(path), None if it does not exist (or a parent is a file);
        other failures are a StoreError."""
        try:
            return os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except PermissionError:
            raise StoreError(f"cannot read store {self.path}: permission denied") from None
        except OSError as e:  # ELOOP, ENAMETOOLONG, EIO ...
            raise StoreError(f"{what} {self.path}: {e.strerror}") from None

    def check_readable(self) -> None:
        """Refuse, with one line, a path that is not a store: a missing path,
        a file, a directory without snapshots/ (an empty one too), or one
        this user cannot read.  For the commands that only read."""
        st = self._stat(self.snapdir, "no store at")
        if st is not None and stat.S_ISDIR(st.st_mode):
            if not os.access(self.snapdir, os.R_OK | os.X_OK):
                raise StoreError(f"cannot read store {self.path}: permission denied")
            return
        top = self._stat(self.path, "no store at")
        if top is None:
            raise StoreError(f"no store at {self.path}")
        self._refuse(top, st)
        raise StoreError(f"{self.path} is not a snapshotd store (no snapshots/ directory)")

    def check_writable(self) -> None:
        """Refuse, with one line, a path a store must not be created in: a
        file, or a directory that holds other things than a store's.  A
        missing path or an empty directory is fine (ensure_writable makes the
        store there).  Does not create anything."""
        st = self._stat(self.snapdir, "cannot use store")
        if st is not None and stat.S_ISDIR(st.st_mode):
            return
        top = self._stat(self.path, "cannot use store")
        if top is None:
            return
        self._refuse(top, st)
        try:
            names = os.listdir(self.path)
        except PermissionError:
            raise StoreError(f"cannot read store {self.path}: permission denied") from None
        except OSError as e:
            raise StoreError(f"cannot use store {self.path}: {e.strerror}") from None
        if "snapshots" in names and os.path.isdir(self.snapdir):
            return  # another writer created it just now
        other = sorted(n for n in names if n not in _OWN_NAMES and not (n.startswith(".") and ".tmp-" in n))
        if other:
            more = f" and {len(other) - 3} more" if len(other) > 3 else ""
            raise StoreError(f"{self.path} is not a snapshotd store (no snapshots/ directory) and not empty "
                             f"(it holds {', '.join(map(repr, other[:3]))}{more}); not making a store there")

    def _refuse(self, top, snap) -> None:
        """The refusals both checks share: the store path is a file, or its
        snapshots is not a directory."""
        if top is not None and not stat.S_ISDIR(top.st_mode):
            raise StoreError(f"{self.path} is not a snapshotd store (not a directory)")
        if snap is not None:
            raise StoreError(f"{self.path} is not a snapshotd store ({self.snapdir} is not a directory)")

    def ensure_writable(self) -> None:
        self.check_writable()
        try:
            for d in (self.path, self.snapdir, self.packdir):
                os.makedirs(d, mode=0o700, exist_ok=True)
        except OSError as e:
            raise StoreError(f"store {self.path} is not usable: {e.strerror}") from None
        for d in (self.snapdir, self.packdir):
            if not os.access(d, os.W_OK | os.X_OK):
                raise StoreError(f"store {self.path} is not writable")
        self.remove_stale_temps()

    def remove_stale_temps(self) -> list[str]:
        """Remove temporary files of this host's writers that died."""
        removed = []
        for d in (self.snapdir, self.packdir, self.path, self.damaged_dir):
            try:
                names = os.listdir(d)
            except FileNotFoundError:
                continue
            for n in names:
                if temp_writer_dead(n):
                    try:
                        os.unlink(os.path.join(d, n))
                        removed.append(n)
                    except FileNotFoundError:
                        pass
        return removed

    def new_id(self, root_pid: int) -> str:
        return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{root_pid}-{secrets.token_hex(4)}"

    def snapshot_path(self, sid: str) -> str:
        return os.path.join(self.snapdir, sid + ".h5")

    # -- writing --
    def index(self) -> PageIndex:
        """The page index, brought up to date with packs committed since."""
        names = pack_names(self.packdir)
        if self._index_packs - set(names):
            self.forget_index()  # packs were collected: never dedup against them
        if self._index is None:
            self._index = PageIndex()
        bad = set(self.damaged_packs())
        found = []
        for n in names:
            if n in self._index_packs or n in bad:
                continue  # never deduplicate against a pack verify found damaged
            try:
                created, hashes = read_pack_hashes(os.path.join(self.packdir, n))
            except (OSError, KeyError, ValueError, FormatError):
                continue  # unreadable or foreign: not used (verify reports it)
            found.append((created, n, hashes))
        for _, n, hashes in sorted(found, key=lambda x: x[:2]):  # oldest first: the newest copy wins
            self._index.add(n, 0, hashes)
            self._index_packs.add(n)
        return self._index

    def damaged_packs(self) -> list[str]:
        try:
            return [n for n in os.listdir(self.damaged_dir) if not n.startswith(".")]
        except FileNotFoundError:
            return []

    def quarantine(self, names, reason: str) -> None:
        """Mark packs as damaged: no new snapshot will reference them.  The
        mark is a file STORE/damaged/<pack name> holding the reason."""
        existing = set(pack_names(self.packdir))
        names = [n for n in names if n in existing]
        if not names or not os.access(self.path, os.W_OK):
            return
        os.makedirs(self.damaged_dir, mode=0o700, exist_ok=True)
        for n in names:
            write_atomic(os.path.join(self.damaged_dir, n), reason.encode() + b"\n")
        self.forget_index()

    def forget_index(self) -> None:
        self._index = None
        self._index_packs.clear()

    def writer(self, root_pid: int, parent: str | None = None, **attrs) -> tuple[str, "LockedWriter"]:
        """A writer for a new snapshot of the tree rooted at root_pid.  With
        parent (an id), the new snapshot is an incremental one of that chain."""
        self.ensure_writable()
        lock = _Lock(os.path.join(self.path, "lock"), exclusive=False)
        try:
            preader = None
            depth = 0
            if parent:
                preader = self.open(parent)
                parent = preader.id
                depth = int(preader.attrs.get("chain_depth", 0)) + 1
            sid = self.new_id(root_pid)
            a = {"id": sid, "root_pid": root_pid, "parent": parent or "",
                 "kind": "incremental" if parent else "full", "chain_depth": depth,
                 "job": "", "round": "", "tree": f"{socket.gethostname()}:{root_pid}",
                 "created": time.time(), **attrs}
            w = SnapshotWriter(self.snapshot_path(sid), self.packdir, a, self.index(), parent=preader)
        except OSError as e:
            lock.release()
            raise StoreError(f"cannot write in store {self.path}: {e}") from None
        except BaseException:
            lock.release()
            raise
        return sid, LockedWriter(w, lock, self)

    # -- reading --
    def ids(self) -> list[str]:
        try:
            names = os.listdir(self.snapdir)
        except FileNotFoundError:
            return []
        return sorted(n[:-3] for n in names if n.endswith(".h5") and not n.startswith("."))

    def resolve(self, ref: str) -> str:
        """Path of a snapshot given its id, a unique id prefix, or a file path."""
        if ref.endswith(".h5") and os.path.isfile(ref):
            return os.path.abspath(ref)
        if "/" in ref:
            raise StoreError(f"no snapshot file {ref!r}")
        ids = self.ids()
        if ref in ids:
            return self.snapshot_path(ref)
        matches = [i for i in ids if i.startswith(ref)]
        if len(matches) == 1:
            return self.snapshot_path(matches[0])
        if len(matches) > 1:
            raise StoreError(f"snapshot id {ref!r} is ambiguous: {', '.join(matches[:5])}")
        raise StoreError(f"no snapshot {ref!r} in store {self.path}")

    def open(self, ref: str) -> SnapshotReader:
        path = self.resolve(ref)
        packdir = self.packdir if os.path.dirname(path) == self.snapdir else None
        return SnapshotReader(path, packdir)

    def list(self) -> list[dict]:
        """Every snapshot's attributes (from the catalog, reconciled with the
        directory: entries for vanished files are dropped, new files read)."""
        cat = self._read_catalog()
        ids = self.ids()
        out, changed = [], set(cat) != set(ids)
        for sid in ids:
            a = cat.get(sid)
            if a is None:
                path = self.snapshot_path(sid)
                try:
                    a = read_attrs(path)
                    a["file_bytes"] = os.path.getsize(path)
                except (FormatError, OSError) as e:
                    a = {"id": sid, "error": str(e)}
                changed = True
            out.append(a)
        if changed:
            self._write_catalog(out)
        return out

    def latest(self, tree: str | None = None, root_pid: int | None = None) -> str | None:
        rows = [r for r in self.list() if "error" not in r
                and (tree is None or r.get("tree") == tree)
                and (root_pid is None or r.get("root_pid") == root_pid)]
        return max(rows, key=newest_key)["id"] if rows else None

    def _read_catalog(self) -> dict[str, dict]:
        try:
            with open(self.catalog_path) as f:
                doc = json.load(f)
            if doc.get("version") != CATALOG_VERSION:
                return {}
            return {a["id"]: a for a in doc["snapshots"]}
        except (OSError, ValueError, KeyError, TypeError):
            return {}  # a lost or damaged catalog is rebuilt from the files

    def _write_catalog(self, rows: list[dict]) -> None:
        if not os.access(self.path, os.W_OK):
            return
        doc = {"version": CATALOG_VERSION, "written": time.time(),
               "snapshots": [r for r in rows if "error" not in r]}
        try:
            # not fsynced: a catalog lost in a crash is rebuilt, and one
            # that lags the directory is reconciled with it on every read
            write_atomic(self.catalog_path, json.dumps(doc, default=str, sort_keys=True).encode(), durable=False)
        except OSError:
            pass  # only a cache

    def note_committed(self, path: str, attrs: dict | None = None) -> None:
        """Add a committed snapshot to the catalog (attrs: its attributes,
        if the caller has them; else they are read from the file)."""
        try:
            a = dict(attrs) if attrs is not None else read_attrs(path)
            a["file_bytes"] = os.path.getsize(path)
        except (FormatError, OSError):
            return
        rows = [r for r in self._read_catalog().values() if r["id"] != a["id"]] + [a]
        self._write_catalog(sorted(rows, key=lambda r: r["id"]))

    # -- maintenance --
    def remove(self, sid: str) -> bool:
        return remove_durably(self.snapshot_path(sid))

    def referenced_packs(self) -> tuple[set[str], list[str]]:
        """(pack names used by any snapshot, snapshots that could not be read
        or are of a newer format: their pack list cannot be trusted)."""
        used, unreadable = set(), []
        for sid in self.ids():
            try:
                with SnapshotReader(self.snapshot_path(sid), self.packdir) as r:
                    used.update(r.pack_names)
            except (OSError, KeyError, ValueError, FormatError, DamagedError):
                unreadable.append(sid)
        return used, unreadable

    def gc(self, dry_run: bool = False, wait: bool = True) -> dict:
        """Mark and sweep: delete packs no snapshot references.  Runs under the
        exclusive store lock, so no writer can be deduplicating against a
        pack while it is judged unreferenced."""
        self.ensure_writable()
        lock = _Lock(os.path.join(self.path, "lock"), exclusive=True, wait=wait)
        try:
            stale = self.remove_stale_temps()
            used, unreadable = self.referenced_packs()
            if unreadable:
                # a snapshot we cannot read might reference anything: sweep nothing
                raise StoreError(f"cannot read snapshot(s) {', '.join(unreadable)}; garbage collection "
                                 "would not know what they use (run verify); nothing deleted")
            present = set(pack_names(self.packdir))
            if used - present:
                # a pack list naming a missing pack may be a damaged name for a
                # pack that exists: deleting "unreferenced" packs could lose it
                raise StoreError(f"snapshots reference missing page pack(s) {', '.join(sorted(used - present))}; "
                                 "the store is inconsistent (run verify); nothing deleted")
            doomed = [n for n in sorted(present) if n not in used]
            freed = 0
            for n in doomed:
                p = os.path.join(self.packdir, n)
                try:
                    freed += os.path.getsize(p)
                except OSError:
                    pass
                if not dry_run:
                    remove_durably(p)
                    crashpoint("gc-removed")
                    self.forget_index()
            for n in self.damaged_packs() if not dry_run else ():  # marks of packs that are gone
                if n not in present or n in doomed:
                    remove_durably(os.path.join(self.damaged_dir, n))
            return {"removed_packs": doomed, "freed_bytes": freed, "kept_packs": len(used),
                    "removed_temps": stale, "dry_run": dry_run}
        finally:
            lock.release()


class LockedWriter:
    """A SnapshotWriter that holds the store's shared lock until commit/abort."""

    def __init__(self, w: SnapshotWriter, lock: _Lock, store: Store):
        self.w, self.lock, self.store = w, lock, store

    def __getattr__(self, name):
        return getattr(self.w, name)

    def commit(self, image: dict, before_publish=None) -> str:
        try:
            path = self.w.commit(image, before_publish)
        finally:
            self._close_parent()
            self.lock.release()
        self.store._index_packs.update(p.pack_id for p in self.w.packs)
        self.store.note_committed(path, self.w.final_attrs)
        return path

    def abort(self) -> None:
        try:
            self.w.abort()  # its new pages were never merged into the index
        finally:
            self._close_parent()
            self.lock.release()

    def _close_parent(self):
        if self.w.parent is not None:
            self.w.parent.close()
            self.w.parent = None

