"""Incremental snapshots and copy-on-write capture, on real processes.

Programs (tests/zdtm/incr_*.c) change their memory one step per SIGUSR1 and
record a checksum per generation; the test snapshots after every step (a
chain: each snapshot's parent is the previous one), then restores from
snapshots of the chain and lets the restored program check that its memory
sums to what it recorded at that moment.
"""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

import zdtm_harness as zh
from snapshotd import dump as dumpmod
from snapshotd.incremental import TreeTracker, choose
from snapshotd.incremental.uffd import UffdTracker
from snapshotd.storage.store import Store

pytestmark = pytest.mark.skipif(zh.NO_CR, reason="needs checkpoint/restore")

INCR_PROGRAMS = [
    "incr_changes",         # every kind of memory change between snapshots, one per SIGUSR1
    "incr_random",          # random writes (two threads, single bytes, read(2)) per SIGUSR1
    "incr_cow_consistent",  # a sweep that never pauses: the capture must be one instant
    "incr_exec",            # exec between two snapshots
    "incr_new_vma_flags",   # a new mapping next to a tracked one, with flags of its own
    "incr_tree",            # a parent and its child, each tracked (TreeTracker)
]


def start(name, tmp_path):
    statedir = tmp_path / name
    statedir.mkdir()
    prog = zh.Program(name, statedir)
    prog.start()
    prog.wait_file("ready", zh.READY_TIMEOUT)
    return prog


def step(prog, gen):
    os.kill(prog.pid, signal.SIGUSR1)
    prog.wait_file(f"sum-{gen}", zh.READY_TIMEOUT)


def check_restored(prog, store, sid):
    """Restore sid (the PID must be free), let it check itself, kill it."""
    for f in ("go", "result"):
        (prog.statedir / f).unlink(missing_ok=True)
    zh.restore(store, sid, prog.pid)
    prog.restored = True
    (prog.statedir / "go").write_text("go\n")
    result = zh._read(prog.wait_file("result", zh.RESULT_TIMEOUT)).strip()
    assert result == "PASS", prog.report(f"restored from {sid}: {result}")
    zh.wait_gone(prog.pid)


def no_children(pid):
    """The process has no child left (capture children are killed and reaped)."""
    kids = []
    for t in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{t}/children") as f:
            kids += f.read().split()
    return kids


@pytest.mark.parametrize("capture", ["auto", "cow"])
def test_chain_with_uffd_tracker(tmp_path, store, capture):
    """Every change of incr_changes under the uffd-wp tracker held across
    dumps; restore from every snapshot of the chain."""
    if not UffdTracker.available()[0]:
        pytest.skip("uffd-wp tracker unavailable: " + UffdTracker.available()[1])
    prog = start("incr_changes", tmp_path)
    st = Store(str(store))
    sids, stats = [], []
    modes = set()
    with TreeTracker("uffd-wp") as tree:
        t = tree.for_pid(prog.pid)
        sid, s = dumpmod.dump(prog.pid, st, tracker=t, capture=capture)
        sids.append(sid), stats.append(s)
        for gen in range(1, 10):
            step(prog, gen)
            sid, s = dumpmod.dump(prog.pid, st, parent=sids[-1], tracker=t, capture=capture)
            assert s.tracker == "uffd-wp", s
            modes.add(s.capture)
            sids.append(sid), stats.append(s)
            assert not no_children(prog.pid), "capture child left behind"
    assert modes == {"frozen" if capture == "auto" else capture}, modes  # auto: few pages to read
    # the tracker saw the changes: the mremap'd and new mappings were hashed, and
    # the notes say so; the random-write steps read far fewer pages than a full dump
    notes = " ".join(n for s in stats for n in s.notes)
    assert "new mapping" in notes, notes
    full_pages = stats[0].pages
    assert 0 < stats[1].dirty_pages < full_pages // 10, (stats[1].dirty_pages, full_pages)
    with st.open(sids[3]) as r:
        assert r.attrs["tracker"] == "uffd-wp" and r.attrs["parent"] == sids[2] and r.attrs["kind"] == "incremental"
    prog.kill()
    for sid in sids:
        check_restored(prog, store, sid)


def test_chain_cli_hash(tmp_path, store):
    """The one-shot CLI: `dump --parent latest` compares hashes; restore from
    the first, a middle and the last snapshot."""
    prog = start("incr_changes", tmp_path)
    sids = [zh.dump(store, prog.pid)]
    for gen in range(1, 10):
        step(prog, gen)
        res = zh.run_cli(store, "--json", "dump", str(prog.pid), "--parent", "latest",
                         "--capture", ("frozen", "cow", "auto")[gen % 3])
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        assert out["tracker"] == "hash" and out["kind"] == "incremental", out
        assert 0 < out["new_pages"] < out["pages"] // 5, out  # the store keeps only new contents
        sids.append(out["id"])
    res = zh.run_cli(store, "--json", "show", sids[5])
    assert json.loads(res.stdout)["attrs"]["parent"] == sids[4]
    prog.kill()
    for sid in (sids[0], sids[4], sids[9]):
        check_restored(prog, store, sid)


def test_random_writes_never_missed(tmp_path, store):
    """incr_random writes random pages (plain stores from two threads, single
    bytes, kernel writes via read(2)); after 12 tracked rounds, the restored
    processes' checksums match at a middle and at the last snapshot."""
    prog = start("incr_random", tmp_path)
    st = Store(str(store))
    t = choose("auto")
    assert t.name == "uffd-wp", t.name  # this kernel has it (check.py probes it)
    sids = []
    try:
        sids.append(dumpmod.dump(prog.pid, st, tracker=t)[0])
        for gen in range(1, 13):
            step(prog, gen)
            sid, s = dumpmod.dump(prog.pid, st, parent=sids[-1], tracker=t)
            assert s.tracker == "uffd-wp"
            sids.append(sid)
    finally:
        t.close()
    prog.kill()
    check_restored(prog, store, sids[6])
    check_restored(prog, store, sids[-1])


def test_tracker_restarts_when_parent_is_not_its_baseline(tmp_path, store):
    """A tracker whose record does not start at the requested parent is not
    trusted: the dump falls back to hashing and the tracker starts over."""
    prog = start("incr_random", tmp_path)
    st = Store(str(store))
    with choose("uffd-wp") as t:
        s0 = dumpmod.dump(prog.pid, st, tracker=t)[0]
        step(prog, 1)
        s1 = dumpmod.dump(prog.pid, st, parent=s0, tracker=t)[0]
        step(prog, 2)
        sid, s = dumpmod.dump(prog.pid, st, parent=s0, tracker=t)  # not the baseline (s1)
        assert s.tracker == "hash"
        step(prog, 3)
        sid3, s3 = dumpmod.dump(prog.pid, st, parent=sid, tracker=t)
        assert s3.tracker == "uffd-wp"
    prog.kill()
    check_restored(prog, store, sid3)
    assert s1


@pytest.mark.parametrize("capture", ["cow", "frozen"])
def test_capture_is_one_instant(tmp_path, store, capture):
    """incr_cow_consistent sweeps 64 MiB without pause; the restored memory
    must be the memory of one instant (COW: read from the held child while the
    process writes on)."""
    prog = start("incr_cow_consistent", tmp_path)
    time.sleep(0.2)
    res = zh.run_cli(store, "--json", "dump", str(prog.pid), "--capture", capture)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["capture"] == capture
    assert not no_children(prog.pid)
    prog.kill()
    check_restored(prog, store, out["id"])


def test_cli_parent_errors(tmp_path, store):
    prog = start("incr_random", tmp_path)
    msg = zh.assert_cli_fails(store, "dump", str(prog.pid), "--parent", "latest")
    assert "no snapshot of PID" in msg
    msg = zh.assert_cli_fails(store, "dump", str(prog.pid), "--parent", "nosuch")
    assert "nosuch" in msg


def test_parent_latest_is_this_hosts_snapshot_of_the_pid(tmp_path, store):
    """On a store shared by nodes, another host's snapshot of the same PID is
    not this tree's parent: --parent latest looks on this host only."""
    import subprocess

    prog = start("incr_random", tmp_path)
    # a snapshot taken "on another host": the same dump, in a UTS namespace named otherhost
    argv = ["unshare", "--uts", "sh", "-c", 'hostname otherhost && exec "$@"', "sh",
            *zh.cli_command(store, "--json", "dump", str(prog.pid))]
    res = subprocess.run(argv, capture_output=True, text=True, cwd=str(zh.REPO_DIR), timeout=zh.CLI_TIMEOUT)
    assert res.returncode == 0, res.stderr
    msg = zh.assert_cli_fails(store, "dump", str(prog.pid), "--parent", "latest")
    assert "no snapshot of PID" in msg and "this host" in msg, msg
    from snapshotd.dump import DumpError, resolve_parent  # the API resolves it the same way
    from snapshotd.storage.store import Store
    with pytest.raises(DumpError):
        resolve_parent(Store(str(store)), prog.pid, "latest")
    res = zh.run_cli(store, "--json", "dump", str(prog.pid))
    assert res.returncode == 0, res.stderr
    mine = json.loads(res.stdout)["id"]
    res = zh.run_cli(store, "--json", "dump", str(prog.pid), "--parent", "latest")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["parent"] == mine


def test_exec_between_snapshots(tmp_path, store):
    """After exec the tracker's descriptor watches a dead address space: it
    says so, starts over on the new one, and the snapshot (hashed) restores."""
    prog = start("incr_exec", tmp_path)
    st = Store(str(store))
    with choose("uffd-wp") as t:
        s0 = dumpmod.dump(prog.pid, st, tracker=t)[0]
        step(prog, 1)  # execs; the new image writes sum-1
        time.sleep(0.1)
        s1, stats = dumpmod.dump(prog.pid, st, parent=s0, tracker=t)
        assert any("exec" in n for n in stats.notes), stats.notes
        s2, stats2 = dumpmod.dump(prog.pid, st, parent=s1, tracker=t)  # tracked again
        assert stats2.tracker == "uffd-wp" and stats2.pages < 64 and not stats2.notes, (stats2.pages, stats2.notes)
    prog.kill()
    check_restored(prog, store, s1)
    check_restored(prog, store, s2)


def test_new_mapping_flags_are_verified(tmp_path, store):
    """A mapping born next to a tracked one, with flags of its own
    (MADV_DONTFORK): while frozen its flags are taken from that neighbour
    (reading smaps then costs ~12 ms per GiB), and the check after the
    release catches the difference: that dump fails and leaves no file, the
    next one knows the flags, and the restored program finds its data and
    the flag."""
    prog = start("incr_new_vma_flags", tmp_path)
    st = Store(str(store))
    with choose("uffd-wp") as t:
        s0 = dumpmod.dump(prog.pid, st, tracker=t)[0]
        s1 = dumpmod.dump(prog.pid, st, parent=s0, tracker=t)[0]  # the hint now comes from the tracker
        step(prog, 1)
        files = sorted(os.listdir(st.packdir)) + sorted(os.listdir(st.snapdir))
        with pytest.raises(dumpmod.DumpError, match="guessed wrong"):
            dumpmod.dump(prog.pid, st, parent=s1, tracker=t)
        assert st.ids() == sorted([s0, s1]), st.ids()
        # nothing of the failed dump is left: no pack, no temporary file
        assert sorted(os.listdir(st.packdir)) + sorted(os.listdir(st.snapdir)) == files
        s2 = dumpmod.dump(prog.pid, st, parent=s1, tracker=t)[0]
    prog.kill()
    check_restored(prog, store, s2)


def test_tree_with_tracker_is_captured_frozen(tmp_path, store):
    """A tree of several processes keeps main's frozen capture: a tracker
    passed in is not trusted (noted), the chain still restores."""
    from test_zdtm_tree import kill_tree, wait_tree_settled

    prog = start("tree_cow_private", tmp_path)
    pids = wait_tree_settled([prog.pid], 2)
    zh.STARTED_PIDS.update(pids)
    assert len(pids) == 2
    st = Store(str(store))
    with choose("uffd-wp") as t:
        s0, a = dumpmod.dump(prog.pid, st, tracker=t)
        s1, b = dumpmod.dump(prog.pid, st, parent=s0, tracker=t)
    assert a.tracker == "none" and b.tracker == "hash" and b.capture == "frozen", (a, b)
    assert any("tree of 2 processes" in n for n in b.notes), b.notes
    kill_tree(prog, pids)
    zh.restore(store, s1, prog.pid)
    prog.restored = True
    (prog.statedir / "go").write_text("go\n")
    result = zh._read(prog.wait_file("result", zh.RESULT_TIMEOUT)).strip()
    assert result == "PASS", prog.report(result)


def test_tree_tracked_per_process(tmp_path, store):
    """incr_tree: a parent and its child, each writing random pages (a new
    mapping in the child, an munmap in the parent), under one TreeTracker:
    every snapshot after the first reads only the pages each process wrote;
    restore the tree from a middle and the last snapshot of the chain."""
    if not UffdTracker.available()[0]:
        pytest.skip("uffd-wp tracker unavailable: " + UffdTracker.available()[1])
    prog = start("incr_tree", tmp_path)
    pids = [prog.pid] + [int(c) for c in no_children(prog.pid)]
    zh.STARTED_PIDS.update(pids)
    assert len(pids) == 2, pids
    st = Store(str(store))
    sids, stats = [], []
    with TreeTracker("uffd-wp") as tree:
        sid, s = dumpmod.dump(prog.pid, st, tracker=tree)
        sids.append(sid), stats.append(s)
        for gen in range(1, 6):
            step(prog, gen)
            sid, s = dumpmod.dump(prog.pid, st, parent=sids[-1], tracker=tree)
            assert s.tracker == "uffd-wp" and sorted(s.pids) == sorted(pids), s
            sids.append(sid), stats.append(s)
        assert sorted(tree.trackers) == sorted(pids)
    # each process's written pages only: a step writes < 1500 pages of each
    # process's 4096-page area, and the rest are declared unchanged unread
    for s in stats[1:]:
        assert 0 < s.dirty_pages < 2 * 1500 + 64 and s.unchanged_pages > 2048, s
    for p in pids:
        zh.kill_pid(p)
    prog.proc.wait(timeout=zh.GONE_TIMEOUT)
    zh.wait_gone(pids[1])
    for sid in (sids[2], sids[-1]):
        check_restored(prog, store, sid)
        zh.wait_gone(pids[1])
