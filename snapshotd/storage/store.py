"""A store: a directory of snapshots (layout: docs/FORMAT.md).

    STORE/snapshots/<id>.h5    committed, immutable snapshots
    STORE/snapshots/.<id>.h5.tmp-<pid>   being written (ignored, removed when stale)
"""
from __future__ import annotations

import os
import secrets
import time

from .snapshot import FormatError, SnapshotReader, SnapshotWriter

DEFAULT_STORE = "/var/lib/snapshotd"


class StoreError(Exception):
    pass


class Store:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.snapdir = os.path.join(self.path, "snapshots")

    def ensure_writable(self) -> None:
        try:
            os.makedirs(self.snapdir, mode=0o700, exist_ok=True)
        except OSError as e:
            raise StoreError(f"store {self.path} is not usable: {e.strerror}") from None
        if not os.access(self.snapdir, os.W_OK | os.X_OK):
            raise StoreError(f"store {self.path} is not writable")
        self.remove_stale_temps()

    def remove_stale_temps(self) -> None:
        """Remove temporary files of writers that died (.<id>.h5.tmp-<pid>)."""
        for n in os.listdir(self.snapdir):
            if n.startswith(".") and ".tmp-" in n:
                pid = n.rsplit(".tmp-", 1)[1]
                if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                    try:
                        os.unlink(os.path.join(self.snapdir, n))
                    except FileNotFoundError:
                        pass

    def new_id(self, root_pid: int) -> str:
        return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{root_pid}-{secrets.token_hex(2)}"

    def writer(self, root_pid: int, **attrs) -> tuple[str, SnapshotWriter]:
        self.ensure_writable()
        sid = self.new_id(root_pid)
        attrs = {"id": sid, "root_pid": root_pid, "parent": "", "kind": "full", "job": "", "round": "", **attrs}
        try:
            return sid, SnapshotWriter(os.path.join(self.snapdir, sid + ".h5"), attrs)
        except OSError as e:
            raise StoreError(f"cannot write in store {self.path}: {e}") from None

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
        ids = self.ids()
        if ref in ids:
            return os.path.join(self.snapdir, ref + ".h5")
        matches = [i for i in ids if i.startswith(ref)]
        if len(matches) == 1:
            return os.path.join(self.snapdir, matches[0] + ".h5")
        if len(matches) > 1:
            raise StoreError(f"snapshot id {ref!r} is ambiguous: {', '.join(matches[:5])}")
        raise StoreError(f"no snapshot {ref!r} in store {self.path}")

    def open(self, ref: str) -> SnapshotReader:
        return SnapshotReader(self.resolve(ref))

    def list(self) -> list[dict]:
        out = []
        for sid in self.ids():
            path = os.path.join(self.snapdir, sid + ".h5")
            try:
                with SnapshotReader(path) as r:
                    a = dict(r.attrs)
            except (FormatError, OSError) as e:
                a = {"id": sid, "error": str(e)}
            a["file_bytes"] = os.path.getsize(path)
            out.append(a)
        return out
