"""Exact or refused (issue 16): state snapshotd does not restore yet is
refused at dump with one clear line naming the PID and the feature, and the
process runs on; a process stopped by SIGSTOP (as `scontrol suspend` stops
jobs) comes back stopped."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import zdtm_harness as zh

SRC = Path(__file__).resolve().parent / "progs" / "refused_state.c"

CASES = {  # feature -> what the refusal must say
    "timer": "POSIX timer",
    "seccomp": "seccomp",
    "thp": "PR_SET_THP_DISABLE",
    "pdeathsig": "parent-death signal",
    "mlock": "mlock",
    "sequential": "MADV_SEQUENTIAL",
    "thread-gid": "other credentials",
    "clone-files": "CLONE_FILES",
    "deleted-cwd": "removed directory",
    "deleted-dir-fd": "removed directory",
}


@pytest.fixture(scope="module")
def prog(tmp_path_factory):
    out = tmp_path_factory.mktemp("refused") / "refused_state"
    res = subprocess.run(["gcc", "-O1", "-pthread", "-Wall", "-o", str(out), str(SRC)], capture_output=True, text=True)
    if res.returncode:
        pytest.fail(f"building refused_state.c failed:\n{res.stderr}", pytrace=False)
    return out


@pytest.mark.parametrize("feature", sorted(CASES))
def test_state_not_restored_yet_is_refused_at_dump(prog, tmp_path, store, feature):
    ready = tmp_path / "ready"
    p = subprocess.Popen([str(prog), feature, str(ready)], stdin=subprocess.DEVNULL, start_new_session=True)
    zh.STARTED_PIDS.add(p.pid)
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert p.poll() is None, f"refused_state {feature} could not set up its state (exit {p.returncode})"
            assert time.monotonic() < deadline, "refused_state never got ready"
            time.sleep(0.01)
        msg = zh.assert_cli_fails(store, "dump", str(p.pid), "--kill")
        assert str(p.pid) in msg and CASES[feature] in msg, msg
        assert p.poll() is None, "the refused dump killed the process"
        assert zh.proc_state(p.pid) not in ("t", "T"), "the refused dump left the process stopped"
        assert not list((Path(store) / "snapshots").glob("*.h5")), "a refused dump left a snapshot"
    finally:
        for c in Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split() if p.poll() is None else []:
            zh.kill_pid(int(c))
        p.kill()
        p.wait()


def test_a_stopped_process_comes_back_stopped(tmp_path, store):
    statedir = tmp_path / "sig_handlers"
    statedir.mkdir()
    prog = zh.Program("sig_handlers", statedir)
    prog.start()
    prog.wait_file("ready", zh.READY_TIMEOUT)
    os.kill(prog.pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while zh.proc_state(prog.pid) != "T":
        assert time.monotonic() < deadline, "SIGSTOP did not stop it"
        time.sleep(0.01)
    snap = zh.dump(store, prog.pid)
    assert zh.proc_state(prog.pid) == "T", "the dump woke a stopped process"
    prog.kill()
    zh.restore(store, snap, prog.pid)
    prog.restored = True
    time.sleep(0.2)
    assert zh.proc_state(prog.pid) == "T", f"restored {zh.proc_state(prog.pid)}, not stopped"
    os.kill(prog.pid, signal.SIGCONT)
    (statedir / "go").write_text("go\n")
    result = prog.wait_file("result", zh.RESULT_TIMEOUT).read_text().strip()
    assert result == "PASS", prog.report(f"result: {result}")
