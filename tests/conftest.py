"""pytest configuration for the snapshotd test suite.

Options:
  --no-cr   run the zdtm programs through the ready/go/result protocol only,
            without dump/kill/restore (checks the test programs themselves).
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import zdtm_harness  # noqa: E402


def pytest_addoption(parser):
    parser.addoption(
        "--no-cr", action="store_true", default=False,
        help="zdtm tests: skip dump/kill/restore and only run each program's "
             "ready/go/result protocol (validates the test programs)")


def pytest_configure(config):
    zdtm_harness.NO_CR = config.getoption("--no-cr")


def pytest_unconfigure(config):
    zdtm_harness.cleanup_build_dir()
    import daemon_harness

    daemon_harness.cleanup_counter()  # built once per session, for the daemon tests


@pytest.fixture(autouse=True)
def _kill_started_processes():
    """Whatever happens, no test leaves a process it started behind."""
    zdtm_harness.STARTED_PIDS.clear()
    yield
    zdtm_harness.kill_started()


@pytest.fixture
def store(tmp_path):
    """A fresh, empty snapshot store for this test."""
    path = tmp_path / "store"
    path.mkdir()
    return path


@pytest.fixture
def no_cr(request):
    return request.config.getoption("--no-cr")


@pytest.fixture
def other_user():
    """A real unix user for the duration of one test (useradd); its processes
    are killed (by PID) and the user removed afterwards."""
    import secrets
    import subprocess
    import time

    from daemon_harness import kill_pid

    name = f"snptest{secrets.token_hex(3)}"
    res = subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], capture_output=True, text=True)
    if res.returncode:
        pytest.skip(f"useradd failed: {res.stderr.strip()}")
    yield name
    uid = int(subprocess.run(["id", "-u", name], capture_output=True, text=True).stdout or -1)
    for d in os.listdir("/proc"):  # userdel refuses while the user has processes: kill them (by PID)
        try:
            if d.isdigit() and os.stat(f"/proc/{d}").st_uid == uid:
                kill_pid(int(d))
        except OSError:
            pass
    time.sleep(0.2)
    subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture
def root():
    """A directory every user can reach (a daemon's socket, programs' output)."""
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="snapshotd-daemon-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemon(root):
    """A real `snapshotd daemon` on a private socket and store under root."""
    from daemon_harness import Daemon

    d = Daemon(root)
    d.start()
    yield d
    d.close()
