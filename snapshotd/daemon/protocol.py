"""Wire format between the CLI and the daemon: one JSON object per line over
a unix stream socket. A request is {"op": NAME, ...arguments}; the answer is
{"ok": true, "result": ...} or {"ok": false, "error": "one line"}.

parse_request is the daemon's outer gate: anything a client may send goes
through it before a verb runs (JSON without NaN/Infinity, bounded nesting,
each op's argument names, types and ranges)."""
from __future__ import annotations

import json
import math
import os
import re
import socket

DEFAULT_SOCKET = "/run/snapshotd.sock"
MAX_LINE = 1 << 20  # an answer line the client reads (snapshots lists can be long)
MAX_REQUEST = 64 << 10  # a request line the daemon reads

_DURATION = re.compile(r"^([1-9][0-9]*)([smh])$")
_UNIT = {"s": 1, "m": 60, "h": 3600}
DURATION_FORMS = "a whole number followed by s, m or h, e.g. 30s, 10m, 2h"
MAX_DURATION_DAYS = 366
MAX_DURATION = MAX_DURATION_DAYS * 86400

PID_MAX = 4_194_304  # the kernel's largest pid_max
KEEP_MAX = 1_000_000


class ProtocolError(Exception):
    pass


class DaemonNotRunning(ProtocolError):
    pass


class BadRequest(ProtocolError):
    """A request the daemon refuses before running anything: str() is the
    one line the client gets ("bad request: ...")."""

    def __init__(self, msg: str):
        super().__init__(f"bad request: {msg}")


def _shorten(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[:n] + "..."


def parse_duration(text: str) -> int:
    """'30s' / '10m' / '2h' -> seconds (at most MAX_DURATION_DAYS days)."""
    text = str(text).strip()
    m = _DURATION.match(text)
    if not m:
        raise ProtocolError(f"bad duration {_shorten(text)!r}: use {DURATION_FORMS}")
    unit = _UNIT[m.group(2)]
    if len(m.group(1)) > 12 or int(m.group(1)) * unit > MAX_DURATION:
        raise ProtocolError(f"bad duration {_shorten(text)!r}: at most {MAX_DURATION_DAYS} days "
                            f"({MAX_DURATION // unit}{m.group(2)})")
    return int(m.group(1)) * unit


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


# -- the daemon's request gate --
class _Arg:
    """One argument of an op: its type and bounds; None means "not given"."""

    def __init__(self, kind: type, required: bool = False, lo: int = 0, hi: int = 0, maxlen: int = 0,
                 check=None):
        self.kind, self.required, self.lo, self.hi, self.maxlen, self.check = kind, required, lo, hi, maxlen, check

    def validate(self, name: str, v) -> None:
        if v is None:
            if self.required:
                raise BadRequest(f"{name} is required")
            return
        if type(v) is not self.kind:  # (bool is not int)
            raise BadRequest(f"{name} must be {_KIND[self.kind]}, not {_KIND.get(type(v), type(v).__name__)}")
        if self.kind is int and not self.lo <= v <= self.hi:
            raise BadRequest(f"{name} must be between {self.lo} and {self.hi}")
        if self.kind is str:
            if len(v) > self.maxlen:
                raise BadRequest(f"{name} is too long (at most {self.maxlen} characters)")
            if any(ord(c) < 32 or ord(c) == 127 for c in v):
                raise BadRequest(f"{name} must not contain control characters")
            try:
                v.encode()
            except UnicodeEncodeError:  # (a lone surrogate: "\ud800")
                raise BadRequest(f"{name} is not valid text") from None
        if self.check:
            try:
                self.check(v)
            except ProtocolError as e:
                raise BadRequest(f"{name}: {e}") from None


_KIND = {int: "an integer", str: "a string", bool: "a boolean (true or false)", float: "a number", list: "a list",
         dict: "an object", type(None): "null"}
_PID = _Arg(int, lo=1, hi=PID_MAX)
JOB_MAX = 80  # a job key: NAME (at most 64) or UID:NAME (storage.rounds.KEY_RE: 75)
_JOB = _Arg(str, maxlen=JOB_MAX)
_BOOL = _Arg(bool)

# op (as on the wire) -> {argument: _Arg}; the arguments of service.Daemon.op_*
OPS: dict[str, dict[str, _Arg]] = {
    "register": {"pid": _Arg(int, True, 1, PID_MAX), "every": _Arg(str, True, maxlen=32, check=parse_duration),
                 "job": _JOB, "keep": _Arg(int, lo=1, hi=KEEP_MAX), "name": _Arg(str, maxlen=255)},
    "unregister": {"pid": _PID, "job": _JOB},
    "status": {},
    "snapshots": {"job": _JOB},
    "snapshot-now": {"pid": _PID, "job": _JOB},
    "rollback": {"job": _Arg(str, True, maxlen=JOB_MAX), "to": _Arg(str, maxlen=255), "keep_files": _BOOL},
}
ONE_OF = {"unregister": ("pid", "job"), "snapshot-now": ("pid", "job")}


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"{_shorten(text)} is out of range")
    return v


def parse_request(line: bytes) -> tuple[str, dict, bool]:
    """One request line -> (op, arguments, progress wanted); raises
    BadRequest (or ProtocolError for an unknown op) with one clear line."""
    if len(line.rstrip(b"\r\n")) > MAX_REQUEST:
        raise BadRequest(f"request too long (at most {MAX_REQUEST // 1024} KiB)")
    try:
        req = json.loads(line, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise BadRequest("JSON nested too deeply") from None
    except ValueError as e:  # (json.JSONDecodeError, UnicodeDecodeError, NaN, over-long integers)
        why = "an integer is too long" if "integer string conversion" in str(e) else _shorten(str(e), 120)
        raise BadRequest(f"not valid JSON: {why}") from None
    if not isinstance(req, dict) or not isinstance(req.get("op"), str):
        raise BadRequest('a request is a JSON object with an "op"')
    op = req.pop("op")
    schema = OPS.get(op)
    if schema is None:
        raise ProtocolError(f"unknown request {_shorten(op)!r}")
    progress = req.pop("progress", False)
    _BOOL.validate("progress", progress)
    unknown = sorted(set(req) - set(schema))
    if unknown:
        raise BadRequest(f"{op} takes no argument {_shorten(unknown[0])!r}"
                         + (f" (it takes {', '.join(schema)})" if schema else ""))
    for name, arg in schema.items():
        arg.validate(name, req.get(name))
    if op in ONE_OF and all(req.get(a) is None for a in ONE_OF[op]):
        raise BadRequest(f"{op} needs {' or '.join(ONE_OF[op])}")
    return op, req, bool(progress)
