"""Wire format between the CLI and the daemon: one JSON object per line over
a unix stream socket. A request is {"op": NAME, ...arguments}; the answer is
{"ok": true, "result": ...} or {"ok": false, "error": "one line"}."""
from __future__ import annotations

import json
import os
import re
import socket

DEFAULT_SOCKET = "/run/snapshotd.sock"
MAX_LINE = 1 << 20

_DURATION = re.compile(r"^([1-9][0-9]*)([smh])$")
_UNIT = {"s": 1, "m": 60, "h": 3600}
DURATION_FORMS = "a whole number followed by s, m or h, e.g. 30s, 10m, 2h"


class ProtocolError(Exception):
    pass


class DaemonNotRunning(ProtocolError):
    pass


def parse_duration(text: str) -> int:
    """'30s' / '10m' / '2h' -> seconds."""
    m = _DURATION.match(str(text).strip())
    if not m:
        raise ProtocolError(f"bad duration {text!r}: use {DURATION_FORMS}")
    return int(m.group(1)) * _UNIT[m.group(2)]


def format_duration(seconds: int) -> str:
    for unit, n in (("h", 3600), ("m", 60)):
        if seconds % n == 0:
            return f"{seconds // n}{unit}"
    return f"{seconds}s"


def socket_path(explicit: str | None = None) -> str:
    return explicit or os.environ.get("SNAPSHOTD_SOCKET") or DEFAULT_SOCKET


def send_line(sock: socket.socket, obj) -> None:
    sock.sendall(json.dumps(obj, default=str).encode() + b"\n")


def recv_line(f) -> dict | None:
    line = f.readline(MAX_LINE)
    if not line:
        return None
    return json.loads(line)


def call(path: str, op: str, on_progress=None, **args):
    """Send one request to the daemon at path; returns its result or raises
    ProtocolError with the daemon's message. on_progress: asks the daemon
    for {"label", "done", "total"} reports of long work, each passed to it
    before the answer arrives."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonNotRunning(f"the snapshotd daemon is not running (nothing listens on {path}); "
                                   "start it with `snapshotd daemon`, or give its socket with --socket") from None
        except PermissionError:
            raise ProtocolError(f"permission denied connecting to {path}") from None
        try:
            send_line(s, {"op": op, **args, **({"progress": True} if on_progress else {})})
            with s.makefile("rb") as f:
                ans = recv_line(f)
                while ans is not None and "progress" in ans and "ok" not in ans:
                    if on_progress:
                        on_progress(ans["progress"])
                    ans = recv_line(f)
        except OSError as e:  # e.g. the daemon stopped or restarted meanwhile
            raise ProtocolError(f"the daemon closed the connection ({e.strerror or e}); try again") from None
        except ValueError as e:
            raise ProtocolError(f"bad answer from the daemon: {e}") from None
    finally:
        s.close()
    if ans is None:
        raise ProtocolError("the daemon closed the connection without answering (did it stop?)")
    if not ans.get("ok"):
        raise ProtocolError(ans.get("error") or "the daemon refused the request")
    return ans.get("result")
