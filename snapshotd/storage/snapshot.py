"""One snapshot = one immutable HDF5 file of metadata (layout: docs/FORMAT.md).

A snapshot file holds the image (process metadata, JSON) and, per process, a
complete page table: page address -> page reference.  Page contents live in
packs (pack.py), shared by every snapshot of the store: a page whose hash
is already stored anywhere in the store is referenced, not written again.  An
incremental snapshot names its parent and writes only content that is new;
because its page table is complete, restore never walks the chain.

Pages are handed over in two ways: add_pages() with their bytes (hashed here,
in C), or add_unchanged_runs() for runs a dirty-page tracker knows were not
written since the parent (their references are copied from the parent)."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..pagehash import PAGE, hash_pages, nonzero_rows
from .._engine import ffi, lib
from .fsutil import commit_file, fsync_dir, h5py, temp_name
from .pack import DamagedError, FormatError, PackReader, PackWriter, check_format
from .pageindex import MISSING, SLOT_SHIFT, ZERO_REF, DigestTable, PageIndex

__all__ = ["SnapshotWriter", "SnapshotReader", "DamagedError", "FormatError", "ZERO_REF", "FORMAT_VERSION"]

FORMAT_NAME = "snapshotd-snapshot"
FORMAT_VERSION = 3  # 3: page tables as runs (2: one row per page, still read)
PACK_MAX_PAGES = 1 << 18  # start a new pack after 1 GiB of unique pages
_ZERO = np.uint64(ZERO_REF)
# bounds a page table never exceeds (a damaged one is refused, not expanded):
_ADDR_LIMIT = 1 << 57  # user addresses, even with 5-level page tables
_MAX_RUN = 1 << 40  # pages in one run
_MAX_TABLE = 1 << 32  # pages in one process's table (16 TiB)
_ZERO_PAGE = np.zeros(PAGE, dtype=np.uint8)  # the source of ZERO_REF pages on restore
# readable by stock h5dump; fletcher32 makes damaged metadata an error, not a misread
_TABLE_OPTS = dict(compression="gzip", compression_opts=1, shuffle=True, fletcher32=True)


def _opts(n: int) -> dict:
    return {**_TABLE_OPTS, "chunks": (max(1, min(n, 1 << 16)),)} if n else {}


def _names_digest(names: list[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def _u64(a: np.ndarray):
    """A uint64_t[] view of a contiguous uint64 array (keep the array alive)."""
    return ffi.from_buffer("uint64_t[]", a)


def to_runs(addrs: np.ndarray, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A page table (addresses strictly increasing) as runs (docs/FORMAT.md
    §5.1): maximal stretches of consecutive pages whose references are
    consecutive pages of one pack, or all ZERO_REF.  A full dump stores
    pages in address order and an incremental one references most pages of
    its parent unchanged, so a table of a million pages is typically a few
    thousand runs.  Runs never cross from one pack slot into the next, so
    the references may be index-wide and localized per run afterwards."""
    n = len(addrs)
    if len(refs) != n:
        raise ValueError(f"{n} addresses but {len(refs)} references")
    # every page a run of its own, joined in one C pass
    ra, rr = (np.array(x, dtype=np.uint64) for x in (addrs, refs))
    rl = np.ones(n, np.uint64)
    k = lib.snp_runs_coalesce(_u64(ra), _u64(rl), _u64(rr), n, ZERO_REF)
    return ra[:k].copy(), rl[:k].copy(), rr[:k].copy()


def from_runs(run_addr: np.ndarray, run_len: np.ndarray, run_ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(addrs, refs) of a page table stored as runs."""
    if not (len(run_addr) == len(run_len) == len(run_ref)):
        raise ValueError("run datasets differ in length")
    lens = run_len.astype(np.int64)
    if (lens <= 0).any():
        raise ValueError("a run of no pages")
    total = int(lens.sum())
    first = np.cumsum(lens) - lens
    step = np.arange(total, dtype=np.uint64) - np.repeat(first, lens).astype(np.uint64)
    addrs = np.repeat(run_addr, lens) + step * np.uint64(PAGE)
    base = np.repeat(run_ref, lens)
    refs = np.where(base == _ZERO, _ZERO, base + step)
    return addrs, refs


class _Runs(tuple):
    """A part of a page table given as runs (run_addr, run_len, run_ref),
    index-wide references: the pages an incremental keeps from its parent."""


def _merge_intervals(iv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) rows in any order -> sorted, disjoint (starts, ends)."""
    if not len(iv):
        return np.empty(0, np.uint64), np.empty(0, np.uint64)
    # whole pages: a page p lies in [s, e) exactly when it lies in [s, e) rounded up to pages
    iv = (iv + np.uint64(PAGE - 1)) & ~np.uint64(PAGE - 1)
    iv = iv[np.argsort(iv[:, 0], kind="stable")]
    s, e = iv[:, 0], np.maximum.accumulate(iv[:, 1])
    new = np.concatenate(([True], s[1:] > e[:-1]))  # touching intervals merge too
    first = np.flatnonzero(new)
    last = np.append(first[1:], len(s)) - 1
    return np.ascontiguousarray(s[first]), np.ascontiguousarray(e[last])


def _sorted_pages(parts: list) -> tuple[np.ndarray, np.ndarray]:
    """Page parts (addrs, refs), in the order added, as one table sorted by
    address; an address given twice keeps the last entry."""
    if not parts:
        return np.empty(0, np.uint64), np.empty(0, np.uint64)
    addrs = np.concatenate([a for a, _ in parts])
    refs = np.concatenate([r for _, r in parts])
    if len(addrs) > 1 and not (addrs[1:] > addrs[:-1]).all():
        order = np.argsort(addrs, kind="stable")
        addrs, refs = addrs[order], refs[order]
        last = np.append(addrs[1:] != addrs[:-1], True)
        addrs, refs = addrs[last], refs[last]
    return addrs, refs


def table_runs(parts: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One process's page table, as runs, from the parts a writer was given
    (pages, or _Runs kept from the parent).  When no two parts cover one
    address (the normal case) the kept runs are merged as runs: an
    incremental of a large process never expands its parent's million
    pages.  Otherwise every part is expanded and the last one given wins."""
    pages = [p for p in parts if not isinstance(p, _Runs)]
    kept = [p for p in parts if isinstance(p, _Runs)]
    runs = to_runs(*_sorted_pages(pages))
    if not kept:
        return runs
    ra, rl, rr = (np.concatenate(c) for c in zip(runs, *kept))
    order = np.argsort(ra, kind="stable")
    ra, rl, rr = ra[order], rl[order], rr[order]
    if len(ra) > 1 and (ra[1:] < ra[:-1] + rl[:-1] * np.uint64(PAGE)).any():
        return to_runs(*_sorted_pages([from_runs(*p) if isinstance(p, _Runs) else p for p in parts]))
    n = lib.snp_runs_coalesce(_u64(ra), _u64(rl), _u64(rr), len(ra), ZERO_REF)
    return ra[:n], rl[:n], rr[:n]


class _Stopped(Exception):
    """Half of a commit gave up because the other half failed."""


class SnapshotWriter:
    def __init__(self, final_path: str, packdir: str, attrs: dict, index: PageIndex,
                 parent: "SnapshotReader | None" = None):
        self.final_path = final_path
        self.packdir = packdir
        self.sid = attrs["id"]
        self.tmp_path = temp_name(final_path)
        self.h5 = h5py.File(self.tmp_path, "w", libver=("v110", "latest"), locking=False)
        os.chmod(self.tmp_path, 0o600)
        self.attrs = attrs
        self.index = index
        self.parent = parent
        self.own = DigestTable()  # pages of this writer's packs, until they are committed
        self.packs: list[PackWriter] = []
        self.page_tables: dict[int, list] = {}
        self.files: dict[str, tuple[np.ndarray, int]] = {}
        self.new_pages = 0
        self.new_bytes = 0  # compressed bytes of committed packs
        self._sealing = None  # future of the thread sealing the packs during commit()
        self.final_attrs: dict | None = None

    # -- pages --
    def _pack(self) -> PackWriter:
        if not self.packs or self.packs[-1].npages >= PACK_MAX_PAGES:
            name = f"{self.sid}-{len(self.packs)}.h5"
            self.packs.append(PackWriter(os.path.join(self.packdir, name), name))
        return self.packs[-1]

    def _refs_for(self, data: np.ndarray, hashes: np.ndarray, rows: np.ndarray | None = None,
                  borrow: bool = False) -> np.ndarray:
        """References for pages data[rows] (data (n, 4096), all rows if None),
        hashes[rows] being their hashes (all-zero for a zero page); content
        the store does not hold yet is appended to this snapshot's pack."""
        if rows is not None:
            hashes = hashes[rows]
        # zero pages get ZERO_REF without a trip through the dictionary
        nz = nonzero_rows(hashes)
        if len(nz) == len(hashes):
            return self._refs_for_nonzero(data, hashes, rows, borrow)
        out = np.full(len(hashes), _ZERO, dtype=np.uint64)
        if len(nz):
            out[nz] = self._refs_for_nonzero(data, hashes[nz], nz if rows is None else rows[nz], borrow)
        return out

    def _refs_for_nonzero(self, data: np.ndarray, hashes: np.ndarray, rows: np.ndarray | None,
                          borrow: bool = False) -> np.ndarray:
        """_refs_for of non-zero pages: data[rows] (all rows if None) with hashes."""
        hashes = np.ascontiguousarray(hashes)
        refs = self.index.get(hashes)
        miss = np.flatnonzero(refs == MISSING)
        if len(miss):
            pack = self._pack()
            base = (self.index.slot(pack.pack_id) << SLOT_SHIFT) + pack.npages
            # stored by this writer already, or new: appended to its pack
            refs[miss], fresh = self.own.assign(hashes[miss], base)
            if len(fresh):
                f = miss[fresh]
                pack.add(data, hashes[f], f if rows is None else rows[f], borrow=borrow)
                self.new_pages += len(fresh)
        return refs

    def add_pages(self, pid: int, addrs: np.ndarray, data, hashes: np.ndarray | None = None,
                  rows: np.ndarray | None = None, borrow: bool = False) -> np.ndarray:
        """Pages of process pid: addrs (n,) uint64, data n*4096 bytes (the
        caller may reuse its buffer once this returns, or with borrow=True
        once the futures take_borrowed() gives are done), hashes (n, 32) their hash if known (all-zero
        for a zero page).  With rows, only those pages are part of the
        snapshot (the others are zero pages to drop).  Returns the
        references of the pages kept (for add_refs)."""
        data = np.frombuffer(data, dtype=np.uint8).reshape(-1, PAGE)
        if not len(data) or (rows is not None and not len(rows)):
            return np.empty(0, np.uint64)
        if hashes is None:
            hashes = hash_pages(data)
        refs = self._refs_for(data, hashes, rows, borrow)
        a = np.asarray(addrs, dtype=np.uint64)
        self.page_tables.setdefault(pid, []).append((a[rows] if rows is not None else a.copy(), refs))
        return refs

    def take_borrowed(self) -> list:
        """Futures reading data lent with add_pages(borrow=True) since the
        last call: the lender may reuse it once they are done."""
        return [f for p in self.packs for f in p.take_borrowed()]

    def add_refs(self, pid: int, addrs, refs) -> None:
        """Pages of pid whose contents were already added (references from
        add_pages): e.g. one physical page that several processes of a tree
        share copy-on-write after fork."""
        addrs = np.asarray(addrs, dtype=np.uint64)
        if len(addrs):
            self.page_tables.setdefault(pid, []).append((addrs.copy(), np.asarray(refs, dtype=np.uint64).copy()))

    def add_unchanged_runs(self, pid: int, runs: np.ndarray, written: np.ndarray) -> int:
        """Pages of pid known (by a dirty-page tracker) to hold what they held
        in the parent snapshot: those of the (start, end) runs, except the
        addresses `written` (in any order).  The parent's entries there are kept as
        they are; an address the parent did not have was absent then and is
        now (zero for anonymous memory, the file's page for a file mapping).
        Computed on the parent's runs, never per page.  Returns
        how many pages the runs declare unchanged."""
        if self.parent is None:
            raise ValueError("add_unchanged_runs needs a parent snapshot")
        ra, rl, rr = self.parent.global_page_runs(pid, self.index)
        ks, ke = _merge_intervals(np.asarray(runs, dtype=np.uint64).reshape(-1, 2))
        w = np.unique(np.asarray(written, dtype=np.uint64))  # sorted: the C walk only moves forward
        cap = len(ra) + len(ks) + len(w)
        out = [np.empty(cap, np.uint64) for _ in range(3)]
        n = lib.snp_runs_keep(_u64(ra), _u64(rl), _u64(rr), len(ra), _u64(ks), _u64(ke), len(ks),
                              _u64(w), len(w), ZERO_REF, *(_u64(x) for x in out))
        self.page_tables.setdefault(pid, []).append(_Runs(x[:n].copy() for x in out))
        pages = int(((runs[:, 1] - runs[:, 0]) // PAGE).sum())
        lo = np.searchsorted(w, runs[:, 0])
        hi = np.searchsorted(w, runs[:, 1])
        return pages - int((hi - lo).sum())

    def add_file(self, key: str, content: bytes) -> None:
        """Contents of a file the snapshot must carry (deleted, memfd, tmpfs)."""
        size = len(content)
        data = np.frombuffer(content + bytes(-size % PAGE), dtype=np.uint8).reshape(-1, PAGE)
        refs = self._refs_for(data, hash_pages(data)) if len(data) else np.empty(0, np.uint64)
        self.files[key] = (refs, size)

    @property
    def stored_bytes(self) -> int:
        return sum(p.stored_bytes for p in self.packs)

    # -- commit --
    def _localize(self, refs: np.ndarray, slot_map: dict[int, int]) -> np.ndarray:
        """Index-wide references -> references into this file's pack list
        (a lookup table over the few slots used: O(n), no sort)."""
        out = refs.copy()
        nz = refs != _ZERO
        if nz.any():
            r = refs[nz]
            slots = (r >> np.uint64(SLOT_SHIFT)).astype(np.intp)
            used = np.flatnonzero(np.bincount(slots))
            lut = np.zeros(int(used[-1]) + 1, dtype=np.uint64)
            for s in used.tolist():
                lut[s] = slot_map.setdefault(s, len(slot_map))
            out[nz] = (lut[slots] << np.uint64(SLOT_SHIFT)) | (r & np.uint64(0xFFFFFFFF))
        return out

    def _write_tables(self) -> tuple[int, dict, dict]:
        """The page tables and file references, into the snapshot file;
        returns (pages, {pid: runs with index-wide refs}, slot map).  Stops
        as soon as the packs' thread fails (its error is the one raised)."""
        h5 = self.h5
        slot_map: dict[int, int] = {}
        total = 0
        tables = {}
        for pid, parts in self.page_tables.items():
            run_addr, run_len, run_ref = table_runs(parts)
            if self._sealing is not None and self._sealing.done() and self._sealing.exception() is not None:
                raise _Stopped()
            g = h5.create_group(f"pages/{pid}")
            for name, col in (("run_addr", run_addr), ("run_len", run_len),
                              ("run_ref", self._localize(run_ref, slot_map))):
                g.create_dataset(name, data=col, **_TABLE_OPTS)
            total += int(run_len.sum())
            tables[pid] = (run_addr, run_len, run_ref)
        for key, (refs, size) in self.files.items():
            refs = self._localize(refs, slot_map)
            ds = h5.create_dataset(f"files/{key}/ref", data=refs, **_opts(len(refs)))
            ds.parent.attrs["size"] = size
        return total, tables, slot_map

    def commit(self, image: dict, before_publish=None) -> str:
        """Commit packs, then the snapshot file; returns its path.  The
        page tables are written into the (still invisible) snapshot file
        while a thread drains and seals the packs.  before_publish() is
        called once they are sealed, before any is linked: it may raise to
        stop the commit (abort() then removes everything)."""
        stop = threading.Event()

        def seal_all():
            for p in self.packs:
                if stop.is_set():
                    raise _Stopped()
                p.seal()
        if self.packs:
            ex = ThreadPoolExecutor(1, thread_name_prefix="pack-seal")
            self._sealing = ex.submit(seal_all)
            ex.shutdown(wait=False)
        try:
            total, tables, slot_map = self._write_tables()
        except BaseException as e:
            stop.set()  # HDF5 after a failed write: touch as little as possible
            err = self._wait_sealed()
            if err is not None and not isinstance(err, _Stopped):
                raise err from e  # the first failure (round.py looks for HDF5 write errors)
            raise
        err = self._wait_sealed()
        if err is not None:
            raise err
        if before_publish is not None:
            before_publish()
        for p in self.packs:
            p.publish()  # pages are durable before anything refers to them
        self.new_bytes = self.stored_bytes
        h5 = self.h5
        names = [self.index.slots[s] for s, _ in sorted(slot_map.items(), key=lambda kv: kv[1])]
        for n in names:  # never publish a reference to a pack that is not there
            if not os.path.exists(os.path.join(self.packdir, n)):
                raise DamagedError(f"page pack {n} vanished before snapshot {self.sid} was committed")
        fsync_dir(self.packdir)  # packs linked by other writers are durable too
        image_json = json.dumps(image, separators=(",", ":"))
        h5.create_dataset("packs", data=np.array(names, dtype=object), dtype=h5py.string_dtype())
        h5.create_dataset("image", data=image_json, dtype=h5py.string_dtype())
        a = h5.attrs
        for k, v in self.attrs.items():
            a[k] = v
        a["format"] = FORMAT_NAME
        a["format_version"] = FORMAT_VERSION
        a.setdefault("created", time.time())
        a["hostname"] = socket.gethostname()
        a["stored_bytes"] = int(self.new_bytes)
        a["new_pages"] = int(self.new_pages)
        a["pages"] = int(total)
        # strings have no HDF5 checksum: their SHA-256 lives beside them
        a["image_sha256"] = hashlib.sha256(image_json.encode()).hexdigest()
        a["packs_sha256"] = _names_digest(names)
        # for the catalog, as read_attrs would give them (without opening the file again)
        self.final_attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in a.items()}
        h5.close()
        commit_file(self.tmp_path, self.final_path, "snapshot")
        self.index.merge(self.own)  # only pages of a published snapshot
        self.index.remember_tables(self.sid, tables)
        return self.final_path

    def _wait_sealed(self) -> BaseException | None:
        """Wait for the thread sealing the packs; its exception, if any."""
        f, self._sealing = self._sealing, None
        return f.exception() if f is not None else None

    def abort(self) -> None:
        if self._sealing is not None:  # commit() interrupted while packs were sealed
            self._sealing.exception()
            self._sealing = None
        for p in self.packs:
            p.abort()
        try:
            self.h5.close()
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass
        try:
            os.unlink(self.tmp_path)
        except FileNotFoundError:
            pass


def read_attrs(path: str) -> dict:
    """The attributes of a snapshot file (cheap: no datasets read)."""
    with h5py.File(path, "r", locking=False) as f:
        if f.attrs.get("format") == FORMAT_NAME and int(f.attrs.get("format_version", 0)) == 1:
            raise FormatError(f"{path}: format version 1 (pre-release) is no longer read")
        check_format(path, f.attrs, FORMAT_NAME, FORMAT_VERSION)
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}


class SnapshotReader:
    def __init__(self, path: str, packdir: str | None = None):
        self.path = path
        self.packdir = packdir or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), "packs")
        try:
            self.h5 = h5py.File(path, "r", locking=False)
        except OSError as e:
            raise FormatError(f"{path}: not a readable HDF5 file ({e})") from None
        a = self.h5.attrs
        if a.get("format") == FORMAT_NAME and int(a.get("format_version", 0)) == 1:
            raise FormatError(f"{path}: format version 1 (pre-release, pages inside the snapshot) is no longer "
                              "read; dump again")
        check_format(path, a, FORMAT_NAME, FORMAT_VERSION)
        self.attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in a.items()}
        self.id = self.attrs.get("id", os.path.basename(path)[:-3])
        try:
            self.pack_names = [n.decode() if isinstance(n, bytes) else n for n in self.h5["packs"][:]]
        except (OSError, KeyError, ValueError) as e:
            self.h5.close()
            raise DamagedError(f"{self.id}: pack list unreadable ({e})") from None
        if self.attrs.get("packs_sha256") != _names_digest(self.pack_names):
            self.h5.close()
            raise DamagedError(f"{self.id}: pack list does not match its SHA-256 (snapshot file damaged)")
        self._packs: dict[int, PackReader] = {}
        self._packs_lock = threading.Lock()  # restore reads blocks in several threads
        self._image = None

    def close(self):
        for p in self._packs.values():
            p.close()
        self._packs.clear()
        self.h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def image(self) -> dict:
        if self._image is None:
            try:
                raw = self.h5["image"][()]
            except (OSError, KeyError) as e:
                raise DamagedError(f"{self.id}: image unreadable ({e})") from None
            raw = raw if isinstance(raw, bytes) else raw.encode()
            if hashlib.sha256(raw).hexdigest() != self.attrs.get("image_sha256"):
                raise DamagedError(f"{self.id}: image does not match its SHA-256 (snapshot file damaged)")
            self._image = json.loads(raw)
        return self._image

    def pids(self) -> list[int]:
        g = self.h5.get("pages")
        return sorted(int(k) for k in g.keys()) if g is not None else []

    def page_runs(self, pid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(run_addr, run_len, run_ref) of pid's page table, checked: sorted,
        disjoint, page-aligned runs; refs index this file's pack list."""
        g = self.h5.get(f"pages/{pid}")
        if g is None:
            return np.empty(0, np.uint64), np.empty(0, np.uint64), np.empty(0, np.uint64)
        try:
            names = ("run_addr", "run_len", "run_ref") if "run_addr" in g else ("addr", "ref")  # format 3 / 2
            cols = [g[k][:] for k in names]
            if any(c.ndim != 1 or c.dtype.kind not in "ui" for c in cols):
                raise ValueError("not 1-dimensional integer datasets")
            cols = [c.astype(np.uint64) for c in cols]
            ra, rl, rr = cols if len(cols) == 3 else to_runs(*cols)
        except (OSError, KeyError, ValueError) as e:
            raise DamagedError(f"{self.id}: page table of PID {pid} unreadable ({e})") from None
        nz = rr != _ZERO  # a run stays within its pack slot (FORMAT.md §5.1)
        end = ra + rl * np.uint64(PAGE) if len(rl) == len(ra) else None
        if end is None or len(rr) != len(ra) or (rl == 0).any() or (rl > _MAX_RUN).any() or (ra % PAGE).any() \
                or (end <= ra).any() or (end > np.uint64(_ADDR_LIMIT)).any() \
                or ((rr[nz] & np.uint64(0xFFFFFFFF)) + rl[nz] - np.uint64(1) > np.uint64(0xFFFFFFFF)).any() \
                or (len(ra) > 1 and (ra[1:] < end[:-1]).any()):
            raise DamagedError(f"{self.id}: page table of PID {pid} is malformed")
        return ra, rl, rr

    def page_table(self, pid: int) -> tuple[np.ndarray, np.ndarray]:
        """(addrs, refs) sorted by address; refs index this file's pack list."""
        runs = self.page_runs(pid)
        if int(runs[1].sum()) > _MAX_TABLE:
            raise DamagedError(f"{self.id}: page table of PID {pid} claims {int(runs[1].sum())} pages")
        return from_runs(*runs)

    def global_page_runs(self, pid: int, index: PageIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The page table as runs, references translated to index's slots
        (kept in memory by the index since this snapshot's commit, if it
        was written through the same index: the next incremental needs it)."""
        known = index.tables_of(self.id)
        if known is not None and pid in known:
            return known[pid]
        ra, rl, rr = self.page_runs(pid)
        return ra, rl, self.globalize(rr, index)

    def globalize(self, refs: np.ndarray, index: PageIndex) -> np.ndarray:
        out = refs.copy()
        nz = refs != _ZERO
        if nz.any():
            r = refs[nz]
            slots = (r >> np.uint64(SLOT_SHIFT)).astype(np.intp)
            if int(slots.max()) >= len(self.pack_names):
                raise DamagedError(f"{self.id}: page reference to pack slot {int(slots.max())} "
                                   f"of {len(self.pack_names)}")
            gl = np.array([index.slot(n) for n in self.pack_names], dtype=np.uint64)
            out[nz] = (gl[slots] << np.uint64(SLOT_SHIFT)) | (r & np.uint64(0xFFFFFFFF))
        return out

    def missing_packs(self) -> list[str]:
        return [n for n in self.pack_names if not os.path.exists(os.path.join(self.packdir, n))]

    def pack(self, slot: int) -> PackReader:
        with self._packs_lock:
            p = self._packs.get(slot)
            if p is None:
                if slot >= len(self.pack_names):
                    raise DamagedError(f"{self.path}: page reference to pack slot {slot} of {len(self.pack_names)}")
                p = self._packs[slot] = PackReader(os.path.join(self.packdir, self.pack_names[slot]))
            return p

    def gather(self, refs: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Page contents (n, 4096) for references; ZERO_REF gives zeros.  Every
        block read is checked against its pages' hashes.  `out` may be a
        reused buffer of at least n pages."""
        if out is None:
            out = np.empty((len(refs), PAGE), dtype=np.uint8)
        out = out[: len(refs)]
        nz = refs != _ZERO
        if not nz.all():
            out[~nz] = 0
        for dest, block, rows in self._blocks_of(np.flatnonzero(nz), refs):
            out[dest] = block[rows]
        return out

    def page_sources(self, refs: np.ndarray) -> tuple[np.ndarray, list]:
        """Where in memory the contents of refs are: (addresses (n,) uint64,
        arrays that must stay alive while those addresses are used).  Pages
        are not copied: addresses point into decompressed blocks, which are
        verified against their hashes as they are read, or at one zero page."""
        ptrs = np.full(len(refs), np.uint64(_ZERO_PAGE.ctypes.data), dtype=np.uint64)
        keep: list = [_ZERO_PAGE]
        for dest, block, rows in self._blocks_of(np.flatnonzero(refs != _ZERO), refs):
            keep.append(block)
            ptrs[dest] = np.uint64(block.ctypes.data) + rows.astype(np.uint64) * np.uint64(PAGE)
        return ptrs, keep

    def _blocks_of(self, idx: np.ndarray, refs: np.ndarray):
        """For the non-zero references refs[idx]: (positions in refs, a
        verified decompressed block (n, 4096), rows of that block), one
        block at a time."""
        if not len(idx):
            return
        r = refs[idx]
        slots = (r >> np.uint64(SLOT_SHIFT)).astype(np.int64)
        pidx = (r & np.uint64(0xFFFFFFFF)).astype(np.int64)
        for s in np.unique(slots):
            pk = self.pack(int(s))
            in_s = slots == s
            pi, dest = pidx[in_s], idx[in_s]
            if int(pi.max()) >= pk.npages:
                raise DamagedError(f"{self.path}: page reference beyond the end of pack {pk.name}")
            blocks = pi // pk.ppb
            order = np.argsort(blocks, kind="stable")
            for sel in np.split(order, np.flatnonzero(np.diff(blocks[order])) + 1):
                b = int(blocks[sel[0]])
                yield dest[sel], pk.block(b), pi[sel] - b * pk.ppb

    def iter_page_sources(self, pid: int, chunk: int = 8192, ahead: int = 2):
        """(addrs, source addresses, keep-alive) in address order, chunk pages
        at a time; the blocks of the next `ahead` chunks are read,
        decompressed and verified in threads (zstd and the hash release the
        GIL) while the caller writes this one."""
        addrs, refs = self.page_table(pid)
        if not len(addrs):
            return
        starts = list(range(0, len(addrs), chunk))
        with ThreadPoolExecutor(max_workers=ahead) as ex:
            futs = [ex.submit(self.page_sources, refs[i: i + chunk]) for i in starts[:ahead]]
            for k, i in enumerate(starts):
                ptrs, keep = futs[k].result()
                futs[k] = None
                if k + ahead < len(starts):
                    j = starts[k + ahead]
                    futs.append(ex.submit(self.page_sources, refs[j: j + chunk]))
                yield addrs[i: i + chunk], ptrs, keep

    def file_content(self, key: str) -> bytes:
        return self.gather(self._file_refs(key)).tobytes()[: int(self.h5[f"files/{key}"].attrs["size"])]

    def _file_refs(self, key: str) -> np.ndarray:
        g = self.h5.get(f"files/{key}")
        if g is None:
            raise DamagedError(f"{self.id}: saved file contents {key} missing")
        try:
            return g["ref"][:]
        except (OSError, KeyError, ValueError) as e:
            raise DamagedError(f"{self.id}: saved file {key} unreadable ({e})") from None

    def all_refs(self) -> np.ndarray:
        parts = [self.page_table(pid)[1] for pid in self.pids()]
        g = self.h5.get("files")
        if g is not None:
            parts += [self._file_refs(k) for k in g.keys()]
        return np.concatenate(parts) if parts else np.empty(0, np.uint64)

    def verify(self, progress=None) -> list[str]:
        """Re-hash every stored page this snapshot needs; return the problems.
        Packs found damaged are listed in self.damaged_packs."""
        self.damaged_packs: set[str] = set()
        missing = self.missing_packs()
        problems = [f"{self.id}: page pack {n} is missing" for n in missing]
        try:
            self.image()
        except Exception as e:  # noqa: BLE001 - report any decode failure
            problems.append(f"{self.id}: image unreadable ({e})" if not isinstance(e, DamagedError) else str(e))
        try:
            refs = self.all_refs()
        except DamagedError as e:
            return problems + [str(e)]
        refs = refs[refs != _ZERO]
        slots = (refs >> np.uint64(SLOT_SHIFT)).astype(np.int64)
        for s in np.unique(slots):
            name = self.pack_names[s] if s < len(self.pack_names) else f"slot {s}"
            if name in missing:
                continue
            try:
                pk = self.pack(int(s))
            except (DamagedError, FormatError) as e:
                problems.append(f"{self.id}: {e}")
                self.damaged_packs.add(name)
                continue
            pi = (refs[slots == s] & np.uint64(0xFFFFFFFF)).astype(np.int64)
            if int(pi.max()) >= pk.npages:
                problems.append(f"{self.id}: references beyond the end of pack {pk.name}")
            for b in np.unique(pi // pk.ppb):
                try:
                    pk.block(int(b))
                except DamagedError as e:
                    problems.append(f"{self.id}: {e}")
                    self.damaged_packs.add(name)
                if progress:
                    progress.add(pk.ppb * PAGE)
            pk._cache.clear()
        return problems
