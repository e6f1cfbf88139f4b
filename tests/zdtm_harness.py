"""ZDTM-style checkpoint/restore harness for snapshotd.

Every feature is tested by one tiny program in tests/zdtm/ (``name.c`` or
``name.py``) that is run as ``prog STATEDIR`` and follows this protocol:

1. it sets up the state under test and records what it expects;
2. it writes STATEDIR/ready (ready.tmp, then rename);
3. it keeps working, polling every few ms for STATEDIR/go;
4. once go exists it verifies its state and writes STATEDIR/result
   (``PASS`` or ``FAIL: <reason>``, tmp + rename), then exits 0.

Between 2 and 4 the harness dumps the program, SIGKILLs it and restores it
from the snapshot (``cycles`` times).  With ``pytest --no-cr`` the dump/kill/
restore step is skipped, which checks the programs themselves.

Every PID a test starts (original or restored) is recorded in STARTED_PIDS;
the autouse fixture in conftest.py SIGKILLs them all after each test.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
ZDTM_DIR = TESTS_DIR / "zdtm"
REPO_DIR = TESTS_DIR.parent

READY_TIMEOUT = 20.0
RESULT_TIMEOUT = 30.0
GONE_TIMEOUT = 10.0
CLI_TIMEOUT = 120.0

# Set by conftest.pytest_configure from the --no-cr option.
NO_CR = False

# PIDs started (or restored) by the current test; killed by conftest.
STARTED_PIDS: set[int] = set()

_build_dir: Path | None = None
_built: dict[str, Path] = {}


# --------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def cpu_has(flag: str) -> bool:
    """True if /proc/cpuinfo lists the CPU flag (e.g. "avx512f")."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return flag in line.split(":", 1)[1].split()
    except OSError:
        pass
    return False


def _extra_cflags(name: str) -> list[str]:
    """Per-program compiler flags (the vector register test picks its ISA)."""
    if name == "regs_vector":
        if cpu_has("avx512f"):
            return ["-mavx512f"]
        if cpu_has("avx2"):
            return ["-mavx2"]
        return []
    return []


def build_dir() -> Path:
    global _build_dir
    if _build_dir is None:
        _build_dir = Path(tempfile.mkdtemp(prefix="snapshotd-zdtm-build-"))
    return _build_dir


def cleanup_build_dir() -> None:
    global _build_dir
    if _build_dir is not None:
        shutil.rmtree(_build_dir, ignore_errors=True)
        _build_dir = None
    _built.clear()


def program_command(name: str) -> list[str]:
    """argv (without STATEDIR) for the zdtm program ``name``; compiles C once
    per session."""
    py = ZDTM_DIR / f"{name}.py"
    if py.exists():
        return [sys.executable, str(py)]
    src = ZDTM_DIR / f"{name}.c"
    if not src.exists():
        pytest.fail(f"no zdtm program {name!r} in {ZDTM_DIR}")
    if name not in _built:
        out = build_dir() / name
        cmd = ["gcc", "-O1", "-g", "-pthread", "-Wall", "-Wno-format-truncation", f"-I{ZDTM_DIR}",
               *_extra_cflags(name), "-o", str(out), str(src)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            pytest.fail(f"compiling {src.name} failed:\n{' '.join(cmd)}\n"
                        f"{res.stdout}{res.stderr}", pytrace=False)
        _built[name] = out
    return [str(_built[name])]


# --------------------------------------------------------------------------
# CLI helpers
# --------------------------------------------------------------------------

def cli_command(store, *args: str) -> list[str]:
    return [sys.executable, "-m", "snapshotd", "--store", str(store), *args]


def run_cli(store, *args: str, timeout: float = CLI_TIMEOUT):
    """Run ``snapshotd --store STORE args...``; returns CompletedProcess."""
    return subprocess.run(cli_command(store, *args), capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=timeout,
                          cwd=str(REPO_DIR))


def _cli_report(res) -> str:
    return (f"$ {' '.join(res.args)}\nexit status {res.returncode}\n"
            f"--- stdout ---\n{res.stdout}--- stderr ---\n{res.stderr}")


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


@functools.lru_cache(maxsize=None)
def _cli_help():
    res = subprocess.run([sys.executable, "-m", "snapshotd", "--help"],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         timeout=CLI_TIMEOUT, cwd=str(REPO_DIR))
    return res.returncode, _cli_report(res)


def require_cli() -> None:
    """Fail unless ``python -m snapshotd --help`` works: a bad-input test
    must not pass just because the CLI cannot start at all."""
    rc, report = _cli_help()
    if rc != 0:
        pytest.fail(f"the snapshotd CLI does not run:\n{report}", pytrace=False)


def assert_cli_fails(store, *args: str, timeout: float = CLI_TIMEOUT) -> str:
    """Assert that a CLI call exits non-zero with exactly one non-empty line
    on stderr (a clear message, not a traceback).  Returns that line."""
    require_cli()
    res = run_cli(store, *args, timeout=timeout)
    report = _cli_report(res)
    assert res.returncode != 0, f"expected a failure\n{report}"
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr\n{report}"
    assert "Traceback" not in res.stderr, report
    assert len(lines[0].strip()) > 5, f"stderr message too terse\n{report}"
    return lines[0].strip()


def dump(store, pid: int, *args: str) -> str:
    res = run_cli(store, "dump", str(pid), *args)
    assert res.returncode == 0, f"dump of {pid} failed\n{_cli_report(res)}"
    snap = last_line(res.stdout)
    assert snap, f"dump printed no snapshot id\n{_cli_report(res)}"
    return snap


def restore(store, snap: str, pid: int) -> None:
    res = run_cli(store, "restore", snap)
    got = last_line(res.stdout)
    if got.isdigit():
        STARTED_PIDS.add(int(got))
    assert res.returncode == 0, f"restore of {snap} failed\n{_cli_report(res)}"
    assert got == str(pid), (f"restore printed PID {got!r}, expected {pid}\n"
                             f"{_cli_report(res)}")


# --------------------------------------------------------------------------
# process helpers
# --------------------------------------------------------------------------

def proc_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat, or None if the PID is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def wait_gone(pid: int, timeout: float = GONE_TIMEOUT) -> None:
    """Wait until /proc/PID disappears (killed and reaped by its parent,
    e.g. PID 1, which may take a while to reap orphans)."""
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}"):
        if time.monotonic() > deadline:
            pytest.fail(f"PID {pid} still exists (state {proc_state(pid)}) "
                        f"{timeout}s after SIGKILL", pytrace=False)
        time.sleep(0.02)


def listener(family: str, tmp_path) -> tuple:
    """A listening stream socket outside any dumped tree: ("unix", a path
    in tmp_path) or ("tcp", 127.0.0.1 on a free port); returns (socket,
    address as a string: the path, or the port)."""
    import socket
    if family == "unix":
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        addr = str(Path(tmp_path) / "l.sock")
        ls.bind(addr)
    else:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.bind(("127.0.0.1", 0))
        addr = str(ls.getsockname()[1])
    ls.listen(1)
    return ls, addr


def kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_started() -> None:
    """SIGKILL every PID this test started or restored; reap our children."""
    for pid in list(STARTED_PIDS):
        kill_pid(pid)
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        for path in Path("/dev/shm").glob(f"snapshotd-zdtm-{pid}-*"):
            try:
                path.unlink()
            except OSError:
                pass
    STARTED_PIDS.clear()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as e:
        return f"<{e}>"


def _tail(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


class Program:
    """A running zdtm program and its STATEDIR."""

    def __init__(self, name: str, statedir: Path):
        self.name = name
        self.statedir = statedir
        self.proc: subprocess.Popen | None = None
        self.pid = 0
        self.restored = False
        self.launcher: list[str] = []  # runs the program (execs it, keeping its PID)

    def log(self) -> str:
        return _tail(_read(self.statedir / "out.log"))

    def report(self, what: str) -> str:
        return (f"zdtm {self.name} (pid {self.pid}): {what}\n"
                f"--- {self.statedir}/out.log ---\n{self.log()}")

    def start(self) -> None:
        argv = self.launcher + program_command(self.name) + [str(self.statedir)]
        with open(self.statedir / "out.log", "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log,
                                         cwd=str(self.statedir),
                                         start_new_session=True)
        self.pid = self.proc.pid
        STARTED_PIDS.add(self.pid)

    def alive(self) -> bool:
        if not self.restored:
            return self.proc.poll() is None
        state = proc_state(self.pid)
        return state is not None and state not in "ZX"

    def wait_file(self, name: str, timeout: float) -> Path:
        path = self.statedir / name
        deadline = time.monotonic() + timeout
        while not path.exists():
            if not self.alive():
                # it may have written the file just before exiting
                if path.exists():
                    break
                rc = "" if self.restored else f" with status {self.proc.returncode}"
                pytest.fail(self.report(f"exited{rc} before writing {name}"),
                            pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(self.report(f"no {name} after {timeout}s"),
                            pytrace=False)
            time.sleep(0.01)
        return path

    def kill(self) -> None:
        kill_pid(self.pid)
        if not self.restored:
            self.proc.wait(timeout=GONE_TIMEOUT)
        else:
            wait_gone(self.pid)

    def wait_exit(self) -> None:
        """After the result: the program must exit (with 0, if our child)."""
        if not self.restored:
            try:
                rc = self.proc.wait(timeout=GONE_TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(self.report("did not exit after writing result"),
                            pytrace=False)
            assert rc == 0, self.report(f"exit status {rc}")
        else:
            wait_gone(self.pid)


def run_zdtm(name: str, tmp_path, store, cycles: int = 1, extra_setup=None,
             statedir_name: str | None = None, dump_args: tuple = ()) -> Program:
    """Run zdtm program ``name`` through ``cycles`` dump/kill/restore rounds
    and assert it reports PASS.

    ``extra_setup(statedir)`` is called before the program starts;
    ``dump_args`` are added to each dump command.
    Returns the finished Program (statedir, pid) for extra checks.
    """
    statedir = Path(tmp_path) / (statedir_name or name)
    statedir.mkdir(parents=True, exist_ok=True)
    if extra_setup is not None:
        extra_setup(statedir)

    prog = Program(name, statedir)
    prog.start()
    prog.wait_file("ready", READY_TIMEOUT)

    if not NO_CR:
        for _ in range(cycles):
            snap = dump(store, prog.pid, *dump_args)
            assert prog.alive(), prog.report("not running after dump")
            prog.kill()
            restore(store, snap, prog.pid)
            prog.restored = True
            assert prog.alive(), prog.report("not running after restore")

    (statedir / "go").write_text("go\n")
    result_path = prog.wait_file("result", RESULT_TIMEOUT)
    result = _read(result_path).strip()
    assert result == "PASS", prog.report(f"result: {result}")
    prog.wait_exit()
    return prog
