"""The service (issue 6): a real `snapshotd daemon` on a temporary socket and
store, real programs registered at 1-3 s intervals."""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import threading
import time

import pytest

from daemon_harness import (Daemon, kill_pid, read_log, start_counter, start_time, wait_for,
                            wait_gone)
from zdtm_harness import REPO_DIR, STARTED_PIDS


def consecutive(xs: list[int]) -> bool:
    return xs == list(range(1, len(xs) + 1))


def test_not_running_is_one_clear_line(root):
    d = Daemon(root)
    for verb in (["status"], ["register", "1", "--every", "10m"], ["snapshots"], ["rollback", "J"]):
        line = d.fails(*verb)
        assert "not running" in line, line


@pytest.mark.parametrize("bad", ["10", "10x", "0s", "-5m", "1.5h", "m", "10 m", "3d"])
def test_bad_durations_are_refused_with_the_accepted_forms(root, bad):
    line = Daemon(root).fails("register", "1", f"--every={bad}")
    assert "30s, 10m, 2h" in line, line


def test_snapshots_appear_and_registrations_survive_a_restart(daemon, root):
    work = os.path.join(root, "a")
    pid = start_counter(work)
    reg = daemon.ok("register", str(pid), "--every", "1s", "--name", "counter")
    assert reg["job"] == f"pid-{pid}" and reg["every"] == "1s"
    # registering twice is refused
    assert "already registered" in daemon.fails("register", str(pid), "--every", "1s")

    wait_for(lambda: len(daemon.snapshots()) >= 2, 15, "two scheduled snapshots")
    t = daemon.tree(pid)
    assert t["state"] == "active" and t["last_error"] == "" and t["last_bytes"] > 0 and t["next_run"]
    rows = daemon.snapshots()
    assert {r["pid"] for r in rows} == {pid} and all(r["complete"] for r in rows)
    assert len({r["round"] for r in rows}) == len(rows)
    # after the first, a tree's snapshots are incremental: parent = the previous one, and
    # only content the store did not hold yet is written
    from snapshotd.storage.store import Store

    attrs = {a["id"]: a for a in Store(daemon.store).list()}
    first, later = attrs[rows[0]["snapshot"]], attrs[rows[-1]["snapshot"]]
    assert first["kind"] == "full" and later["kind"] == "incremental"
    assert later["parent"] == rows[-2]["snapshot"]
    assert later["stored_bytes"] < first["stored_bytes"] / 4, (first["stored_bytes"], later["stored_bytes"])
    # the daemon holds the tree's dirty-page tracker between rounds: the first round
    # starts it, later ones read only the pages written since
    from snapshotd import incremental

    best = incremental.choose().name
    assert first["tracker"] == "none" and later["tracker"] == best, (first, later)

    # SIGTERM: a clean stop, nothing half-written left behind
    assert daemon.stop() == 0
    assert not glob.glob(os.path.join(daemon.store, "snapshots", ".*"))
    assert not os.path.exists(daemon.sock)
    n_files = len(glob.glob(os.path.join(daemon.store, "snapshots", "*.h5")))
    # (re-read once stopped: a round may have committed since `attrs` was read)
    attrs = {a["id"]: a for a in Store(daemon.store).list()}

    daemon.start()
    t = daemon.tree(pid)  # the registration came back from the job store
    assert t["state"] == "active" and t["name"] == "counter" and t["every"] == "1s"
    wait_for(lambda: len(glob.glob(os.path.join(daemon.store, "snapshots", "*.h5"))) >= n_files + 2, 15,
             "snapshots after the restart")
    # after a restart the tracker is gone: the first round compares content hashes
    after = sorted((a for a in Store(daemon.store).list() if a["id"] not in attrs), key=lambda a: a["created"])
    assert after[0]["tracker"] == "hash" and after[1]["tracker"] == best, after[:2]

    # a scheduled snapshot restores: the program continues where it was
    snap = daemon.snapshots()[-1]["snapshot"]
    daemon.ok("unregister", str(pid))
    kill_pid(pid)
    wait_gone(pid)
    res = daemon.cli("restore", snap)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.split()[-1]) == pid
    n0 = len(read_log(work))
    wait_for(lambda: len(read_log(work)) > n0 + 5, 10, "the restored counter to count")
    assert not os.path.exists(os.path.join(work, "FAIL"))


def test_rollback_of_a_two_tree_job_resumes_both_from_one_round(daemon, root):
    a, b = os.path.join(root, "a"), os.path.join(root, "b")
    pa, pb = start_counter(a), start_counter(b)
    st_a = start_time(pa)
    daemon.ok("register", str(pa), "--every", "1s", "--job", "J42", "--name", "left")
    daemon.ok("register", str(pb), "--every", "1s", "--job", "J42", "--name", "right")
    now = daemon.ok("snapshot-now", "--job", "J42")
    assert {s["pid"] for s in now["snapshots"]} == {pa, pb}
    time.sleep(0.5)  # the logs grow past the round
    before = (len(read_log(a)), len(read_log(b)))

    rb = daemon.ok("rollback", "J42", "--to", now["round"])
    assert rb["round"] == now["round"]
    rows = {r["snapshot"]: r for r in daemon.snapshots("J42")}
    restored = {x["pid"]: x["snapshot"] for x in rb["restored"]}
    assert set(restored) == {pa, pb}
    # both trees come from the one round
    assert {rows[s]["round"] for s in restored.values()} == {rb["round"]}
    assert start_time(pa) != st_a  # the old process was killed, this one is the restored one
    cut = {c["path"]: c for c in rb["cut"]}
    assert set(cut) == {os.path.join(a, "log"), os.path.join(b, "log")}
    for work, n_before in zip((a, b), before):
        c = cut[os.path.join(work, "log")]
        assert c["to"] < c["from"]
        n_round = len(open(os.path.join(work, "log")).read(c["to"]).split())
        assert n_round < n_before
        # they count on from the round: no repeated and no missing line
        wait_for(lambda: len(read_log(work)) > n_before + 5, 10, "the restored counters to count")
        assert consecutive(read_log(work)), f"{work}/log is not 1..n after the rollback"
        assert not os.path.exists(os.path.join(work, "FAIL"))

    # the restored trees stay registered and are snapshotted again
    wait_for(lambda: all(daemon.tree(p)["last_round"] not in ("", rb["round"]) for p in (pa, pb)), 15,
             "rounds after the rollback")

    # without --to: the newest complete round; --keep-files leaves the output alone
    time.sleep(0.3)
    sizes = [os.path.getsize(os.path.join(w, "log")) for w in (a, b)]
    newest = max(r["round"] for r in daemon.snapshots("J42"))
    rb2 = daemon.ok("rollback", "J42", "--keep-files")
    assert rb2["round"] >= newest and rb2["cut"] == [] and rb2["keep_files"]
    assert all(os.path.getsize(os.path.join(w, "log")) >= s for w, s in zip((a, b), sizes))
    daemon.ok("unregister", "--job", "J42")


def test_exited_tree_is_retired_and_a_reused_pid_is_never_snapshotted(daemon, root):
    work = os.path.join(root, "a")
    pid = start_counter(work)
    st0 = start_time(pid)
    # a copy of the program taken outside the daemon, to put a stranger at this PID later
    res = daemon.cli("dump", str(pid))
    assert res.returncode == 0, res.stderr
    outside = res.stdout.split()[-1]
    daemon.ok("register", str(pid), "--every", "1s")
    wait_for(lambda: daemon.tree(pid)["last_snapshot"], 10, "a first snapshot")
    assert daemon.stop() == 0
    n = len([r for r in daemon.snapshots_offline() if r == pid])
    kill_pid(pid)
    wait_gone(pid)
    res = daemon.cli("restore", outside)  # same PID, another process (new start time)
    assert res.returncode == 0, res.stderr
    assert start_time(pid) != st0
    daemon.start()
    t = wait_for(lambda: (lambda t: t if t["state"] == "retired" else None)(daemon.tree(pid)), 10, "retirement")
    assert "reused" in t["reason"], t
    time.sleep(2)
    ours = [r for r in daemon.snapshots_offline() if r == pid]
    assert len(ours) == n, "a snapshot was taken of the stranger at the registered PID"
    kill_pid(pid)
    wait_gone(pid)
    # an exited tree is retired with its snapshots kept
    other = start_counter(os.path.join(root, "b"))
    daemon.ok("register", str(other), "--every", "1s")
    wait_for(lambda: daemon.tree(other)["last_snapshot"], 10, "a snapshot")
    kill_pid(other)
    t = wait_for(lambda: (lambda t: t if t["state"] == "retired" else None)(daemon.tree(other)), 10, "retirement")
    assert t["reason"] == "exited"
    assert any(r["pid"] == other for r in daemon.snapshots())


def test_a_user_may_touch_only_their_own_processes_and_jobs(daemon, root, other_user):
    mine = start_counter(os.path.join(root, "root"))
    theirs = start_counter(os.path.join(root, "user"), user=other_user)
    daemon.ok("register", str(mine), "--every", "3s", "--job", "ROOTJOB")

    def refused(op, **args):
        ok, err = daemon.as_user(other_user, op, **args)
        assert not ok and "permission denied" in err, (op, err)
        return err

    assert str(mine) in refused("register", pid=mine, every="3s")
    ok, err = daemon.as_user(other_user, "unregister", pid=mine)  # another's registration is not even seen
    assert not ok and "not registered" in err, err
    uid = int(subprocess.run(["id", "-u", other_user], capture_output=True, text=True).stdout)
    for op in ("rollback", "unregister", "snapshot-now", "snapshots"):  # another uid's job, qualified
        refused(op, job=f"{uid + 1}:ROOTJOB")
    # job names are scoped by owner: the user's "ROOTJOB" is their own job, never root's
    ok, reg = daemon.as_user(other_user, "register", pid=theirs, every="3s", job="ROOTJOB")
    assert ok and reg["owner_uid"] == uid, reg
    assert {(t["job"], t["owner_uid"], t["pid"]) for t in daemon.ok("status")["trees"]} == \
        {("ROOTJOB", 0, mine), ("ROOTJOB", uid, theirs)}
    ok, rows = daemon.as_user(other_user, "snapshots", job="ROOTJOB")
    assert ok and rows == []
    ok, _ = daemon.as_user(other_user, "unregister", job="ROOTJOB")
    assert ok and {t["pid"] for t in daemon.ok("status")["trees"]} == {mine}

    ok, reg = daemon.as_user(other_user, "register", pid=theirs, every="3s", job="USERJOB")
    assert ok, reg
    ok, now = daemon.as_user(other_user, "snapshot-now", pid=theirs)
    assert ok and [s["pid"] for s in now["snapshots"]] == [theirs], now
    ok, st = daemon.as_user(other_user, "status")
    assert {t["pid"] for t in st["trees"]} == {theirs}
    ok, rows = daemon.as_user(other_user, "snapshots")
    assert {r["job"] for r in rows} == {"USERJOB"}
    assert {t["pid"] for t in daemon.ok("status")["trees"]} == {mine, theirs}  # root sees all
    # snapshot files are readable by root only
    for p in glob.glob(os.path.join(daemon.store, "snapshots", "*.h5")):
        assert os.stat(p).st_mode & 0o077 == 0
    # the user rolls back their own job; the restored program runs as them, not as the daemon
    ok, rb = daemon.as_user(other_user, "rollback", job="USERJOB")
    assert ok and [x["pid"] for x in rb["restored"]] == [theirs], rb
    with open(f"/proc/{theirs}/status") as f:
        uids = next(ln for ln in f if ln.startswith("Uid:")).split()[1:]
    assert uids == [str(uid)] * 4
    n = len(read_log(os.path.join(root, "user")))
    wait_for(lambda: len(read_log(os.path.join(root, "user"))) > n + 5, 10, "the restored counter to count")

    # the user swaps the path of a file their job writes for a symlink to a root-only file:
    # the rollback (run by root) must not open or cut it on their behalf
    ok, _ = daemon.as_user(other_user, "snapshot-now", pid=theirs)
    assert ok
    secret = os.path.join(root, "secret")
    with open(secret, "w") as f:
        f.write("root only\n" * 100)
    os.chmod(secret, 0o600)
    log = os.path.join(root, "user", "log")
    os.rename(log, log + ".old")
    os.symlink(secret, log)
    ok, err = daemon.as_user(other_user, "rollback", job="USERJOB")
    assert not ok and "may not open" in err and "secret" not in err.split("open")[0], err
    assert open(secret).read() == "root only\n" * 100
    assert start_time(theirs) is not None, "the job was killed although its rollback was refused"
    kill_pid(theirs)
    wait_gone(theirs)


def test_kill9_mid_snapshot_leaves_committed_snapshots_intact(daemon, root):
    small = os.path.join(root, "small")
    ps = start_counter(small)
    pbig = start_counter(os.path.join(root, "big"), period_ms=50, big_mb=256)
    daemon.ok("register", str(ps), "--every", "3s", "--job", "SMALL")
    daemon.ok("register", str(pbig), "--every", "1h", "--job", "BIG")
    first = daemon.ok("snapshot-now", "--job", "SMALL")["snapshots"][0]["snapshot"]

    # a long round in progress, then kill -9
    t = threading.Thread(target=daemon.cli, args=("snapshot-now", "--job", "BIG"), daemon=True)
    t.start()
    snapdir = os.path.join(daemon.store, "snapshots")

    def big_pack_growing():  # pages are being written (not the syscall injection at the start)
        return any(os.path.getsize(p) > (8 << 20)
                   for p in glob.glob(os.path.join(daemon.store, "packs", f".*-{pbig}-*.tmp-*")))
    wait_for(big_pack_growing, 30, "the big snapshot's pages to be written")
    assert glob.glob(os.path.join(snapdir, f".*{pbig}*.tmp-*"))
    daemon.kill9()
    t.join(30)
    # the process the daemon was dumping runs on (ptrace detached with the tracer)
    time.sleep(0.3)
    with open(f"/proc/{pbig}/stat") as f:
        assert f.read().rsplit(")", 1)[1].split()[0] in ("R", "S"), "the dumped process did not run on"

    daemon.start()  # the restarted daemon removes the dead writer's temp files
    daemon.ok("unregister", "--job", "SMALL")  # no new round: what is left is what the old daemon left
    packdir = os.path.join(daemon.store, "packs")
    wait_for(lambda: not glob.glob(os.path.join(snapdir, ".*")) + glob.glob(os.path.join(packdir, ".*")), 10,
             "the dead daemon's temp files to be removed")
    rows = daemon.snapshots()
    assert all(r["complete"] for r in rows) and all(r["pid"] != pbig for r in rows)
    assert first in {r["snapshot"] for r in rows}
    assert not glob.glob(os.path.join(daemon.store, "packs", ".*"))
    res = subprocess.run([sys.executable, "-c", f"""
from snapshotd.storage.store import Store
st = Store({daemon.store!r})
for sid in st.ids():
    with st.open(sid) as r:
        bad = r.verify()
        assert not bad, (sid, bad)
print("ok", len(st.ids()))"""], capture_output=True, text=True, cwd=str(REPO_DIR))
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr
    # and what was committed rolls back
    daemon.ok("unregister", "--job", "BIG")
    daemon.ok("register", str(ps), "--every", "3s", "--job", "SMALL")
    kill_pid(pbig)
    rb = daemon.ok("rollback", "SMALL")
    assert [x["pid"] for x in rb["restored"]] == [ps]
    n = len(read_log(small))
    wait_for(lambda: len(read_log(small)) > n + 5, 10, "the restored counter to count")
    assert consecutive(read_log(small))


@pytest.fixture
def small_store(root):
    """The daemon's store on a 1 MiB tmpfs: room for about three snapshots."""
    path = os.path.join(root, "smallfs")
    os.makedirs(path)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", path],
                         capture_output=True, text=True)
    if res.returncode:
        pytest.skip(f"cannot mount a tmpfs: {res.stderr.strip()}")
    yield path
    subprocess.run(["umount", "-l", path], capture_output=True)


@pytest.mark.parametrize("margin", ["default", "0"])
def test_a_full_disk_fails_the_snapshot_not_the_daemon(root, small_store, margin):
    """default: the free-space check refuses the round before HDF5 writes.
    0: no check, HDF5 itself meets ENOSPC; the daemon then re-executes
    itself (HDF5 cannot write safely after that) and keeps its registrations."""
    d = Daemon(root)
    d.store = os.path.join(small_store, "store")
    d.start(env={} if margin == "default" else {"SNAPSHOTD_FREE_MARGIN": margin})
    d.restarting = margin == "0"  # it re-execs after each HDF5 failure while the disk is full
    try:
        work = os.path.join(root, "a")
        pid = start_counter(work)
        d.ok("register", str(pid), "--every", "1s")
        if margin == "default":
            t = wait_for(lambda: (lambda t: t if t["last_error"] else None)(d.tree(pid)), 20, "a failed snapshot")
            assert "space" in t["last_error"].lower(), t
        else:
            wait_for(lambda: "restarting the daemon" in d.log_text(), 20, "the daemon to restart itself")
            wait_for(lambda: d.log_text().count("listening on") == 2, 20, "the daemon to listen again")
        assert d.p.poll() is None and d.tree(pid)["state"] == "active"
        snapdir = os.path.join(d.store, "snapshots")
        packdir = os.path.join(d.store, "packs")
        # (a round in progress has its temp files; a failed one must leave none)
        wait_for(lambda: not glob.glob(os.path.join(snapdir, ".*")) + glob.glob(os.path.join(packdir, ".*")), 10,
                 "no temp file left by failed rounds")
        assert all(r["complete"] for r in d.snapshots())
        # with room again, the next interval succeeds
        n = len(d.snapshots())
        subprocess.run(["mount", "-o", "remount,size=16m", small_store], check=True)
        wait_for(lambda: len(d.snapshots()) >= n + 2 and not d.tree(pid)["last_error"], 20,
                 "snapshots to succeed again")
        assert d.p.poll() is None
        assert "Segmentation" not in d.log_text()
    finally:
        d.close()
        print(d.log_text())  # shown if the test fails


def test_retention_keeps_the_newest_rounds_and_what_they_need(daemon, root):
    work = os.path.join(root, "a")
    pid = start_counter(work)
    daemon.ok("register", str(pid), "--every", "1s", "--keep", "2", "--job", "KEEP")
    wait_for(lambda: daemon.tree(pid)["snapshots"] >= 6, 20, "six rounds")
    time.sleep(1.2)  # a retention pass (every 1 s in these tests) after the sixth round
    daemon.ok("unregister", "--job", "KEEP")  # (retention stops with the registration)
    rows = daemon.snapshots("KEEP")
    assert 1 <= len(rows) <= 3, rows  # the newest 2 complete rounds (+1 committed since the last pass)
    # the kept snapshots are whole although their parents were removed, packs of removed ones are gone
    from snapshotd.storage.store import Store

    st = Store(daemon.store)
    assert set(st.ids()) == {r["snapshot"] for r in rows}
    for r in rows:
        with st.open(r["snapshot"]) as rd:
            assert not rd.verify()
    assert st.gc(dry_run=True)["removed_packs"] == []


def test_rollback_restores_a_whole_tree(daemon, root):
    """A registered tree is its root and every descendant: a shell and the
    counter it started come back together, the counter's log cut and resumed."""
    from daemon_harness import counter_binary

    work = os.path.join(root, "t")
    os.makedirs(work)
    subprocess.run(["setsid", "-f", "sh", "-c", f"echo $$ > {work}/sh.pid; {counter_binary()} {work} 20 & wait"],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: os.path.exists(os.path.join(work, "ready")), 20, "the counter under sh")
    sh, counter = int(open(os.path.join(work, "sh.pid")).read()), int(open(os.path.join(work, "ready")).read())
    STARTED_PIDS.update((sh, counter))
    daemon.ok("register", str(sh), "--every", "1h", "--job", "TREE")
    now = daemon.ok("snapshot-now", "--job", "TREE")
    time.sleep(0.4)
    n_before = len(read_log(work))
    rb = daemon.ok("rollback", "TREE", "--to", now["round"])
    assert counter in rb["killed"] and sh in rb["killed"]
    assert [x["pid"] for x in rb["restored"]] == [sh]
    with open(f"/proc/{counter}/stat") as f:  # the child is back, under its restored parent
        assert int(f.read().rsplit(")", 1)[1].split()[1]) == sh
    wait_for(lambda: len(read_log(work)) > n_before + 5, 10, "the restored counter to count")
    assert consecutive(read_log(work))


def test_restore_opens_files_with_the_processes_credentials(daemon, root, other_user):
    """Restore reopens a user's files as that user (fs uid/gid and groups of
    the restoring thread, snapshotd/fscreds.py), not as root: a root-only
    file put at the path of the user's log after the dump is refused with a
    clear error, never handed to the user's process; once the path names a
    file the user may open, the same snapshot restores and runs as the user."""
    import pwd

    pw = pwd.getpwnam(other_user)
    work = os.path.join(root, "user")
    pid = start_counter(work, user=other_user)
    res = daemon.cli("dump", str(pid))
    assert res.returncode == 0, res.stderr
    snap = res.stdout.split()[-1]
    kill_pid(pid)
    wait_gone(pid)

    log = os.path.join(work, "log")
    os.rename(log, log + ".user")
    with open(log, "w") as f:  # root swaps in a file of its own, unreadable for the user
        f.write("root only\n")
    os.chmod(log, 0o600)
    res = daemon.cli("restore", snap)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 1 and len(lines) == 1, res.stderr
    assert f"cannot reopen {log} as uid {pw.pw_uid}" in lines[0] and "Permission denied" in lines[0], lines
    wait_gone(pid, 5)  # the half-built process was killed (and reaped): nothing runs with the file
    assert open(log).read() == "root only\n"

    # the same snapshot restores once the path is a file the user may open
    os.unlink(log)
    os.rename(log + ".user", log)
    res = daemon.cli("restore", snap)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.split()[-1]) == pid
    with open(f"/proc/{pid}/status") as f:
        st = {ln.split(":")[0]: ln.split()[1:] for ln in f}
    assert st["Uid"] == [str(pw.pw_uid)] * 4 and st["Gid"] == [str(pw.pw_gid)] * 4
    n = len(read_log(work))
    wait_for(lambda: len(read_log(work)) > n + 5, 10, "the restored counter to count")
    assert not os.path.exists(os.path.join(work, "FAIL"))
    kill_pid(pid)
    wait_gone(pid)


def test_prune_keeps_whole_rounds_and_rollback_uses_the_newest_kept(daemon, root):
    """`snapshotd prune --job` keeps or removes whole rounds: with the newest
    round made incomplete (one member lost), --keep-last 1 keeps both members
    of the newest complete round (per tree it would keep one tree's newest
    and the other's previous: no complete round left), and rollback restores
    both trees from it."""
    from snapshotd.storage import rounds as roundstore
    from snapshotd.storage.store import Store

    a, b = os.path.join(root, "a"), os.path.join(root, "b")
    pa, pb = start_counter(a), start_counter(b)
    for p, n in ((pa, "left"), (pb, "right")):
        daemon.ok("register", str(p), "--every", "1h", "--job", "PR", "--name", n)
    rounds = [daemon.ok("snapshot-now", "--job", "PR") for _ in range(4)]
    st = Store(daemon.store)
    lost = next(s["snapshot"] for s in rounds[-1]["snapshots"] if s["pid"] == pb)
    os.unlink(st.snapshot_path(lost))  # the newest round is no longer complete

    line = daemon.fails("prune", "--keep-last", "1", "--tree", str(pa))
    assert "--job PR" in line, line
    out = daemon.ok("prune", "--job", "PR", "--keep-last", "1")
    assert out["removed_rounds"] == [f"PR/{r['round']}" for r in rounds[:2]], out
    assert set(out["removed"]) == {s["snapshot"] for r in rounds[:2] for s in r["snapshots"]}
    kept_round = {s["snapshot"] for s in rounds[2]["snapshots"]}
    assert kept_round <= set(out["kept"]) and kept_round <= set(st.ids())
    assert [r.id for r in roundstore.rounds(st, "PR")] == [r["round"] for r in rounds[2:]]
    for sid in st.ids():
        with st.open(sid) as rd:
            assert not rd.verify(), sid
    assert st.gc(dry_run=True)["removed_packs"] == []  # prune collected the packs only they used

    time.sleep(0.3)
    before = (len(read_log(a)), len(read_log(b)))
    rb = daemon.ok("rollback", "PR")
    assert rb["round"] == rounds[2]["round"], rb
    assert {x["snapshot"] for x in rb["restored"]} == kept_round
    for work, n_before in zip((a, b), before):
        wait_for(lambda: len(read_log(work)) > n_before + 5, 10, "the restored counters to count")
        assert consecutive(read_log(work)), f"{work}/log is not 1..n after the rollback"
    daemon.ok("unregister", "--job", "PR")


def test_compaction_and_retention_on_their_own_schedule_free_the_old_packs(root):
    """With --keep, compaction (every 1 s here, once a chain is 3 deep) copies
    the newest round into fresh packs and the next rounds build on the copy;
    retention then drops the older rounds and gc frees every pack of the
    first full snapshot, which without compaction the unchanged pages (the
    counter's 1 MiB buffer) would keep alive for ever. What is kept verifies
    and rolls back."""
    from snapshotd.storage.store import Store

    d = Daemon(root)
    d.start(args=("--compact-every", "1s", "--compact-depth", "3"))
    try:
        work = os.path.join(root, "a")
        pid = start_counter(work)
        d.ok("register", str(pid), "--every", "1s", "--keep", "2", "--job", "CMP")
        st = Store(d.store)
        first = wait_for(lambda: d.tree(pid)["last_snapshot"], 10, "the first round", interval=0.02)
        with st.open(first) as r:
            first_packs = set(r.pack_names)
        assert first_packs
        up = wait_for(lambda: (lambda u: u if u["compaction"]["compacted_rounds"] >= 1 else None)(
            d.ok("status")["upkeep"]), 30, "a compaction")
        assert up["compaction"]["last_compacted"].startswith("CMP/") and "deep" in up["compaction"]["last_reason"]
        wait_for(lambda: not first_packs & set(os.listdir(st.packdir)), 30, "the first snapshot's packs to be freed")
        up = d.ok("status")["upkeep"]
        assert up["retention"]["removed_packs"] >= len(first_packs) and up["retention"]["removed_snapshots"] > 0
        assert up["compaction"]["last_error"] == "" and up["retention"]["last_error"] == "", up
        assert d.p.poll() is None

        # some snapshot kept is a compacted copy or builds on one; everything kept verifies
        attrs = [a for a in st.list() if a.get("job") == "CMP"]
        assert any(a.get("compacted_from") for a in attrs) or all(a["chain_depth"] < 5 for a in attrs), attrs
        for sid in st.ids():
            with st.open(sid) as r:
                assert not r.verify(), sid
        time.sleep(0.3)
        n = len(read_log(work))
        rb = d.ok("rollback", "CMP")
        assert [x["pid"] for x in rb["restored"]] == [pid]
        wait_for(lambda: len(read_log(work)) > n + 5, 10, "the restored counter to count")
        assert consecutive(read_log(work)) and not os.path.exists(os.path.join(work, "FAIL"))
        d.ok("unregister", "--job", "CMP")
    finally:
        d.close()
        print(d.log_text()[-6000:])  # shown if the test fails


def test_compaction_on_a_full_disk_fails_and_is_shown_not_the_daemon(root, small_store):
    """A compaction that would not fit is refused before HDF5 writes (a
    copy needs about the packs it reads), logged and shown by `status`;
    rounds go on; with room again the next pass compacts."""
    subprocess.run(["mount", "-o", "remount,size=4m", small_store], check=True)
    d = Daemon(root)
    d.store = os.path.join(small_store, "store")
    d.start(args=("--compact-every", "1s", "--compact-depth", "2"))
    filler = os.path.join(small_store, "filler")
    try:
        work = os.path.join(root, "a")
        pid = start_counter(work)
        d.ok("register", str(pid), "--every", "1h", "--keep", "3", "--job", "FULL")
        for _ in range(2):
            d.ok("snapshot-now", "--job", "FULL")
        incr = d.tree(pid)["last_bytes"]
        sv = os.statvfs(small_store)
        # leave room for a round (margin 256 KiB + 1.25 x the last one) and a little, not
        # for a compacted copy (margin + the ~140 KiB pack of the first, full, round)
        room = (256 << 10) + incr * 5 // 4 + (24 << 10)
        with open(filler, "wb") as f:
            f.write(b"\xff" * max(0, sv.f_bavail * sv.f_frsize - room))
        d.ok("snapshot-now", "--job", "FULL")  # chain depth 2: due for compaction
        up = wait_for(lambda: (lambda u: u if u["compaction"]["last_error"] else None)(d.ok("status")["upkeep"]),
                      20, "a refused compaction")
        assert "space" in up["compaction"]["last_error"].lower(), up
        assert up["compaction"]["failures"] >= 1 and up["compaction"]["compacted_rounds"] == 0
        assert d.p.poll() is None
        assert not glob.glob(os.path.join(d.store, "snapshots", ".*")) + glob.glob(os.path.join(d.store, "packs", ".*"))
        os.unlink(filler)
        up = wait_for(lambda: (lambda u: u if u["compaction"]["compacted_rounds"] >= 1 and not
                               u["compaction"]["last_error"] else None)(d.ok("status")["upkeep"]),
                      20, "a compaction with room again")
        assert d.p.poll() is None and "Segmentation" not in d.log_text()
        assert all(r["complete"] for r in d.snapshots("FULL"))
        d.ok("snapshot-now", "--job", "FULL")  # the next round builds on the copy
        d.ok("unregister", "--job", "FULL")
    finally:
        d.close()
        print(d.log_text()[-6000:])


def _on_a_tty(argv: list[str], env: dict) -> tuple[int, str, str]:
    """Run argv with stderr on a pseudo-terminal (stdout a pipe): (rc, stdout, what the terminal got)."""
    import pty

    master, slave = pty.openpty()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, cwd=str(REPO_DIR),
                         env={**os.environ, **env})
    os.close(slave)
    chunks = []

    def drain():
        while True:
            try:
                b = os.read(master, 4096)
            except OSError:  # EIO: the other side is closed
                return
            if not b:
                return
            chunks.append(b)
    t = threading.Thread(target=drain, daemon=True)
    t.start()
    out = p.communicate(timeout=120)[0]
    t.join(10)
    os.close(master)
    return p.returncode, out.decode(), b"".join(chunks).decode(errors="replace")


def test_rollback_draws_a_progress_bar_on_a_terminal_and_never_with_json(daemon, root):
    """The daemon restores; the client on a terminal draws one bar for the
    whole job from the daemon's progress reports; with --json, none."""
    work = os.path.join(root, "big")
    pid = start_counter(work, period_ms=50, big_mb=48)
    daemon.ok("register", str(pid), "--every", "1h", "--job", "BAR")
    daemon.ok("snapshot-now", "--job", "BAR")
    base = [sys.executable, "-m", "snapshotd", "--store", daemon.store, "--socket", daemon.sock]
    env = {"SNAPSHOTD_PROGRESS_MIN_BYTES": str(16 << 20)}  # (256 MiB by default)
    rc, out, tty = _on_a_tty(base + ["rollback", "BAR"], env)
    assert rc == 0 and "rolled back" in out, (out, tty)
    assert "rollback BAR [" in tty and "100%" in tty and "MiB" in tty, repr(tty)
    assert "rollback BAR [" not in out  # the bar is on the terminal (stderr), never on stdout
    n = len(read_log(work))
    wait_for(lambda: len(read_log(work)) > n + 3, 10, "the restored counter to count")

    rc, out, tty = _on_a_tty(base + ["snapshot-now", "--job", "BAR"], env)  # a round: long work too
    assert rc == 0 and "snapshot-now BAR [" in tty and "100%" in tty, (out, repr(tty))

    rc, out, tty = _on_a_tty(base + ["--json", "rollback", "BAR"], env)
    assert rc == 0 and json_ok(out)["job"] == "BAR", (out, tty)
    assert "[" not in tty and "%" not in tty, repr(tty)
    wait_for(lambda: len(read_log(work)) > n + 6, 10, "the restored counter to count")
    assert consecutive(read_log(work)) and not os.path.exists(os.path.join(work, "FAIL"))
    daemon.ok("unregister", "--job", "BAR")


def json_ok(text: str) -> dict:
    import json

    return json.loads(text)


def test_a_rolled_back_file_keeps_its_modification_time_of_the_round(daemon, root):
    """The file cut back to its size at the round also gets that round's
    modification time back (build tools and HDF5 readers look at it)."""
    work = os.path.join(root, "w")
    os.makedirs(work)
    log, stop = os.path.join(work, "log"), os.path.join(work, "stop")
    code = ("import os, sys, time\n"
            "f = open(sys.argv[1], 'a')\n"
            "open(sys.argv[1] + '.ready', 'w').write(str(os.getpid()))\n"
            "while not os.path.exists(sys.argv[2]):\n"
            "    f.write('x' * 100); f.flush(); time.sleep(0.3)\n"
            "while True: time.sleep(1)\n")
    # detached (setsid -f): init reaps it when the rollback kills it, and its PID is free again
    subprocess.run(["setsid", "-f", sys.executable, "-c", code, log, stop], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    pid = int(wait_for(lambda: os.path.exists(log + ".ready") and open(log + ".ready").read(), 10, "the writer"))
    STARTED_PIDS.add(pid)
    time.sleep(0.4)
    daemon.ok("register", str(pid), "--every", "1h", "--job", "mt")
    now = daemon.ok("snapshot-now", "--job", "mt")
    size_round = os.path.getsize(log)
    time.sleep(1.0)  # it writes on: the file grows, its mtime moves
    open(stop, "w").close()
    time.sleep(0.5)
    assert os.path.getsize(log) > size_round
    rb = daemon.ok("rollback", "mt", "--to", now["round"])
    assert [c["path"] for c in rb["cut"]] == [log]
    time.sleep(0.5)  # the restored writer sees the stop file and writes no more
    sid = now["snapshots"][0]["snapshot"]
    img = daemon.ok("show", sid, "--full")["image"]
    mt = next(f["mtime_ns"] for pr in img["processes"] for f in pr["files"] if f["path"] == log)
    assert os.path.getsize(log) == rb["cut"][0]["to"]
    assert os.stat(log).st_mtime_ns == mt, "the cut file has the mtime of the rollback, not of the round"
    kill_pid(pid)
    wait_gone(pid)
