"""Security of the daemon (issue 14): each attack found by probing a daemon as
an ordinary user, replayed against a real daemon, a real second user and real
processes, and shown refused.  The outcome checked is the one that matters:
no process of another uid is seen, restored, killed or unregistered, and no
process comes back with privileges its user lacks."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess

import h5py
import pytest

from daemon_harness import counter_binary, kill_pid, start_counter, start_time, wait_for, wait_gone
from zdtm_harness import STARTED_PIDS


def uids_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/status") as f:
        return [int(x) for x in next(ln for ln in f if ln.startswith("Uid:")).split()[1:]]


def refused(daemon, user, op, **args) -> str:
    ok, err = daemon.as_user(user, op, **args)
    assert not ok, (op, args, err)
    return err


def test_a_job_name_reused_by_another_user_never_reaches_the_first_owners_rounds(daemon, root, other_user):
    # root's job "shared": a round, then unregistered; its process runs on
    mine = start_counter(os.path.join(root, "root"))
    daemon.ok("register", str(mine), "--every", "1h", "--job", "shared")
    daemon.ok("snapshot-now", "--job", "shared")
    daemon.ok("unregister", "--job", "shared")

    # the user takes the name: accepted, but it is the user's own job "shared"
    theirs = start_counter(os.path.join(root, "user"), user=other_user)
    ok, reg = daemon.as_user(other_user, "register", pid=theirs, every="1h", job="shared")
    assert ok and reg["job"] == "shared", reg
    ok, rows = daemon.as_user(other_user, "snapshots", job="shared")
    assert ok and rows == [], rows  # root's round is not theirs to see
    ok, rows = daemon.as_user(other_user, "snapshots")
    assert ok and rows == [], rows
    err = refused(daemon, other_user, "rollback", job="shared")
    assert "no complete round" in err, err
    err = refused(daemon, other_user, "rollback", job="shared", to=daemon.snapshots("shared")[0]["round"])
    assert "no round" in err, err
    # nor through the qualified name of root's job or of the user's
    refused(daemon, other_user, "rollback", job="0:shared")
    assert "permission denied" in refused(daemon, other_user, "snapshots", job="1:shared")
    # root's process was neither killed nor restored as root for them
    assert start_time(mine) is not None and uids_of(mine) == [0] * 4
    assert uids_of(theirs)[0] == pwd.getpwnam(other_user).pw_uid

    # the user's own rounds of "shared" are theirs, and root's stay root's
    ok, now = daemon.as_user(other_user, "snapshot-now", job="shared")
    assert ok, now
    ok, rows = daemon.as_user(other_user, "snapshots", job="shared")
    assert ok and {r["pid"] for r in rows} == {theirs}, rows
    root_rows = daemon.snapshots("shared")
    assert {r["pid"] for r in root_rows} == {mine}, root_rows  # root's plain name: its own job
    uid = pwd.getpwnam(other_user).pw_uid
    assert {r["pid"] for r in daemon.snapshots(f"{uid}:shared")} == {theirs}
    ok, rb = daemon.as_user(other_user, "rollback", job="shared")
    assert ok and [x["pid"] for x in rb["restored"]] == [theirs], rb
    assert uids_of(theirs) == [uid] * 4
    assert start_time(mine) is not None, "the user's rollback killed root's process"
    kill_pid(mine)
    kill_pid(theirs)


def _start_at_pid(want: int, argv: list[str], user: str) -> subprocess.Popen | None:
    """Start argv as user with PID want (ns_last_pid); None if another
    process took the PID first."""
    pw = pwd.getpwnam(user)

    def drop():
        os.setsid()
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)

    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(want - 1))
    p = subprocess.Popen(argv, preexec_fn=drop, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    STARTED_PIDS.add(p.pid)
    if p.pid == want:
        return p
    p.kill()
    p.wait()
    return None


def test_a_reused_pid_never_gives_a_user_roots_job(daemon, root, other_user):
    mine = start_counter(os.path.join(root, "root"))
    daemon.ok("register", str(mine), "--every", "1h")  # job pid-MINE
    daemon.ok("snapshot-now", str(mine))
    kill_pid(mine)
    wait_gone(mine)

    work = os.path.join(root, "user")
    os.makedirs(work)
    shutil.chown(work, other_user)
    theirs = None
    for _ in range(50):
        theirs = _start_at_pid(mine, [counter_binary(), work, "20", "0"], other_user)
        if theirs:
            break
    if theirs is None:
        pytest.skip(f"could not get PID {mine} for the user's process")
    wait_for(lambda: os.path.exists(os.path.join(work, "ready")), 20, "the user's counter")
    uid = pwd.getpwnam(other_user).pw_uid
    try:
        ok, reg = daemon.as_user(other_user, "register", pid=mine, every="1h", job="mine")
        assert ok, reg
        # root's registration of that PID is still there, untouched
        root_jobs = {(t["job"], t.get("owner_uid", t["uid"])) for t in daemon.ok("status")["trees"]
                     if t["pid"] == mine}
        assert (f"pid-{mine}", 0) in root_jobs, root_jobs
        ok, st = daemon.as_user(other_user, "status")
        assert ok and {t["job"] for t in st["trees"]} == {"mine"}, st
        ok, _ = daemon.as_user(other_user, "unregister", pid=mine)
        assert ok
        assert any(t["uid"] == 0 for t in daemon.ok("status")["trees"] if t["pid"] == mine), \
            "the user's unregister removed root's registration"
        ok, reg = daemon.as_user(other_user, "register", pid=mine, every="1h")
        assert ok and reg["job"] == f"pid-{mine}", reg
        ok, rows = daemon.as_user(other_user, "snapshots", job=f"pid-{mine}")
        assert ok and rows == [], rows
        err = refused(daemon, other_user, "rollback", job=f"pid-{mine}")
        assert "no complete round" in err, err
        assert uids_of(mine) == [uid] * 4 and theirs.poll() is None  # still the user's counter, alive
        assert [r["pid"] for r in daemon.snapshots(f"pid-{mine}")] == [mine]  # root's round kept
    finally:
        theirs.kill()
        theirs.wait()


def _build_setuid_sleeper(d: str) -> str:
    """A set-uid-root program that only sleeps (as passwd waiting on input)."""
    src, out = os.path.join(d, "suid.c"), os.path.join(d, "suid")
    with open(src, "w") as f:
        f.write("#include <unistd.h>\nint main(void){ for(;;) pause(); }\n")
    subprocess.run(["gcc", "-O1", "-o", out, src], check=True)
    os.chown(out, 0, 0)
    os.chmod(out, 0o4755)
    return out


def _user_shell(work: str, user: str, script: str) -> int:
    """A user's shell running script (detached); returns its PID."""
    os.makedirs(work, exist_ok=True)
    shutil.chown(work, user)
    subprocess.run(["runuser", "-u", user, "--", "setsid", "-f", "sh", "-c", f"echo $$ > {work}/pid; {script}"],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pidfile = os.path.join(work, "pid")
    wait_for(lambda: os.path.exists(pidfile) and open(pidfile).read().strip(), 20, "the user's shell")
    pid = int(open(pidfile).read())
    STARTED_PIDS.add(pid)
    return pid


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in open(f"/proc/{p}/task/{t}/children").read().split()]
        except OSError:
            pass
    return out


def test_a_tree_with_a_setuid_child_is_never_snapshotted_for_its_user(daemon, root, other_user):
    suid = _build_setuid_sleeper(root)
    # a setuid child under the user's shell (like `sleep 1e5 | passwd`): refused at register
    sh1 = _user_shell(os.path.join(root, "u1"), other_user, f"{suid} & wait")
    wait_for(lambda: len(_descendants(sh1)) == 2, 10, "the setuid child")
    for p in _descendants(sh1):
        STARTED_PIDS.add(p)
    child = _descendants(sh1)[1]
    assert uids_of(child)[1] == 0  # Uid: user 0 0 0
    err = refused(daemon, other_user, "register", pid=sh1, every="1h")
    assert "privileges" in err and str(child) in err, err
    # nor may root register it on the user's behalf (the job would be the user's)
    assert "privileges" in daemon.fails("register", str(sh1), "--every", "1h")

    # a tree that gains a setuid child after its registration: the round that finds it
    # fails, the tree is retired, and no snapshot of it is committed
    work = os.path.join(root, "u2")
    sh2 = _user_shell(work, other_user, f"while [ ! -e {work}/go ]; do sleep 0.05; done; {suid} & wait")
    ok, reg = daemon.as_user(other_user, "register", pid=sh2, every="1h", job="later")
    assert ok, reg
    ok, now = daemon.as_user(other_user, "snapshot-now", job="later")
    assert ok, now
    open(os.path.join(work, "go"), "w").close()
    wait_for(lambda: len(_descendants(sh2)) >= 2 and uids_of(_descendants(sh2)[-1])[1] == 0, 10,
             "the setuid child of the registered shell")
    for p in _descendants(sh2):
        STARTED_PIDS.add(p)
    err = refused(daemon, other_user, "snapshot-now", job="later")
    assert "privileges" in err, err
    ok, st = daemon.as_user(other_user, "status")
    t = next(t for t in st["trees"] if t["pid"] == sh2)
    assert t["state"] == "retired" and "privileges" in t["reason"], t
    ok, rows = daemon.as_user(other_user, "snapshots", job="later")
    assert ok and len(rows) == 1, rows  # only the round taken before the child appeared


def _forge_image(store: str, sid: str, edit) -> None:
    """Edit a snapshot's image and recompute its hash, as someone who can
    write the store could (docs/SECURITY.md: verify proves accidents, not
    forgery)."""
    import hashlib

    path = os.path.join(store, "snapshots", sid + ".h5")
    with h5py.File(path, "r+") as h5:
        img = json.loads(h5["image"][()])
        edit(img)
        raw = json.dumps(img, separators=(",", ":"))
        del h5["image"]
        h5.create_dataset("image", data=raw, dtype=h5py.string_dtype())
        h5.attrs["image_sha256"] = hashlib.sha256(raw.encode()).hexdigest()


@pytest.mark.parametrize("forgery", ["euid0", "caps", "group0", "realtime"])
def test_a_forged_image_never_restores_with_more_than_its_owner_has(daemon, root, other_user, forgery):
    theirs = start_counter(os.path.join(root, "user"), user=other_user)
    ok, _ = daemon.as_user(other_user, "register", pid=theirs, every="1h", job="j")
    assert ok
    ok, now = daemon.as_user(other_user, "snapshot-now", job="j")
    assert ok, now
    sid = now["snapshots"][0]["snapshot"]

    def edit(img):
        c = img["processes"][0]["creds"]
        if forgery == "euid0":
            c["uid"] = [c["uid"][0], 0, 0, 0]
        elif forgery == "caps":
            c["caps"]["CapPrm"] = c["caps"]["CapEff"] = "000001fffeffffff"
        elif forgery == "realtime":  # SCHED_FIFO: only root may give it
            img["processes"][0]["threads"][0]["sched"].update(policy=1, priority=50)
        else:
            c["groups"] = [0]
    _forge_image(daemon.store, sid, edit)
    err = refused(daemon, other_user, "rollback", job="j")
    assert "privileges" in err, err
    assert start_time(theirs) is not None, "refused, yet the job was killed"
    kill_pid(theirs)
    wait_gone(theirs)


def test_restore_keeps_no_new_privs_and_a_reduced_bounding_set(root):
    """A process that gave privileges up (no-new-privs, capabilities dropped
    from its bounding set) does not get them back from a restore."""
    from zdtm_harness import REPO_DIR
    import sys

    store = os.path.join(root, "store")
    work = os.path.join(root, "w")
    os.makedirs(work)
    # setpriv: no_new_privs + drop cap_net_raw from the bounding set, then the counter
    p = subprocess.Popen(["setpriv", "--no-new-privs", "--bounding-set", "-net_raw", counter_binary(), work, "20"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    STARTED_PIDS.add(p.pid)
    wait_for(lambda: os.path.exists(os.path.join(work, "ready")), 20, "the counter")

    def caps(pid):
        with open(f"/proc/{pid}/status") as f:
            st = dict(ln.split(":", 1) for ln in f if ":" in ln)
        return st["NoNewPrivs"].strip(), st["CapBnd"].strip()

    before = caps(p.pid)
    assert before[0] == "1"
    cli = [sys.executable, "-m", "snapshotd", "--store", store]
    res = subprocess.run(cli + ["dump", str(p.pid), "--kill"], capture_output=True, text=True, cwd=str(REPO_DIR))
    assert res.returncode == 0, res.stderr
    p.wait()
    sid = res.stdout.split()[-1]
    res = subprocess.run(cli + ["restore", sid], capture_output=True, text=True, cwd=str(REPO_DIR))
    assert res.returncode == 0, res.stderr
    try:
        assert caps(p.pid) == before
    finally:
        kill_pid(p.pid)
        wait_gone(p.pid)


def test_the_daemon_refuses_a_store_others_can_write(root):
    """Images are trusted by restore (docs/SECURITY.md): a store another user
    could write is refused at start, with one clear line."""
    import sys
    from zdtm_harness import REPO_DIR

    store = os.path.join(root, "store")
    os.makedirs(os.path.join(store, "snapshots"))
    os.chmod(os.path.join(store, "snapshots"), 0o777)
    res = subprocess.run([sys.executable, "-m", "snapshotd", "--store", store, "daemon", "--socket",
                          os.path.join(root, "s.sock")], capture_output=True, text=True, timeout=60, cwd=str(REPO_DIR))
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0 and len(lines) == 1 and "writable by root only" in lines[0], res.stderr
    assert not os.path.exists(os.path.join(root, "s.sock"))
