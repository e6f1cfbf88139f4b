"""Helpers for the daemon tests: a real `snapshotd daemon` subprocess on a
temporary socket and store, the counter program (tests/daemon/counter.c),
and the CLI run as root or as another user."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from zdtm_harness import REPO_DIR, STARTED_PIDS

COUNTER_SRC = Path(__file__).resolve().parent / "daemon" / "counter.c"
_counter: list[str] = []


def counter_binary() -> str:
    """Build the counter once per session, somewhere every user can run it."""
    if not _counter:
        d = tempfile.mkdtemp(prefix="snapshotd-counter-")
        os.chmod(d, 0o755)
        out = os.path.join(d, "counter")
        res = subprocess.run(["gcc", "-O1", "-Wall", "-o", out, str(COUNTER_SRC)], capture_output=True, text=True)
        if res.returncode:
            pytest.fail(f"building counter.c failed:\n{res.stderr}", pytrace=False)
        os.chmod(out, 0o755)
        _counter.append(out)
    return _counter[0]


def cleanup_counter() -> None:
    if _counter:
        shutil.rmtree(os.path.dirname(_counter[0]), ignore_errors=True)
        _counter.clear()


def wait_for(cond, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        time.sleep(interval)


def _as_user(user: str | None, argv: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *argv] if user else argv


def start_counter(workdir: str, period_ms: int = 20, big_mb: int = 0, user: str | None = None) -> int:
    """Start the counter detached (setsid -f: its parent becomes init, which
    reaps it when a rollback kills it); returns its PID."""
    os.makedirs(workdir, exist_ok=True)
    if user:
        shutil.chown(workdir, user)
    subprocess.run(_as_user(user, ["setsid", "-f", counter_binary(), workdir, str(period_ms), str(big_mb)]),
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ready = os.path.join(workdir, "ready")
    wait_for(lambda: os.path.exists(ready), 20, f"counter in {workdir} to start")
    pid = int(open(ready).read())
    STARTED_PIDS.add(pid)
    return pid


def read_log(workdir: str) -> list[int]:
    with open(os.path.join(workdir, "log")) as f:
        return [int(x) for x in f.read().split()]


def start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError):
        return None


class Daemon:
    """`snapshotd daemon` on a private socket and store."""

    def __init__(self, root: str):
        self.root = root
        self.sock = os.path.join(root, "snapshotd.sock")
        self.store = os.path.join(root, "store")
        self.logpath = os.path.join(root, "daemon.log")
        self.p: subprocess.Popen | None = None
        self.restarting = False  # the daemon may re-exec itself (full-disk tests)

    def start(self, timeout: float = 30, env: dict | None = None, args: tuple = ()) -> None:
        self.log = open(self.logpath, "a")
        self.p = subprocess.Popen(
            [sys.executable, "-m", "snapshotd", "--store", self.store, "daemon", "--socket", self.sock,
             "--retention-every", "1s", *args],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, cwd=str(REPO_DIR),
            env={**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})})

        def up():
            if self.p.poll() is not None:
                pytest.fail(f"the daemon exited with {self.p.returncode}:\n{self.log_text()}", pytrace=False)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.sock)
                return True
            except OSError:
                return False
            finally:
                s.close()
        wait_for(up, timeout, "the daemon to listen")

    def log_text(self) -> str:
        with open(self.logpath) as f:
            return f.read()

    def stop(self, timeout: float = 30) -> int:
        self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout)
        finally:
            self.log.close()
        return rc

    def kill9(self) -> None:
        self.p.kill()
        self.p.wait(10)
        self.log.close()

    def close(self) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)

    def cli(self, *args: str, user: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "snapshotd", "--store", self.store, "--socket", self.sock, *args]
        return subprocess.run(_as_user(user, argv), capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=timeout, cwd=str(REPO_DIR))

    def ok(self, *args: str, user: str | None = None):
        """Run a verb with --json; assert success; return the parsed output.
        While the daemon re-executes itself (self.restarting), wait for it."""
        res = self.cli("--json", *args, user=user)
        deadline = time.monotonic() + 10
        while (self.restarting and res.returncode and time.monotonic() < deadline
               and any(w in res.stderr for w in ("not running", "reset by peer", "closed the connection"))):
            time.sleep(0.1)
            res = self.cli("--json", *args, user=user)
        assert res.returncode == 0, (f"snapshotd {' '.join(args)} failed ({res.returncode}):\n{res.stderr}\n"
                                     f"--- daemon log ---\n{self.log_text()[-8000:]}")
        return json.loads(res.stdout)

    def fails(self, *args: str, user: str | None = None) -> str:
        """Run a verb; assert it fails with one clear line on stderr; return it."""
        res = self.cli(*args, user=user)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode != 0, f"snapshotd {' '.join(args)} should have failed:\n{res.stdout}"
        assert len(lines) == 1 and lines[0].startswith("snapshotd: error: "), res.stderr
        return lines[0]

    def snapshots(self, job: str | None = None) -> list:
        return self.ok("snapshots", *(["--job", job] if job else []))

    def as_user(self, user: str, op: str, **args):
        """Send one request as another user: a forked child drops to that
        user's uid/gid and talks the protocol (this Python lives under
        /root, which other users cannot execute). Returns (ok, result or error)."""
        import pwd

        pw = pwd.getpwnam(user)
        r, w = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                os.close(r)
                os.setgroups([])
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)
                from snapshotd.daemon.protocol import ProtocolError, call
                try:
                    out = {"ok": True, "result": call(self.sock, op, **args)}
                except ProtocolError as e:
                    out = {"ok": False, "error": str(e)}
                os.write(w, json.dumps(out).encode())
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            data = f.read()
        _, status = os.waitpid(child, 0)
        assert status == 0 and data, f"the client as {user} failed"
        out = json.loads(data)
        return out["ok"], out.get("result") if out["ok"] else out["error"]

    def snapshots_offline(self) -> list[int]:
        """Root PIDs of the committed snapshots, read from the files (daemon down)."""
        from snapshotd.storage.store import Store

        return [r["root_pid"] for r in Store(self.store).list()]

    def tree(self, pid: int) -> dict:
        return next(t for t in self.ok("status")["trees"] if t["pid"] == pid)


def kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _unused(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")


def wait_gone(pid: int, timeout: float = 10) -> None:
    wait_for(lambda: _unused(pid), timeout, f"PID {pid} to be gone")
