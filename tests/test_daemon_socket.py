"""The daemon's unix socket against a hostile local user: a real `snapshotd
daemon` (tests/daemon_harness.py) and a real unprivileged user. A flood of
idle connections, the daemon out of file descriptors, slow partial requests
and malformed ones must not stop the service for root, nor grow threads or
the log without bound."""
from __future__ import annotations

import json
import os
import pwd
import resource
import select
import socket
import time

import pytest

from daemon_harness import Daemon, kill_pid, wait_for


# -- measuring the daemon --
def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(ln for ln in f if ln.startswith("Threads:")).split()[1])


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(next(ln for ln in f if ln.startswith("VmRSS:")).split()[1]) / 1024


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def log_lines(d: Daemon) -> list[str]:
    return d.log_text().splitlines()


def raw(sock: str, data: bytes, timeout: float = 10) -> tuple[float, list[bytes]]:
    """Send data on a new connection as root; (seconds until the daemon
    closed it, the lines it answered)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    t0 = time.monotonic()
    try:
        while True:  # (with a timeout, a full listen backlog fails connect() with EAGAIN: wait, as a blocking one does)
            try:
                s.connect(sock)
                break
            except BlockingIOError:
                if time.monotonic() - t0 > timeout:
                    pytest.fail(f"the daemon did not accept a connection within {timeout} s", pytrace=False)
                time.sleep(0.01)
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    finally:
        s.close()
    return time.monotonic() - t0, out.splitlines()


def status_seconds(sock: str) -> float:
    """Root's `status` (the protocol, as the CLI sends it): its latency."""
    dt, lines = raw(sock, b'{"op": "status"}\n')
    assert len(lines) == 1 and json.loads(lines[0])["ok"], lines
    return dt


class Holder:
    """A forked child (as `user`, or root) that opens n connections to the
    daemon (non-blocking connects, retried while the backlog is full, for at
    most `within` seconds), sends `payload` on each, notes what the daemon
    answered on them within `settle` seconds, reports, and keeps them open
    until release()."""

    def __init__(self, sock: str, n: int, user: str | None = None, payload: bytes = b"", within: float = 30,
                 settle: float = 3):
        pw = pwd.getpwnam(user) if user else None
        rep_r, rep_w = os.pipe()
        self.go_r, self.go_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - runs in the child
            try:
                os.close(rep_r)
                os.close(self.go_w)
                soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 100)), hard))
                if pw:
                    os.setgroups([])
                    os.setgid(pw.pw_gid)
                    os.setuid(pw.pw_uid)
                conns, eagain = [], 0
                t0 = time.monotonic()
                while len(conns) < n and time.monotonic() - t0 < within:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.setblocking(False)
                    try:
                        s.connect(sock)
                    except (BlockingIOError, InterruptedError):
                        s.close()
                        eagain += 1
                        time.sleep(0.002)
                        continue
                    if payload:
                        try:
                            s.send(payload)
                        except OSError:
                            pass
                    conns.append(s)
                opened = time.monotonic() - t0
                answers: dict[str, int] = {}
                poll = select.poll()
                by_fd = {s.fileno(): s for s in conns}
                for fd in by_fd:
                    poll.register(fd, select.POLLIN)
                end = time.monotonic() + settle
                while by_fd and time.monotonic() < end:
                    for fd, _ev in poll.poll(100):
                        try:
                            data = by_fd[fd].recv(4096)
                        except OSError as e:
                            data = f"error {e.errno}".encode()
                        key = (json.loads(data.splitlines()[0]).get("error", "ok") if data.startswith(b"{")
                               else data.decode() or "closed")
                        answers[key] = answers.get(key, 0) + 1
                        poll.unregister(fd)
                        del by_fd[fd]
                rep = {"connected": len(conns), "eagain": eagain, "seconds": opened, "answers": answers,
                       "silent": len(by_fd)}
                os.write(rep_w, json.dumps(rep).encode())
                os.close(rep_w)
                os.read(self.go_r, 1)  # until release() (or the test process is gone)
            finally:
                os._exit(0)
        os.close(rep_w)
        os.close(self.go_r)
        self.rep_r = rep_r
        self.report: dict | None = None

    def wait_report(self, timeout: float = 120) -> dict:
        r, _, _ = select.select([self.rep_r], [], [], timeout)
        assert r, f"the connecting child did not report within {timeout} s"
        with os.fdopen(self.rep_r, "rb") as f:
            data = f.read()
        self.rep_r = -1
        assert data, "the connecting child failed before reporting"
        self.report = json.loads(data)
        return self.report

    def release(self) -> None:
        if self.pid:
            os.close(self.go_w)
            kill_pid(self.pid)
            os.waitpid(self.pid, 0)
            self.pid = 0
        if self.rep_r >= 0:
            os.close(self.rep_r)
            self.rep_r = -1


def test_a_flood_of_idle_connections_from_a_user_does_not_starve_root(daemon, other_user):
    dpid = daemon.p.pid
    t0, rss0 = threads(dpid), rss_mb(dpid)
    n_log = len(log_lines(daemon))
    during: list[float] = []
    max_threads = [t0]
    h = Holder(daemon.sock, 3000, user=other_user)
    try:
        # root is served while the connections pour in ...
        while not select.select([h.rep_r], [], [], 0.3)[0]:
            during.append(status_seconds(daemon.sock))
            max_threads[0] = max(max_threads[0], threads(dpid))
        rep = h.wait_report()
        # ... and while they are held
        held = []
        for _ in range(3):
            held.append(status_seconds(daemon.sock))
            max_threads[0] = max(max_threads[0], threads(dpid))
            time.sleep(0.1)
        rss1 = rss_mb(dpid)
        print(f"\nflood: {rep}; root status during the flood {['%.3f' % x for x in during]} s, while held "
              f"{['%.3f' % x for x in held]} s; daemon threads {t0} -> max {max_threads[0]}; "
              f"RSS {rss0:.1f} -> {rss1:.1f} MB")
    finally:
        h.release()
    assert rep["connected"] == 3000, rep
    # the over-limit connections are told why, at once, and closed (no thread each)
    refused = sum(n for k, n in rep["answers"].items() if k.startswith("too many connections from uid"))
    assert refused >= 2900, rep
    assert max_threads[0] < 100, max_threads
    assert all(x < 2 for x in held + during), (held, during)
    assert rss1 - rss0 < 30, (rss0, rss1)
    # 3000 refused connections: a bounded number of log lines (rate-limited per uid)
    new = log_lines(daemon)[n_log:]
    assert len(new) <= 30, "\n".join(new)
    # the user is served again once the flood is gone
    wait_for(lambda: daemon.as_user(other_user, "status")[0], 15, "the user's status to be served again")
    assert "Traceback" not in daemon.log_text()


def test_accept_does_not_spin_when_the_daemon_is_out_of_file_descriptors(root):
    d = Daemon(root)
    d.start()
    h = None
    try:
        dpid = d.p.pid
        resource.prlimit(dpid, resource.RLIMIT_NOFILE, (64, 64))
        fds0 = len(os.listdir(f"/proc/{dpid}/fd"))
        h = Holder(d.sock, 150, within=5, settle=1)  # root's connections (root's own limit is larger than 64)
        rep = h.wait_report()
        fds = len(os.listdir(f"/proc/{dpid}/fd"))
        c0, w0 = cpu_seconds(dpid), time.monotonic()
        time.sleep(2)
        cpu = (cpu_seconds(dpid) - c0) / (time.monotonic() - w0)
        print(f"\nEMFILE: daemon fds {fds0} -> {fds} (limit 64); {rep}; daemon CPU over 2 s: {cpu:.1%}")
        assert fds >= 60, (fds0, fds)  # it did run out
        assert cpu < 0.2, cpu
        h.release()
        h = None
        dt = status_seconds(d.sock)  # root is served once the connections are gone
        print(f"root status after the release: {dt:.3f} s")
        assert dt < 2, dt
        text = d.log_text()
        assert "Traceback" not in text
        assert 1 <= text.count("cannot accept connections") <= 2, text[-3000:]
        assert d.stop() == 0
    finally:
        if h is not None:
            h.release()
        d.close()


def test_a_slow_partial_request_is_dropped_after_the_deadline(daemon):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    try:
        s.connect(daemon.sock)
        s.sendall(b'{"op": "sta')
        t0 = time.monotonic()
        try:
            data = s.recv(4096)
        except TimeoutError:
            pytest.fail("the daemon kept a half-sent request open for 20 s", pytrace=False)
        dt = time.monotonic() - t0
    finally:
        s.close()
    assert data == b"" and 3 <= dt <= 8, (data, dt)
    assert "no whole request line" in daemon.log_text()


def test_dropped_partial_requests_log_a_bounded_number_of_lines(daemon, other_user):
    counts = []
    # 200 half-sent requests held open (root: its connection limit allows 200), dropped at the deadline
    n_log = len(log_lines(daemon))
    h = Holder(daemon.sock, 200, payload=b'{"op": "sta', settle=8)
    try:
        rep = h.wait_report()
    finally:
        h.release()
    assert rep["connected"] == 200 and rep["answers"].get("closed") == 200, rep
    # at most 20 lines in 10 s per uid, then one line counting the rest
    wait_for(lambda: "suppressed" in daemon.log_text(), 25, "the 'suppressed' line")
    new = log_lines(daemon)[n_log:]
    counts.append(len(new))
    assert len(new) <= 25, "\n".join(new)
    # 200 half-sent then closed, as a user
    n_log = len(log_lines(daemon))
    pw = pwd.getpwnam(other_user)
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            for _ in range(200):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(daemon.sock)
                s.sendall(b'{"op": "sta')
                s.close()
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    wait_for(lambda: "suppressed" in "\n".join(log_lines(daemon)[n_log:]), 25, "the 'suppressed' line")
    new = log_lines(daemon)[n_log:]
    counts.append(len(new))
    print(f"\n200 dropped partial requests (held to the deadline; closed half-sent): {counts} log lines")
    assert len(new) <= 25, "\n".join(new)
    assert "Traceback" not in daemon.log_text()


MALFORMED = {
    "nested": b"[" * 30000 + b"]" * 30000,
    "nested object": b'{"op": "status", "x": ' + b'{"a": ' * 10000 + b"1" + b"}" * 10000 + b"}",
    "Infinity": b'{"op": "register", "pid": Infinity, "every": "1s"}',
    "-Infinity": b'{"op": "register", "pid": -Infinity, "every": "1s"}',
    "NaN": b'{"op": "register", "pid": NaN, "every": "1s"}',
    "1e400": b'{"op": "register", "pid": 1e400, "every": "1s"}',
    "pid string": b'{"op": "register", "pid": "12", "every": "1s"}',
    "pid true": b'{"op": "register", "pid": true, "every": "1s"}',
    "pid float": b'{"op": "unregister", "pid": 12.0}',
    "pid 0": b'{"op": "snapshot-now", "pid": 0}',
    "pid huge": b'{"op": "register", "pid": 99999999999999999999999, "every": "1s"}',
    "pid 5000 digits": b'{"op": "register", "pid": 1' + b"0" * 5000 + b', "every": "1s"}',
    "every 5": b'{"op": "register", "pid": 1, "every": 5}',
    "every huge": b'{"op": "register", "pid": 1, "every": "99999999999999999999h"}',
    "keep 0": b'{"op": "register", "pid": 1, "every": "1s", "keep": 0}',
    "keep true": b'{"op": "register", "pid": 1, "every": "1s", "keep": true}',
    "name long": b'{"op": "register", "pid": 1, "every": "1s", "name": "' + b"n" * 300 + b'"}',
    "job long": b'{"op": "snapshots", "job": "' + b"j" * 200 + b'"}',
    "job list": b'{"op": "rollback", "job": ["J"]}',
    "keep_files 1": b'{"op": "rollback", "job": "J", "keep_files": 1}',
    "unknown arg": b'{"op": "status", "verbose": true}',
    "unknown arg 2": b'{"op": "rollback", "job": "J", "uid": 0}',
    "no target": b'{"op": "unregister"}',
    "progress str": b'{"op": "status", "progress": "yes"}',
    "not an object": b'[1, 2]',
    "op not a string": b'{"op": 5}',
    "not JSON": b"hello",
    "not UTF-8": b'{"op": "\xff\xfe"}',
    "huge line": b'{"op": "status", "pad": "' + b"x" * 300000 + b'"}',
}


@pytest.mark.parametrize("who", ["root", "user"])
def test_malformed_requests_get_one_clear_line(daemon, other_user, who):
    pw = pwd.getpwnam(other_user)
    results = {}
    for what, payload in MALFORMED.items():
        if who == "root":
            _dt, lines = raw(daemon.sock, payload + b"\n")
        else:  # the same bytes from the user's own process
            r, w = os.pipe()
            child = os.fork()
            if child == 0:  # pragma: no cover - runs in the child
                try:
                    os.close(r)
                    os.setgroups([])
                    os.setgid(pw.pw_gid)
                    os.setuid(pw.pw_uid)
                    os.write(w, b"\n".join(raw(daemon.sock, payload + b"\n")[1]))
                finally:
                    os._exit(0)
            os.close(w)
            with os.fdopen(r, "rb") as f:
                lines = f.read().splitlines()
            os.waitpid(child, 0)
        results[what] = lines
    for what, lines in results.items():
        assert len(lines) == 1, (what, lines)
        ans = json.loads(lines[0])
        assert ans["ok"] is False and "\n" not in ans["error"] and len(ans["error"]) < 300, (what, ans)
        assert ans["error"].startswith("bad request: "), (what, ans)
    assert "nested too deeply" in json.loads(results["nested"][0])["error"]
    assert "too long" in json.loads(results["huge line"][0])["error"]
    assert "366 days" in json.loads(results["every huge"][0])["error"]
    text = daemon.log_text()
    assert "Traceback" not in text and "internal error" not in text, text[-5000:]
    # the daemon still serves
    assert daemon.ok("status")["trees"] == []


def test_an_absurd_interval_is_refused_with_the_limit(daemon):
    res = daemon.cli("register", "1", "--every", "99999999999999999999h")
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0 and len(lines) == 1, res.stderr
    assert "366 days" in lines[0] and "internal error" not in lines[0], lines
    # the daemon refuses it too (a client that does not check)
    _dt, ans = raw(daemon.sock, b'{"op": "register", "pid": 1, "every": "8785h"}\n')
    assert len(ans) == 1 and "366 days" in json.loads(ans[0])["error"], ans
    assert daemon.ok("status")["trees"] == []
    assert "Traceback" not in daemon.log_text()
