"""The daemon's life: listen on the unix socket, answer requests (one thread
per connection), stop cleanly on SIGTERM/SIGINT."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import socketserver
import sys
import threading
import time

from .. import progress
from ..dump import DumpError
from ..restore import RestoreError
from ..storage.rounds import RoundError
from ..storage.snapshot import DamagedError, FormatError
from ..storage.store import Store, StoreError
from . import auth
from .protocol import MAX_LINE, ProtocolError
from .rollback import RollbackError
from .service import Daemon, ServiceError

log = logging.getLogger("snapshotd")

CLIENT_ERRORS = (auth.Denied, ProtocolError, ServiceError, RoundError, RollbackError, DumpError, RestoreError,
                 StoreError, FormatError, DamagedError)


class DaemonStartError(Exception):
    pass


class ProgressRelay:
    """The progress bars of one request's thread (progress.to_sink), summed
    into one and sent to the client as {"progress": {"label", "done",
    "total"}} lines before the answer, at most five a second. A client that
    went away does not stop the work."""

    def __init__(self, wfile, label: str):
        self.wfile, self.label = wfile, label
        self.expected = 0
        self.totals: dict[str, int] = {}
        self.bar_done: dict[str, int] = {}
        self.done = 0
        self.last = 0.0
        self.lock = threading.Lock()

    def expect(self, total: int) -> None:
        self.expected = total
        self.send()

    def add(self, label: str, nbytes: int, total: int) -> None:
        with self.lock:  # bars may count from a worker thread (dump's page reader)
            self.totals.setdefault(label, total)
            self.bar_done[label] = self.bar_done.get(label, 0) + nbytes
            self.done += nbytes
            if time.monotonic() - self.last >= 0.2 or self.bar_done[label] >= total:  # (and each part's end)
                self._send()

    def send(self) -> None:
        with self.lock:
            self._send()

    def _send(self) -> None:
        self.last = time.monotonic()
        total = max(self.expected, sum(self.totals.values()), self.done)
        try:
            self.wfile.write(json.dumps({"progress": {"label": self.label, "done": self.done,
                                                      "total": total}}).encode() + b"\n")
            self.wfile.flush()
        except OSError:
            pass


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        try:
            cpid, uid, _gid = auth.peercred(self.connection)
        except OSError:
            return
        line = self.rfile.readline(MAX_LINE)
        if not line:
            return
        op = "?"
        try:
            req = json.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("op"), str):
                raise ProtocolError("a request is a JSON object with an \"op\"")
            op = req.pop("op")
            want_progress = bool(req.pop("progress", False))  # the client draws a bar (a terminal, no --json)
            log.debug("request %s from PID %d uid %d: %s", op, cpid, uid, req)
            with progress.to_sink(ProgressRelay(self.wfile, f"{op} {req.get('job') or req.get('pid') or ''}".strip())
                                  if want_progress else None):
                ans = {"ok": True, "result": self.server.daemon.handle(op, req, uid)}
        except CLIENT_ERRORS as e:
            ans = {"ok": False, "error": str(e)}
        except TypeError as e:
            ans = {"ok": False, "error": f"bad arguments for {op}: {e}"}
        except (ValueError, KeyError) as e:
            ans = {"ok": False, "error": f"bad request: {e}"}
        except OSError as e:
            ans = {"ok": False, "error": f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")}
        except Exception as e:  # a bug: keep serving, say what happened
            log.exception("request %s from uid %d failed", op, uid)
            ans = {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}
        if not ans["ok"]:
            log.info("request %s from uid %d refused: %s", op, uid, ans["error"])
        try:
            self.wfile.write(json.dumps(ans, default=str).encode() + b"\n")
        except OSError:
            pass


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = False  # server_close() waits for requests in progress
    block_on_close = True


def _claim_socket(path: str) -> None:
    """Remove a socket left by a daemon that died; refuse if one is alive."""
    if not os.path.exists(path):
        return
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        raise DaemonStartError(f"a snapshotd daemon is already listening on {path}")
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)
    finally:
        s.close()


def run(store_path: str, socket_path: str, retention_every: int = 60, workers: int = 2, **upkeep) -> int:
    """upkeep: compact_every, compact_depth, compact_packs (service.Daemon)."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s snapshotd[%(process)d] %(levelname)s %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    os.umask(0o077)  # snapshots, rounds and the schedule: readable by root only
    store = Store(store_path)
    store.ensure_writable()
    _claim_socket(socket_path)
    daemon = Daemon(store, retention_every=retention_every, workers=workers, **upkeep)
    server = Server(socket_path, Handler, bind_and_activate=True)
    os.chmod(socket_path, 0o666)  # anyone may connect; SO_PEERCRED decides what they may do
    server.daemon = daemon
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("got %s: stopping", signal.Signals(signum).name)
        stop.set()

    def on_restart():
        log.warning("%s: restarting the daemon (registrations are kept)", daemon.restart_needed)
        stop.set()

    daemon.on_restart = on_restart
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    daemon.start()
    th = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="api", daemon=True)
    th.start()
    log.info("listening on %s, store %s", socket_path, store.path)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()  # no new requests
        daemon.stop()  # wait for rounds in progress (each commits whole or leaves nothing)
        server.server_close()  # wait for requests in progress
        try:
            os.unlink(socket_path)
        except FileNotFoundError:
            pass
        log.info("stopped")
    if daemon.restart_needed:
        for h in logging.getLogger().handlers:
            h.flush()
        os.execv(sys.executable, [sys.executable, "-m", "snapshotd", *sys.argv[1:]])
    return 0
