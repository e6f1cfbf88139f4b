"""The daemon's life: listen on the unix socket, answer requests (one thread
per connection), stop cleanly on SIGTERM/SIGINT.

Any local user may connect, so nothing a client does may stop the service
for others: a request line must arrive whole within READ_DEADLINE seconds
and be at most protocol.MAX_REQUEST bytes; each write to the client has
WRITE_TIMEOUT seconds; a non-root uid holds at most MAX_CONN_PER_UID
connections and all non-root users together MAX_CONN_NONROOT (root has its
own MAX_CONN_ROOT), the rest are refused in the accept path without a
thread; accept() out of file descriptors drops the pending connection
instead of spinning; the log lines clients cause are rate-limited per uid."""
from __future__ import annotations

import errno
import json
import logging
import os
import resource
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
from .protocol import MAX_REQUEST, ProtocolError, parse_request
from .rollback import RollbackError
from .service import Daemon, ServiceError

log = logging.getLogger("snapshotd")

CLIENT_ERRORS = (auth.Denied, ProtocolError, ServiceError, RoundError, RollbackError, DumpError, RestoreError,
                 StoreError, FormatError, DamagedError)


READ_DEADLINE = 5.0  # seconds for the whole request line
WRITE_TIMEOUT = 10.0  # seconds for each line written to the client (progress, answer)
DRAIN_MAX = 1 << 20  # of an over-long request line, bytes read (and dropped) before the error is sent
MAX_CONN_PER_UID = 8  # connections at a time, per non-root uid
MAX_CONN_NONROOT = 64  # ... of all non-root uids together
MAX_CONN_ROOT = 256  # ... of root
LOG_BURST, LOG_WINDOW = 20, 10.0  # log lines a uid's clients may cause per window (seconds)
FD_LOG_EVERY = 10.0  # seconds between two "out of file descriptors" lines


class DaemonStartError(Exception):
    pass


class ClientLog:
    """Log lines caused by clients (refused requests and connections,
    dropped partial requests): at most `burst` per `window` seconds per uid;
    past that, one line saying how many were suppressed (by the next line of
    that uid after the window, or by flush(), which the main loop calls)."""

    def __init__(self, burst: int = LOG_BURST, window: float = LOG_WINDOW, logger: logging.Logger = log):
        self.burst, self.window, self.logger = burst, window, logger
        self.lock = threading.Lock()
        self.uids: dict[int, list] = {}  # uid -> [window start, lines in it, suppressed]

    def log(self, uid: int, level: int, msg: str, *args, exc_info: bool = False) -> None:
        now = time.monotonic()
        with self.lock:
            w = self.uids.get(uid)
            suppressed = 0
            if w is None or now - w[0] >= self.window:
                suppressed = w[2] if w else 0
                w = self.uids[uid] = [now, 0, 0]
            w[1] += 1
            emit = w[1] <= self.burst
            if not emit:
                w[2] += 1
        if suppressed:
            self._suppressed(uid, suppressed)
        if emit:
            self.logger.log(level, msg, *args, exc_info=exc_info)

    def flush(self) -> None:
        """Report and forget the windows that ended."""
        now = time.monotonic()
        with self.lock:
            done = [(uid, w[2]) for uid, w in self.uids.items() if now - w[0] >= self.window]
            for uid, _n in done:
                del self.uids[uid]
        for uid, n in done:
            if n:
                self._suppressed(uid, n)

    def _suppressed(self, uid: int, n: int) -> None:
        self.logger.warning("suppressed %d similar line(s) caused by uid %d (at most %d per %g s)", n, uid,
                            self.burst, self.window)


class RequestTooLong(Exception):
    pass


def read_request(conn: socket.socket, deadline_s: float = READ_DEADLINE, limit: int = MAX_REQUEST) -> bytes:
    """The request line (b"" if the client closed without a byte; what came
    if it closed mid-line). Raises TimeoutError when the line is not whole
    after deadline_s seconds, RequestTooLong past limit bytes (after reading
    and dropping the rest of the line, up to DRAIN_MAX bytes, so that a
    client still sending it gets the answer)."""
    deadline = time.monotonic() + deadline_s
    buf = bytearray()

    def recv(n: int) -> bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        conn.settimeout(left)
        return conn.recv(n)

    while True:
        chunk = recv(65536)
        if not chunk:
            return bytes(buf)
        i = chunk.find(b"\n")
        buf += chunk if i < 0 else chunk[:i + 1]
        if len(buf) > limit + 1 or (i < 0 and len(buf) > limit):
            break
        if i >= 0:
            return bytes(buf)
    drained = len(buf)
    while i < 0 and drained < DRAIN_MAX:
        try:
            chunk = recv(65536)
        except OSError:
            break
        if not chunk:
            break
        i = chunk.find(b"\n")
        drained += len(chunk)
    raise RequestTooLong(f"bad request: request too long (at most {limit // 1024} KiB)")


def _answer_nowait(conn: socket.socket, ans: dict) -> None:
    """One answer line, best effort, never blocking (a refused connection)."""
    try:
        conn.setblocking(False)
        conn.send(json.dumps(ans).encode() + b"\n")
    except OSError:
        pass


class ProgressRelay:
    """The progress bars of one request's thread (progress.to_sink), summed
    into one and sent to the client as {"progress": {"label", "done",
    "total"}} lines before the answer, at most five a second. A client that
    went away, or does not read (a write timed out), does not stop the work:
    nothing more is sent to it (`broken`)."""

    def __init__(self, wfile, label: str):
        self.wfile, self.label = wfile, label
        self.broken = False
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
        if self.broken:
            return
        total = max(self.expected, sum(self.totals.values()), self.done)
        try:
            self.wfile.write(json.dumps({"progress": {"label": self.label, "done": self.done,
                                                      "total": total}}).encode() + b"\n")
            self.wfile.flush()
        except OSError:  # (a timeout too: the line may be half-written, the stream is lost)
            self.broken = True


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        server = self.server
        cpid, uid = server.peer(self.request)
        conn = self.connection
        try:
            line = read_request(conn)
        except TimeoutError:
            server.client_log.log(uid, logging.INFO, "dropped a connection from PID %d uid %d: no whole request "
                                  "line within %g s", cpid, uid, READ_DEADLINE)
            return
        except RequestTooLong as e:
            line = e
        except OSError:
            return
        if not line:
            return
        op = "?"
        relay = None
        try:
            conn.settimeout(WRITE_TIMEOUT)  # per write: a client that never reads cannot hold the thread
            if isinstance(line, RequestTooLong):
                raise ProtocolError(str(line))
            op, req, want_progress = parse_request(line)
            log.debug("request %s from PID %d uid %d: %s", op, cpid, uid, req)
            if want_progress:  # the client draws a bar (a terminal, no --json)
                relay = ProgressRelay(self.wfile, f"{op} {req.get('job') or req.get('pid') or ''}".strip())
            with progress.to_sink(relay):
                ans = {"ok": True, "result": server.daemon.handle(op, req, uid)}
        except CLIENT_ERRORS as e:
            ans = {"ok": False, "error": str(e)}
        except TypeError as e:
            ans = {"ok": False, "error": f"bad arguments for {op}: {e}"}
        except (ValueError, KeyError) as e:
            ans = {"ok": False, "error": f"bad request: {e}"}
        except OSError as e:
            ans = {"ok": False, "error": f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")}
        except Exception as e:  # a bug: keep serving, say what happened
            server.client_log.log(uid, logging.ERROR, "request %s from uid %d failed", op, uid, exc_info=True)
            ans = {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}
        if not ans["ok"]:
            server.client_log.log(uid, logging.INFO, "request %s from uid %d refused: %s", op, uid, ans["error"])
        if relay is not None and relay.broken:
            return
        try:
            self.wfile.write(json.dumps(ans, default=str).encode() + b"\n")
        except OSError:
            pass


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = False  # server_close() waits for requests in progress
    block_on_close = True
    request_queue_size = 1024  # a burst of connections waits in the backlog instead of being refused

    def __init__(self, *args, **kw):
        self.conn_lock = threading.Lock()
        self.peers: dict[socket.socket, tuple[int, int]] = {}  # connection being served -> (pid, uid)
        self.per_uid: dict[int, int] = {}
        self.nonroot = 0
        self.threads: list[threading.Thread] = []
        self.client_log = ClientLog()
        self.reserve: int | None = None
        self.fd_dropped, self.fd_logged = 0, 0.0
        super().__init__(*args, **kw)
        self._reserve_fd()

    # -- accept: file descriptors --
    def _reserve_fd(self) -> None:
        if self.reserve is None:
            try:
                self.reserve = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass

    def get_request(self):
        try:
            return self.socket.accept()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                self._out_of_fds(e)
            raise

    def _out_of_fds(self, e: OSError) -> None:
        """accept() failed for want of a descriptor (or memory): the pending
        connection stays readable, so without this the loop would spin. Free
        the reserve descriptor, accept the connection, tell it, close it."""
        dropped = False
        if self.reserve is not None and e.errno in (errno.EMFILE, errno.ENFILE):
            os.close(self.reserve)
            self.reserve = None
            try:
                conn, _ = self.socket.accept()
            except OSError:
                pass
            else:
                _answer_nowait(conn, {"ok": False, "error": "the daemon is out of file descriptors; try again later"})
                conn.close()
                dropped = True
            self._reserve_fd()
        if not dropped:  # (another thread took the descriptor, or no memory) back off instead of spinning
            time.sleep(0.05)
            self._reserve_fd()
        self.fd_dropped += dropped
        now = time.monotonic()
        if now - self.fd_logged >= FD_LOG_EVERY:  # one line per FD_LOG_EVERY seconds at most
            log.warning("cannot accept connections (%s): %d dropped since the last such line", e.strerror or e,
                        self.fd_dropped)
            self.fd_logged, self.fd_dropped = now, 0

    # -- accept: who, and how many --
    def verify_request(self, request, client_address) -> bool:
        try:
            cpid, uid, _gid = auth.peercred(request)
        except OSError:
            return False
        with self.conn_lock:
            n = self.per_uid.get(uid, 0)
            if uid == 0:
                why = f"from root (at most {MAX_CONN_ROOT} at a time)" if n >= MAX_CONN_ROOT else None
            elif n >= MAX_CONN_PER_UID:
                why = f"from uid {uid} (at most {MAX_CONN_PER_UID} at a time)"
            elif self.nonroot >= MAX_CONN_NONROOT:
                why = f"from non-root users (at most {MAX_CONN_NONROOT} at a time)"
            else:
                why = None
            if why is None:
                self.peers[request] = (cpid, uid)
                self.per_uid[uid] = n + 1
                self.nonroot += uid != 0
        if why is None:
            return True
        self.client_log.log(uid, logging.WARNING, "refused a connection from PID %d uid %d: too many connections %s",
                            cpid, uid, why)
        _answer_nowait(request, {"ok": False, "error": f"too many connections {why}; try again later"})
        return False

    def peer(self, request) -> tuple[int, int]:
        with self.conn_lock:
            return self.peers[request]

    def process_request(self, request, client_address):
        t = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                             daemon=self.daemon_threads)
        t.start()  # (if no thread can start: the caller reports it and closes the connection)
        with self.conn_lock:
            self.threads = [x for x in self.threads if x.is_alive()]
            self.threads.append(t)

    def shutdown_request(self, request):
        with self.conn_lock:
            peer = self.peers.pop(request, None)
            if peer is not None:
                uid = peer[1]
                self.per_uid[uid] -= 1
                if not self.per_uid[uid]:
                    del self.per_uid[uid]
                self.nonroot -= uid != 0
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        cpid, uid = self.peers.get(request, (0, -1))
        self.client_log.log(uid, logging.ERROR, "serving PID %d uid %d failed", cpid, uid, exc_info=True)

    def server_close(self):
        socketserver.UnixStreamServer.server_close(self)
        with self.conn_lock:
            threads, self.threads = self.threads, []
        for t in threads:
            t.join()  # requests in progress (an idle client: at most READ_DEADLINE)
        if self.reserve is not None:
            os.close(self.reserve)
            self.reserve = None


def _raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: connections and the store's
    files share the daemon's descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, want, e)


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
    _raise_fd_limit()
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
            server.client_log.flush()
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
