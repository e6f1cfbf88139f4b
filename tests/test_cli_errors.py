"""Bad input to the snapshotd CLI: every case must exit non-zero with one
clear line on stderr, and a failed dump must leave its target running."""

import os
import subprocess
import sys
import time

import pytest

from zdtm_harness import STARTED_PIDS, assert_cli_fails, proc_state


def tracer_pid(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    return None


def assert_untouched(pid):
    """The process is still alive, not stopped, not traced."""
    state = proc_state(pid)
    assert state is not None and state not in "ZXTt", f"PID {pid} state {state}"
    assert tracer_pid(pid) == 0, f"PID {pid} is still traced by {tracer_pid(pid)}"


@pytest.fixture
def heartbeat(tmp_path):
    """A running target that rewrites a heartbeat file every 10 ms."""
    beat = tmp_path / "heartbeat"
    code = ("import os, sys, time\n"
            "while True:\n"
            "    with open(sys.argv[1] + '.tmp', 'w') as f:\n"
            "        f.write(repr(time.monotonic()))\n"
            "    os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
            "    time.sleep(0.01)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(beat)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    STARTED_PIDS.add(proc.pid)
    deadline = time.monotonic() + 10
    while not beat.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "heartbeat did not start"
        time.sleep(0.01)
    proc.beat = beat
    yield proc


def assert_beating(proc):
    """The heartbeat file changes again within a few seconds."""
    assert_untouched(proc.pid)
    first = proc.beat.read_text()
    deadline = time.monotonic() + 5
    while proc.beat.read_text() == first:
        assert time.monotonic() < deadline, f"PID {proc.pid} stopped working"
        time.sleep(0.01)


def unused_pid():
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    for pid in range(pid_max - 1, 300, -1):
        if not os.path.exists(f"/proc/{pid}"):
            return pid
    pytest.skip("no free PID found")


def test_dump_nonexistent_pid(store):
    assert_cli_fails(store, "dump", str(unused_pid()))


def test_dump_kernel_thread(store):
    with open("/proc/2/comm") as f:
        if f.read().strip() != "kthreadd":
            pytest.skip("PID 2 is not kthreadd here")
    assert_cli_fails(store, "dump", "2")
    assert proc_state(2) not in (None, "T", "t")


def test_dump_zombie(store):
    proc = subprocess.Popen(["true"], stdin=subprocess.DEVNULL)
    STARTED_PIDS.add(proc.pid)
    deadline = time.monotonic() + 10
    while proc_state(proc.pid) != "Z":
        assert time.monotonic() < deadline, "child did not become a zombie"
        time.sleep(0.01)
    assert_cli_fails(store, "dump", str(proc.pid))
    assert proc_state(proc.pid) == "Z", "the zombie changed state"
    assert proc.wait(timeout=10) == 0


def test_dump_own_ancestor(store):
    """pytest is the CLI's parent: dumping it must be refused."""
    assert_cli_fails(store, "dump", str(os.getpid()))
    assert tracer_pid(os.getpid()) == 0


@pytest.mark.parametrize("snap", ["0123456789abcdef", "no-such-snapshot", "../outside"])
def test_restore_unknown_snapshot(store, snap):
    assert_cli_fails(store, "restore", snap)


def test_dump_into_unwritable_store(tmp_path, heartbeat):
    blocker = tmp_path / "regular-file"
    blocker.write_text("not a directory\n")
    assert_cli_fails(blocker / "store", "dump", str(heartbeat.pid))
    assert_beating(heartbeat)


def test_restore_from_missing_store(tmp_path):
    assert_cli_fails(tmp_path / "no-such-store", "restore", "0123456789abcdef")
