"""ZDTM tests of fd kinds beyond files: event descriptors, unix sockets,
shared memory; and the refusal of fds snapshotd cannot restore exactly."""

import os

import pytest

import zdtm_harness
from zdtm_harness import READY_TIMEOUT, RESULT_TIMEOUT, Program, assert_cli_fails, dump, run_zdtm

IPC_PROGRAMS = [
    "ipc_eventfd",        # counters, EFD_SEMAPHORE, O_NONBLOCK, 64-bit value
    "ipc_timerfd",        # armed timers fire with the same interval; unread ticks
    "ipc_signalfd",       # mask kept; signals read after restore
    "ipc_epoll",          # watched set with data/ET, DEL by fd number
    "ipc_inotify",        # watches with their wd numbers fire after restore
    "ipc_unix_pair",      # stream/dgram/seqpacket pairs, queues both ways, shutdown, closed peer
    "ipc_unix_named",     # listeners (path, relative, abstract), accepted pair, bound dgram
    "ipc_tcp_listen",     # TCP listeners (v4, v6) and a bound socket; port in TIME_WAIT
    "ipc_tcp_server_timewait",  # a server without SO_REUSEADDR: its port in TIME_WAIT at restore
    "ipc_tcp_options",    # keepalive tuning, linger, user timeout, priority, fixed buffers, cork, device
    "ipc_tcp_loopback_v6",  # loopback connections over IPv6 and v4-mapped on a dual-stack listener
    "ipc_tcp_established",  # loopback connection via TCP_REPAIR, queued data both ways
]

# run by the tests below, not by run_zdtm
OTHER_PROGRAMS = ["ipc_unsupported", "ipc_shm"]


@pytest.mark.parametrize("name", IPC_PROGRAMS)
def test_ipc(name, tmp_path, store):
    run_zdtm(name, tmp_path, store)


def _start(name, tmp_path):
    statedir = tmp_path / name
    statedir.mkdir()
    prog = Program(name, statedir)
    prog.start()
    prog.wait_file("ready", READY_TIMEOUT)
    return prog


def _finish(prog):
    (prog.statedir / "go").write_text("go\n")
    result = prog.wait_file("result", RESULT_TIMEOUT).read_text().strip()
    assert result == "PASS", prog.report(f"result: {result}")
    prog.wait_exit()


@pytest.mark.parametrize("name", ["ipc_unix_pair", "ipc_tcp_established", "ipc_eventfd"])
def test_dump_leaves_queues_intact(name, tmp_path, store):
    """Dump peeks at socket queues and reads fd state without consuming it
    (and puts TCP sockets in and out of repair mode): the process, left
    running, still finds every queued message and its connections work."""
    prog = _start(name, tmp_path)
    if not zdtm_harness.NO_CR:
        dump(store, prog.pid)
        assert prog.alive()
    _finish(prog)


def test_unsupported_fd_is_refused(tmp_path, store):
    """An fd kind snapshotd cannot restore exactly: the dump fails with one
    line naming the fd and its type, leaves no snapshot, and the process runs
    on unchanged (its self-check passes)."""
    prog = _start("ipc_unsupported", tmp_path)
    if not zdtm_harness.NO_CR:
        line = assert_cli_fails(store, "dump", str(prog.pid))
        assert line == (f"snapshotd: error: PID {prog.pid} fd 20: "
                        f"socket:[{os.stat(f'/proc/{prog.pid}/fd/20').st_ino}] (AF_NETLINK SOCK_RAW) is not supported"), line
        assert not list((store / "snapshots").glob("*.h5")) if (store / "snapshots").exists() else True
        assert prog.alive()
        assert zdtm_harness.proc_state(prog.pid) in ("S", "R")
    _finish(prog)


def _rm_shm(shmid: int) -> None:
    from snapshotd.kernel import libc
    try:
        libc.shm_rmid(shmid)
    except OSError:
        pass


def test_shared_memory_after_reboot(tmp_path, store):
    """POSIX (/dev/shm) and SysV shared memory come back with their contents
    and ids even when they are gone at restore time (as after a reboot): the
    test removes the SysV segment and the /dev/shm file between kill and
    restore."""
    prog = _start("ipc_shm", tmp_path)
    id1, id2 = map(int, (prog.statedir / "shmids").read_text().split())
    try:
        if not zdtm_harness.NO_CR:
            snap = dump(store, prog.pid)
            prog.kill()
            _rm_shm(id1)
            os.unlink(f"/dev/shm/snapshotd-zdtm-{prog.pid}-posix")
            zdtm_harness.restore(store, snap, prog.pid)
            prog.restored = True
        _finish(prog)
    finally:
        _rm_shm(id1)


_CONNECT_AND_WAIT = """
import socket, sys, time
fam, addr = sys.argv[1], sys.argv[2]
if fam == "unix":
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(addr)
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.connect(("127.0.0.1", int(addr)))
import os; os.dup2(s.fileno(), 9)
open(sys.argv[3], "w").write("ready")
time.sleep(60)
"""


@pytest.mark.parametrize("family", ["unix", "tcp"])
def test_peer_outside_the_process_is_refused(family, tmp_path, store):
    """A connected socket whose peer lives outside the dumped process (here:
    in the test) is refused, naming the fd; the process keeps running."""
    import subprocess
    import sys
    import time

    ls, addr = zdtm_harness.listener(family, tmp_path)
    ready = tmp_path / "ready"
    p = subprocess.Popen([sys.executable, "-c", _CONNECT_AND_WAIT, family, addr, str(ready)],
                         stdin=subprocess.DEVNULL, start_new_session=True)
    zdtm_harness.STARTED_PIDS.add(p.pid)
    try:
        peer, _ = ls.accept()
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        if zdtm_harness.NO_CR:
            return
        line = assert_cli_fails(store, "dump", str(p.pid))
        assert line.startswith(f"snapshotd: error: PID {p.pid} fd ") and "outside the process" in line, line
        assert p.poll() is None
        peer.sendall(b"still there")  # the connection was not disturbed
        peer.close()
    finally:
        ls.close()
        p.kill()
        p.wait()


_HOLD_STATE = """
import ctypes, os, socket, sys, time
kind, statedir = sys.argv[1], sys.argv[2]
if kind == "scm_rights":
    a, b = socket.socketpair()
    socket.send_fds(a, [b"with an fd"], [os.open("/dev/null", os.O_RDONLY)])
    keep = (a, b)
elif kind == "inotify_pending":
    libc = ctypes.CDLL(None)
    fd = libc.inotify_init1(0)
    libc.inotify_add_watch(fd, statedir.encode(), 0x100)  # IN_CREATE
    open(os.path.join(statedir, "new"), "w").close()
elif kind == "zero_dgram":
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.send(b"")
open(os.path.join(statedir, "ready"), "w").write("ready")
time.sleep(60)
"""


@pytest.mark.parametrize("kind,words", [
    ("scm_rights", "queued file descriptors"),
    ("inotify_pending", "unread events"),
    ("zero_dgram", "zero-length datagram"),
])
def test_state_that_cannot_be_restored_is_refused(kind, words, tmp_path, store):
    """Fds of a known kind in a state snapshotd cannot restore exactly (a
    queued SCM_RIGHTS message, unread inotify events, a zero-length
    datagram) are refused with one line naming the fd; the process runs on."""
    import subprocess
    import sys
    import time

    p = subprocess.Popen([sys.executable, "-c", _HOLD_STATE, kind, str(tmp_path)],
                         stdin=subprocess.DEVNULL, start_new_session=True)
    zdtm_harness.STARTED_PIDS.add(p.pid)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not (tmp_path / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        if zdtm_harness.NO_CR:
            return
        line = assert_cli_fails(store, "dump", str(p.pid))
        assert line.startswith(f"snapshotd: error: PID {p.pid} fd ") and words in line, line
        assert p.poll() is None
    finally:
        p.kill()
        p.wait()
