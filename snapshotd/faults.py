"""Crash points for fault-injection tests.

SNAPSHOTD_CRASH_AT=NAME (or NAME:N for the N-th time it is reached) makes
the process SIGKILL itself at that point, exactly as a node failure or
`kill -9` would stop it there.  Unset (always, in production) this is one
dictionary lookup.  The names are listed in docs/FORMAT.md ("Crash safety")."""
from __future__ import annotations

import os
import signal

_spec = os.environ.get("SNAPSHOTD_CRASH_AT", "")
_name, _, _nth = _spec.partition(":")
_want = int(_nth) if _nth.isdigit() else 1
_hits = 0


def crashpoint(name: str) -> None:
    global _hits
    if _name and name == _name:
        _hits += 1
        if _hits >= _want:
            os.kill(os.getpid(), signal.SIGKILL)
