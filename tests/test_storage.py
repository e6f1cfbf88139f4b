"""Storage: chains, store-wide dedup, retention, compaction, verification,
and crash safety -- with real programs, real dumps and real HDF5 files."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import h5py
import numpy as np
import pytest

from snapshotd.storage.snapshot import from_runs
from genwriter import Gen, cli_json, cli_ok, dump, restore_and_check
from zdtm_harness import assert_cli_fails, cli_command, last_line, wait_gone


def snapshot_files(store):
    return sorted((store / "snapshots").glob("*.h5"))


def test_chain_of_20_incrementals_restores_every_moment(tmp_path, store):
    g = Gen(tmp_path / "g", npages=1024)
    chain = [(dump(store, g.pid), g.state())]
    for _ in range(20):
        want = g.advance()
        chain.append((dump(store, g.pid, "--parent", "latest"), want))
    full = chain[0][0]
    assert full["parent"] == "" and full["stored_bytes"] > 1024 * 2048
    for (prev, _), (cur, _) in zip(chain, chain[1:]):
        assert cur["parent"] == prev["id"]
        # about a tenth of the pages changed: far less than a full snapshot
        assert cur["stored_bytes"] < full["stored_bytes"] * 0.3, cur
    rows = {r["id"]: r for r in cli_json(store, "list")}
    assert [rows[s["id"]]["kind"] for s, _ in chain] == ["full"] + ["incremental"] * 20
    assert rows[chain[-1][0]["id"]]["chain_depth"] == 20
    for snap, want in reversed(chain):
        restore_and_check(store, snap["id"], g, want)


def test_identical_processes_are_stored_once(tmp_path, store):
    gens = [Gen(tmp_path / f"g{i}", npages=4096, seed=7) for i in range(4)]
    sizes = [dump(store, g.pid)["stored_bytes"] for g in gens]
    assert sizes[0] > 4096 * 2048
    for s in sizes[1:]:
        assert s < sizes[0] * 0.02, sizes


def test_unchanged_process_costs_under_one_percent(tmp_path, store):
    g = Gen(tmp_path / "g", npages=4096)
    first = dump(store, g.pid)
    second = dump(store, g.pid, "--parent", first["id"])
    snap_file = store / "snapshots" / (second["id"] + ".h5")
    cost = second["stored_bytes"] + snap_file.stat().st_size
    assert cost < first["stored_bytes"] * 0.01, (cost, first["stored_bytes"])
    restore_and_check(store, second["id"], g, g.state())


def _corrupt_first_block(store, snap_id):
    with h5py.File(store / "snapshots" / f"{snap_id}.h5", "r") as f:
        pack = f["packs"][0].decode()
    path = store / "packs" / pack
    with h5py.File(path, "r") as f:
        ds = f["blocks"]
        lo, hi = int(f["block_offset"][0]), int(f["block_offset"][1])
        pos = (lo + hi) // 2
        chunk = ds.chunks[0]
        where = ds.id.get_chunk_info_by_coord((pos // chunk * chunk,)).byte_offset + pos % chunk
    with open(path, "r+b") as fh:
        fh.seek(where)
        b = fh.read(1)
        fh.seek(where)
        fh.write(bytes([b[0] ^ 0x55]))
    return pack


def test_corrupt_byte_is_named_by_verify_and_refused_by_restore(tmp_path, store):
    g = Gen(tmp_path / "g", npages=1024)
    snap = dump(store, g.pid)["id"]
    pack = _corrupt_first_block(store, snap)
    res = subprocess.run(cli_command(store, "verify", "--json"), capture_output=True, text=True)
    assert res.returncode == 1, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert not report["ok"]
    problems = " ".join(report["snapshots"][0]["problems"])
    assert pack in problems and "block 0" in problems, problems
    g.kill()
    msg = assert_cli_fails(store, "restore", snap)
    assert "damaged" in msg and pack in msg, msg
    wait_gone(g.pid)  # a refused restore leaves no process behind


def _make_pack_format_1(path):
    """Turn a pack into what pack format version 1 wrote: SHA-256 page names."""
    import hashlib
    import zstandard
    with h5py.File(path, "r+") as f:
        off, blocks, ppb = f["block_offset"][:], f["blocks"], int(f.attrs["pages_per_block"])
        sha = []
        for b in range(len(off) - 1):
            raw = zstandard.ZstdDecompressor().decompress(blocks[int(off[b]):int(off[b + 1])].tobytes())
            sha += [hashlib.sha256(raw[i:i + 4096]).digest() for i in range(0, len(raw), 4096)]
        assert len(sha) == len(f["hash"]) and len(off) - 1 == -(-len(sha) // ppb)
        f["hash"][...] = np.frombuffer(b"".join(sha), np.uint8).reshape(-1, 32)
        f.attrs["format_version"], f.attrs["hash"] = 1, "sha256"


def test_packs_of_format_1_sha256_are_still_read(tmp_path, store):
    g = Gen(tmp_path / "g", npages=1024)
    old = dump(store, g.pid)
    for p in (store / "packs").glob("*.h5"):
        _make_pack_format_1(p)
    cli_ok(store, "verify", old["id"])
    # the same content named by BLAKE3 is stored again, never confused
    new = dump(store, g.pid, "--parent", old["id"])
    assert new["stored_bytes"] > old["stored_bytes"] * 0.9
    with h5py.File(next(p for p in (store / "packs").glob(f"{new['id']}*.h5")), "r") as f:
        assert f.attrs["hash"] == "blake3" and f.attrs["format_version"] == 2
    restore_and_check(store, old["id"], g, g.state())


def test_missing_pack_is_reported(tmp_path, store):
    g = Gen(tmp_path / "g", npages=256)
    snap = dump(store, g.pid)["id"]
    for p in (store / "packs").glob("*.h5"):
        p.unlink()
    res = subprocess.run(cli_command(store, "verify", snap), capture_output=True, text=True)
    assert res.returncode == 1 and "missing" in res.stdout, res.stdout
    g.kill()
    assert "missing" in assert_cli_fails(store, "restore", snap)


def _crash(store, point, *args):
    env = dict(os.environ, SNAPSHOTD_CRASH_AT=point)
    res = subprocess.run(cli_command(store, *args), env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == -9, f"{point}: expected to be killed there\n{res.stdout}{res.stderr}"


def _assert_all_verify(store, expect_ids):
    out = cli_json(store, "verify")
    assert out["ok"], out
    assert {s["id"] for s in out["snapshots"]} >= set(expect_ids)


DUMP_POINTS = ["pack-write", "pack-before-link", "pack-after-link", "snapshot-before-link",
               "snapshot-after-link", "catalog.json-before-rename"]


@pytest.mark.parametrize("point", DUMP_POINTS)
def test_kill_during_dump_keeps_committed_snapshots(tmp_path, store, point):
    g = Gen(tmp_path / "g", npages=6000)  # > 16 MiB new data: several pack writes
    a_state = g.state()
    a = dump(store, g.pid)
    g.advance()
    g2 = Gen(tmp_path / "g2", npages=6000, seed=99)  # all new content
    _crash(store, point, "dump", str(g2.pid))
    assert os.path.exists(f"/proc/{g2.pid}"), "the dumped process must survive its dumper's death"
    ids = [r["id"] for r in cli_json(store, "list")]
    assert a["id"] in ids
    _assert_all_verify(store, [a["id"]])
    # the next writer removes the dead one's temporary files, and works
    b = dump(store, g2.pid)
    assert not [p for p in (store / "packs").iterdir() if ".tmp-" in p.name]
    _assert_all_verify(store, [a["id"], b["id"]])
    restore_and_check(store, a["id"], g, a_state)


@pytest.fixture
def chain3(tmp_path, store):
    g = Gen(tmp_path / "g", npages=1024)
    snaps = []
    for i in range(3):
        d = dump(store, g.pid, *(["--parent", "latest"] if snaps else []))
        snaps.append((d["id"], g.state()))
        if i < 2:
            g.advance()
    return g, snaps


@pytest.mark.parametrize("point,args", [
    ("prune-removed", ["prune", "--keep-last", "1"]),
    ("gc-removed", ["gc"]),
    ("compact-write", ["compact", "latest"]),
    ("snapshot-before-link", ["compact", "latest"]),
])
def test_kill_during_maintenance_keeps_what_is_kept(store, chain3, point, args):
    g, snaps = chain3
    if point == "gc-removed":
        # garbage: the chain's packs, once only a compacted copy is kept
        snaps = [(last_line(cli_ok(store, "compact", snaps[-1][0])), snaps[-1][1])]
        cli_ok(store, "prune", "--keep-last", "1", "--no-gc")
    args = [snaps[-1][0] if a == "latest" else a for a in args]
    _crash(store, point, *args)
    _assert_all_verify(store, [snaps[-1][0]])
    restore_and_check(store, snaps[-1][0], g, snaps[-1][1])


def test_prune_compact_gc(store, chain3):
    g, snaps = chain3
    before = sum(p.stat().st_size for p in (store / "packs").iterdir())
    new = last_line(cli_ok(store, "compact", snaps[-1][0]))
    row = {r["id"]: r for r in cli_json(store, "list")}[new]
    assert row["kind"] == "full" and row["parent"] == "" and row["compacted_from"] == snaps[-1][0]
    # keep only the compacted snapshot: every old pack becomes garbage
    out = cli_json(store, "prune", "--keep-last", "1")
    assert sorted(out["removed"]) == sorted(s for s, _ in snaps) and out["kept"] == [new]
    assert len(out["gc"]["removed_packs"]) == 3
    after = sum(p.stat().st_size for p in (store / "packs").iterdir())
    assert after < before
    _assert_all_verify(store, [new])
    restore_and_check(store, new, g, snaps[-1][1])


def test_prune_policy_needs_rules_and_dry_run_removes_nothing(store, chain3):
    msg = assert_cli_fails(store, "prune")
    assert "--keep-last" in msg
    out = cli_json(store, "prune", "--keep-last", "1", "--dry-run")
    assert len(out["removed"]) == 2
    assert len(snapshot_files(store)) == 3


def test_catalog_is_rebuilt_when_lost_or_damaged(store, chain3):
    _, snaps = chain3
    ids = sorted(s for s, _ in snaps)
    (store / "catalog.json").unlink()
    assert sorted(r["id"] for r in cli_json(store, "list")) == ids
    (store / "catalog.json").write_text("{garbage")
    assert sorted(r["id"] for r in cli_json(store, "list")) == ids
    assert json.loads((store / "catalog.json").read_text())["version"] == 1
    # a snapshot removed behind the catalog's back disappears from the list
    (store / "snapshots" / f"{ids[0]}.h5").unlink()
    assert sorted(r["id"] for r in cli_json(store, "list")) == ids[1:]


def test_files_open_with_plain_h5py_and_h5ls(store, chain3):
    files = snapshot_files(store) + sorted((store / "packs").glob("*.h5"))
    for path in files:
        with h5py.File(path, "r") as f:
            names = []
            f.visit(names.append)
            assert names and f.attrs["format_version"] >= 1
    if shutil.which("h5ls"):
        for path in files:
            res = subprocess.run(["h5ls", "-r", str(path)], capture_output=True, text=True)
            assert res.returncode == 0, res.stderr


def test_newer_format_is_refused_not_misread(store, chain3):
    _, snaps = chain3
    src = store / "snapshots" / f"{snaps[0][0]}.h5"
    newer = store / "newer.h5"
    shutil.copy(src, newer)
    with h5py.File(newer, "r+") as f:
        f.attrs["format_version"] = 99
    msg = assert_cli_fails(store, "show", str(newer))
    assert "newer" in msg and "99" in msg


def test_damaged_metadata_is_detected(tmp_path, store):
    g = Gen(tmp_path / "g", npages=256)
    snap = dump(store, g.pid)["id"]
    path = store / "snapshots" / f"{snap}.h5"
    with h5py.File(path, "r+") as f:  # one changed digit in the image, as a bit flip would do
        img = f["image"][()].decode()
        del f["image"]
        f.create_dataset("image", data=img.replace('"pid":', '"pid":1', 1), dtype=h5py.string_dtype())
    res = subprocess.run(cli_command(store, "verify", snap), capture_output=True, text=True)
    assert res.returncode == 1 and "image does not match" in res.stdout, res.stdout + res.stderr
    g.kill()
    assert "damaged" in assert_cli_fails(store, "restore", snap)


def test_damaged_pack_is_quarantined_and_not_reused(tmp_path, store):
    g = Gen(tmp_path / "g", npages=1024)
    first = dump(store, g.pid)["id"]
    pack = _corrupt_first_block(store, first)
    subprocess.run(cli_command(store, "verify"), capture_output=True)
    assert (store / "damaged" / pack).exists()
    # the next snapshot stores its pages again instead of pointing into the bad pack
    want = g.state()
    second = dump(store, g.pid, "--parent", first)
    out = cli_json(store, "verify", second["id"])
    assert out["ok"], out
    restore_and_check(store, second["id"], g, want)


def test_gc_deletes_nothing_when_a_listed_pack_is_missing(store, chain3):
    _, snaps = chain3
    new = last_line(cli_ok(store, "compact", snaps[-1][0]))
    cli_ok(store, "prune", "--keep-last", "1", "--no-gc")  # old packs are now garbage
    packs = sorted((store / "packs").glob("*.h5"))
    with h5py.File(store / "snapshots" / f"{new}.h5", "r") as f:
        mine = f["packs"][0].decode()
    (store / "packs" / mine).rename(store / "packs" / ("x" + mine))  # as if its name were lost
    msg = assert_cli_fails(store, "gc")
    assert "missing" in msg and "nothing deleted" in msg
    assert len(sorted((store / "packs").glob("*.h5"))) == len(packs)


def test_dumps_after_compaction_use_the_compacted_packs(store, chain3):
    g, snaps = chain3
    new = last_line(cli_ok(store, "compact", snaps[-1][0]))
    want = g.advance()
    after = dump(store, g.pid, "--parent", new)["id"]
    cli_ok(store, "prune", "--keep-last", "1")  # keeps `after`; everything else goes
    out = cli_json(store, "verify")
    assert out["ok"] and [s["id"] for s in out["snapshots"]] == [after]
    with h5py.File(store / "snapshots" / f"{after}.h5", "r") as f:
        names = [n.decode() for n in f["packs"][:]]
        refs = np.concatenate([from_runs(*(f["pages"][p][k][:] for k in ("run_addr", "run_len", "run_ref")))[1]
                               for p in f["pages"]])
    slots = refs[refs != np.uint64(2**64 - 1)] >> np.uint64(32)
    old = [i for i, n in enumerate(names) if n.startswith(tuple(s for s, _ in snaps))]
    # pages are taken from the compacted copy; an old pack can only still serve
    # a page whose content exists nowhere newer (e.g. a stack page that went
    # back to an earlier state)
    assert np.isin(slots, old).sum() <= 8, (names, np.unique(slots, return_counts=True))
    restore_and_check(store, after, g, want)


def test_unchanged_runs_give_the_table_a_page_by_page_merge_gives(tmp_path):
    """An incremental writer keeps its parent's entries as runs (cut to the
    tracker's unchanged ranges and around the written pages); read back, the
    table must be exactly what the page-by-page rule gives: the parent's
    entries inside the ranges, minus the written addresses, plus the new
    pages.  Parents come from a real store, in memory (just committed) and
    read back from disk (a fresh Store)."""
    from snapshotd.storage.store import Store
    PAGE = 4096
    rng = np.random.default_rng(5)
    for trial in range(6):
        root = tmp_path / f"s{trial}"
        st = Store(str(root))
        # parent: 3000 addresses over 4000 pages, a third zero pages, runs of equal content
        paddr = np.sort(rng.choice(4000, 3000, replace=False)).astype(np.uint64) * PAGE + 0x10000000
        seeds = rng.integers(1, 40, len(paddr))
        seeds[rng.random(len(paddr)) < 0.3] = 0
        data = np.repeat(seeds.astype(np.uint8), PAGE).reshape(-1, PAGE)
        sid, w = st.writer(100)
        w.add_pages(100, paddr, data)
        w.commit({"trial": trial})
        parent_addrs, parent_refs = st.open(sid).page_table(100)
        if trial % 2:
            st = Store(str(root))  # the next writer reads the parent back from disk
        ranges = np.sort(rng.integers(0, 4100, (5, 2)), axis=1).astype(np.uint64) * PAGE + 0x10000000
        written = np.unique(rng.choice(paddr, 200))
        sid2, w = st.writer(100, parent=sid)
        new = written[::2]
        w.add_pages(100, new, np.full((len(new), PAGE), 77, np.uint8))
        w.add_unchanged_runs(100, ranges, written)
        w.commit({"trial": trial})
        addrs, refs = st.open(sid2).page_table(100)
        inside = np.zeros(len(paddr), bool)
        for lo, hi in ranges:
            inside |= (paddr >= lo) & (paddr < hi)
        inside &= ~np.isin(paddr, written)
        want = np.unique(np.concatenate([paddr[inside], new]))
        assert (addrs == want).all(), trial
        r = st.open(sid2)
        got = r.gather(refs)
        exp = {int(a): int(s) for a, s in zip(paddr, seeds)}
        exp.update({int(a): 77 for a in new})
        assert (got[:, 0] == np.array([exp[int(a)] for a in addrs], np.uint8)).all(), trial
        assert (got == got[:, :1]).all()
        r.close()


@pytest.mark.parametrize("cols", [
    {"run_addr": [2**64 - 4096], "run_len": [2], "run_ref": [2**64 - 1]},  # end wraps past 2^64
    {"run_addr": [2**64 - 4096, 2**47], "run_len": [2**35, 1], "run_ref": [2**64 - 1] * 2},  # wraps, then goes down
    {"run_addr": [0x10000], "run_len": [2**39], "run_ref": [2**64 - 1]},  # 2^39 zero pages: refused, not expanded
    {"run_addr": [-4096.0], "run_len": [1], "run_ref": [1]},  # not integers
    {"addr": [0x10000, 0x11000], "ref": [2**64 - 1]},  # format 2, fewer refs than addresses
])
def test_damaged_page_table_is_refused_in_one_line(tmp_path, store, cols):
    """A page table whose runs wrap, overlap, claim absurd lengths or are of
    the wrong type is reported damaged by verify and restore, never expanded
    or misread."""
    g = Gen(tmp_path / "g", npages=64)
    snap = dump(store, g.pid)["id"]
    g.kill()
    path = store / "snapshots" / f"{snap}.h5"
    with h5py.File(path, "r+") as f:
        pid = next(iter(f["pages"]))
        del f[f"pages/{pid}"]
        grp = f.create_group(f"pages/{pid}")
        for k, v in cols.items():
            grp.create_dataset(k, data=np.array(v, dtype=np.float64 if isinstance(v[0], float) else np.uint64))
    res = subprocess.run(cli_command(store, "verify", snap), capture_output=True, text=True)
    assert res.returncode == 1 and f"page table of PID {pid}" in res.stdout, res.stdout + res.stderr
    err = assert_cli_fails(store, "restore", snap)
    assert "page table" in err and "Traceback" not in err


@pytest.mark.parametrize("codec", ["cffi", "compress()"])
def test_pack_blocks_read_back_whichever_way_zstd_was_called(tmp_path, monkeypatch, codec):
    """Blocks are compressed into reused buffers through python-zstandard's
    cffi binding, or with compress() and a copy where a build lacks it:
    either way every page reads back, across several written pieces and
    with blocks compressed in place, gathered, and filled by the caller."""
    from snapshotd.pagehash import hash_pages
    from snapshotd.storage import pack
    if codec == "compress()":
        monkeypatch.setattr(pack, "_zc", None)
    elif pack._zc is None:
        pytest.skip("this zstandard has no cffi binding")
    rng = np.random.default_rng(7)
    n = 40 * 256 + 77  # 40 MiB and a bit: three write pieces, a partial last block
    pages = np.zeros((n, pack.PAGE), np.uint8)
    pages[::3] = rng.integers(0, 256, (len(pages[::3]), pack.PAGE), dtype=np.uint8)  # incompressible
    pages[1::3, ::8] = rng.integers(0, 4, (len(pages[1::3]), pack.PAGE // 8), dtype=np.uint8)
    w = pack.PackWriter(str(tmp_path / "p.h5"), "p")
    try:
        w.add(pages[:100], hash_pages(pages[:100]))  # copied by the caller: a block in progress
        rows = np.arange(100, 100 + 300, dtype=np.int64)
        w.add(pages, hash_pages(pages[rows]), rows=rows, borrow=True)  # gathered by a compressing thread
        w.add(pages[400:], hash_pages(pages[400:]), borrow=True)  # in place, where blocks lie whole
        w.seal()
        w.publish()
    except BaseException:
        w.abort()
        raise
    r = pack.PackReader(str(tmp_path / "p.h5"))
    try:
        got = np.concatenate([r.block(b) for b in range(len(r.offsets) - 1)])
        assert r.verify() == []
    finally:
        r.close()
    assert np.array_equal(got, pages)
