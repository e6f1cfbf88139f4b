"""Drive tests/progs/genwriter.c: a program whose memory moves through
numbered generations (see its header).  Used by the storage tests."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from zdtm_harness import (STARTED_PIDS, TESTS_DIR, _cli_report, build_dir, kill_pid, last_line, run_cli,
                          wait_gone)

_built: dict[str, Path] = {}


def binary() -> Path:
    if "genwriter" not in _built:
        out = build_dir() / "genwriter"
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(out), str(TESTS_DIR / "progs" / "genwriter.c")],
                       check=True, capture_output=True)
        _built["genwriter"] = out
    return _built["genwriter"]


class Gen:
    """One running genwriter with its state directory."""

    def __init__(self, statedir: Path, npages: int = 2048, seed: int = 1):
        self.dir = statedir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.npages, self.seed = npages, seed
        self.proc = subprocess.Popen([str(binary()), str(statedir), str(npages), str(seed)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.proc.pid
        STARTED_PIDS.add(self.pid)
        self._wait(lambda: (self.dir / "ready").exists(), "ready")
        self.restored = False

    def _wait(self, cond, what: str, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                pytest.fail(f"genwriter {self.pid}: no {what} after {timeout}s", pytrace=False)
            time.sleep(0.005)

    def state(self) -> tuple[int, str]:
        g, s = (self.dir / "gen").read_text().split()
        return int(g), s

    def advance(self) -> tuple[int, str]:
        """Next generation; returns (gen, checksum) once it is reached."""
        g0 = self.state()[0]
        os.kill(self.pid, signal.SIGUSR1)
        self._wait(lambda: self.state()[0] == g0 + 1, f"generation {g0 + 1}")
        return self.state()

    def kill(self) -> None:
        kill_pid(self.pid)
        if not self.restored:
            self.proc.wait(timeout=10)
        else:
            wait_gone(self.pid)

    def finish(self) -> str:
        """Ask for the self-check; returns the result line."""
        (self.dir / "go").write_text("go\n")
        self._wait(lambda: (self.dir / "result").exists(), "result", 30)
        res = (self.dir / "result").read_text().strip()
        (self.dir / "go").unlink()
        (self.dir / "result").unlink()
        if self.restored:
            wait_gone(self.pid)
        else:
            self.proc.wait(timeout=10)
        return res


def cli_ok(store, *args) -> str:
    res = run_cli(store, *args)
    assert res.returncode == 0, f"snapshotd {' '.join(args)} failed\n{_cli_report(res)}"
    return res.stdout


def cli_json(store, *args):
    return json.loads(cli_ok(store, *args, "--json"))


def dump(store, pid: int, *extra) -> dict:
    return cli_json(store, "dump", str(pid), *extra)


def restore_and_check(store, snap: str, g: Gen, want: tuple[int, str]) -> None:
    """Kill g, restore snap, and check the restored program reports the
    generation and checksum `want` with every page intact."""
    g.kill()
    out = last_line(cli_ok(store, "restore", snap))
    assert out == str(g.pid)
    STARTED_PIDS.add(g.pid)
    g.restored = True
    res = g.finish()
    assert res == f"PASS {want[0]} {want[1]}", f"restored {snap}: {res}, expected generation {want}"
