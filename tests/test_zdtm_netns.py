"""A TCP connection between two hosts: the dumped program runs in one
network namespace, its peer (tests/progs/tcp_peer.py) in another one joined
by a veth pair, and is never dumped: across dump --kill and restore it must
not notice anything (no reset, the same bytes in order).  See
snapshotd/netns.py for the lock that makes this work without netfilter."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import zdtm_harness
from zdtm_harness import (READY_TIMEOUT, RESULT_TIMEOUT, STARTED_PIDS, TESTS_DIR, Program, assert_cli_fails,
                          program_command, restore, run_cli)

NET_PROGRAMS = ["net_tcp_two_hosts"]
ADDR_A, ADDR_B, PORT = "10.77.0.1", "10.77.0.2", 7077


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture
def two_hosts():
    """Network namespaces A and B joined by a veth pair (A 10.77.0.1, B
    10.77.0.2); removed afterwards (that removes the veth pair too)."""
    if not shutil.which("ip") or not shutil.which("nsenter"):
        pytest.skip("needs iproute2 and nsenter")
    tag = f"{os.getpid() % 100000}"
    a, b = f"snpA{tag}", f"snpB{tag}"
    try:
        ip("netns", "add", a)
        ip("netns", "add", b)
        ip("link", "add", f"snpa{tag}", "type", "veth", "peer", "name", f"snpb{tag}")
        ip("link", "set", f"snpa{tag}", "netns", a)
        ip("link", "set", f"snpb{tag}", "netns", b)
        for ns, dev, addr in ((a, f"snpa{tag}", ADDR_A), (b, f"snpb{tag}", ADDR_B)):
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield a, b
    finally:
        zdtm_harness.kill_started()  # nothing of ours may hold the namespaces
        ip("netns", "del", a, check=False)
        ip("netns", "del", b, check=False)


def _in_ns(ns: str, argv: list[str], statedir: Path) -> subprocess.Popen:
    with open(statedir / "out.log", "ab") as log:
        p = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", *argv], stdin=subprocess.DEVNULL,
                             stdout=log, stderr=log, cwd=str(statedir), start_new_session=True)
    STARTED_PIDS.add(p.pid)
    return p


def _start(tmp_path, hosts, gap: bool):
    a, b = hosts
    statedir = tmp_path / "net_tcp_two_hosts"
    statedir.mkdir()
    (statedir / "peer").write_text(f"{ADDR_B} {PORT}\n")
    if gap:
        (statedir / "expect_gap").write_text("")
    peer = _in_ns(b, [sys.executable, str(TESTS_DIR / "progs" / "tcp_peer.py"), ADDR_B, str(PORT), str(statedir)],
                  statedir)
    prog = Program("net_tcp_two_hosts", statedir)
    _wait(statedir / "peer_listening", peer)
    prog.proc = _in_ns(a, [*program_command("net_tcp_two_hosts"), str(statedir)], statedir)  # nsenter execs: same PID
    prog.pid = prog.proc.pid
    prog.wait_file("ready", READY_TIMEOUT)
    return prog, peer


def _wait(path: Path, proc: subprocess.Popen, timeout: float = READY_TIMEOUT) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None or path.exists(), f"the peer exited before {path.name}: {path.parent / 'out.log'}"
        assert time.monotonic() < end, f"no {path.name} after {timeout} s"
        time.sleep(0.01)


def _finish(prog: Program, peer: subprocess.Popen) -> None:
    (prog.statedir / "go").write_text("go\n")
    result = prog.wait_file("result", RESULT_TIMEOUT).read_text().strip()
    assert result == "PASS", prog.report(f"result: {result}")
    _wait(prog.statedir / "peer_result", peer, RESULT_TIMEOUT)
    got = (prog.statedir / "peer_result").read_text().strip()
    assert got == "PASS", prog.report(f"the peer saw: {got}")
    prog.wait_exit()
    peer.wait(timeout=10)


def _blackholes(ns: str) -> str:
    """The lock of snapshotd/netns.py in namespace ns: its rule and routes."""
    from snapshotd.kernel.netns import LOCK_TABLE
    rules = [r for r in ip("-n", ns, "rule").stdout.splitlines() if str(LOCK_TABLE) in r or hex(LOCK_TABLE) in r]
    routes = ip("-n", ns, "route", "show", "table", str(LOCK_TABLE), check=False).stdout
    return "\n".join(rules) + routes


def _ns_inode(path: str) -> int:
    return os.stat(path).st_ino


def test_tcp_peer_on_another_host(two_hosts, tmp_path, store):
    """dump --kill, the peer sends meanwhile, restore: the program is back in
    its namespace, reads everything the peer sent (before and during its
    absence), and 1 MB goes each way; the peer saw no reset."""
    a, _b = two_hosts
    prog, peer = _start(tmp_path, two_hosts, gap=True)
    if not zdtm_harness.NO_CR:
        res = run_cli(store, "dump", "--kill", str(prog.pid))
        assert res.returncode == 0, res.stderr
        snap = res.stdout.strip().splitlines()[-1]
        prog.proc.wait(timeout=10)
        assert ADDR_B in _blackholes(a), "no lock towards the peer while the program is away"
        (prog.statedir / "gap_go").write_text("")
        _wait(prog.statedir / "gap", peer)  # the peer sent 4096 bytes to nobody
        assert peer.poll() is None, prog.report("the peer gave up while the program was away")
        restore(store, snap, prog.pid)
        prog.restored = True
        assert _ns_inode(f"/proc/{prog.pid}/ns/net") == _ns_inode(f"/run/netns/{a}"), "restored in another netns"
        assert _blackholes(a).strip() == "", "the lock outlived the restore"
    else:
        (prog.statedir / "gap_go").write_text("")
        _wait(prog.statedir / "gap", peer)
    _finish(prog, peer)


def test_dump_without_kill_leaves_the_connection_working(two_hosts, tmp_path, store):
    """A plain dump reads the connection (repair mode in and out, no
    window probe) and locks nothing: both sides go on as if nothing
    happened."""
    a, _b = two_hosts
    prog, peer = _start(tmp_path, two_hosts, gap=False)
    if not zdtm_harness.NO_CR:
        res = run_cli(store, "dump", str(prog.pid))
        assert res.returncode == 0, res.stderr
        assert prog.alive()
        assert _blackholes(a).strip() == ""
    _finish(prog, peer)


def test_restore_refused_when_the_namespace_is_gone(two_hosts, tmp_path, store):
    """The tree's namespace was deleted after the dump: restore says so in
    one line and creates nothing."""
    a, _b = two_hosts
    if zdtm_harness.NO_CR:
        pytest.skip("needs a dump")
    prog, peer = _start(tmp_path, two_hosts, gap=False)
    res = run_cli(store, "dump", "--kill", str(prog.pid))
    assert res.returncode == 0, res.stderr
    snap = res.stdout.strip().splitlines()[-1]
    prog.proc.wait(timeout=10)
    ip("netns", "del", a)
    line = assert_cli_fails(store, "restore", snap)
    assert line.startswith(f"snapshotd: error: cannot restore: the network namespace {a} (net:[")
    assert line.endswith("]) the tree was dumped in no longer exists"), line
    assert not os.path.exists(f"/proc/{prog.pid}")


def test_tree_across_namespaces_is_refused(tmp_path, store):
    """A child in a network namespace of its own (unshare -n): the dump
    refuses in one line naming both, and the tree runs on."""
    if not shutil.which("unshare"):
        pytest.skip("needs unshare")
    top = subprocess.Popen(["sh", "-c", "unshare -n sleep 60 & exec sleep 60"], stdin=subprocess.DEVNULL,
                           start_new_session=True)
    STARTED_PIDS.add(top.pid)
    end = time.monotonic() + 10
    while True:  # the child, once unshare has exec'd sleep in its namespace
        kids = Path(f"/proc/{top.pid}/task/{top.pid}/children").read_text().split()
        if kids and os.readlink(f"/proc/{kids[0]}/exe").endswith("sleep") and \
                _ns_inode(f"/proc/{kids[0]}/ns/net") != _ns_inode(f"/proc/{top.pid}/ns/net"):
            break
        assert time.monotonic() < end, "the child never reached its namespace"
        time.sleep(0.01)
    child = int(kids[0])
    STARTED_PIDS.add(child)
    if zdtm_harness.NO_CR:
        return
    line = assert_cli_fails(store, "dump", "--kill", str(top.pid))
    assert line == (f"snapshotd: error: PID {child} is in network namespace net:[{_ns_inode(f'/proc/{child}/ns/net')}], "
                    f"PID {top.pid} in net:[{_ns_inode(f'/proc/{top.pid}/ns/net')}]: a tree spanning several network "
                    "namespaces is not supported"), line
    assert top.poll() is None and zdtm_harness.proc_state(child) in ("S", "R")
