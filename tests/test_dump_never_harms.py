"""A dump never harms the job, whatever happens to snapshotd (issue 16, item 0).

snapshotd is killed with SIGKILL (as the OOM killer or an impatient admin
would) at every step of its self-restoring syscall injections
(SNAPSHOTD_INJECT_DIE, engine/csrc/inject.c) and at random moments of whole
dumps; after each, the job's program must run on unharmed: not killed, not
left stopped, no capture child left running, and at the end it verifies its
own registers, signal state and memory (the zdtm protocol) and passes.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

import zdtm_harness as zh


def children(pid: int) -> list[int]:
    out = []
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
        except OSError:
            pass
    return out


def live_children(pid: int) -> list[int]:
    """Children that are not zombies (a capture child killed with its tracer
    is a zombie with exit signal 0 until the job exits: it runs no code)."""
    return [c for c in children(pid) if zh.proc_state(c) not in (None, "Z", "X")]


def assert_unharmed(prog: zh.Program, kids_before: list[int], what: str) -> None:
    deadline = time.monotonic() + 5
    while True:  # a dead tracer's threads are let go by the kernel at its exit
        state = zh.proc_state(prog.pid)
        if state not in ("t", "T") or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert prog.alive(), prog.report(f"killed by {what}")
    assert state not in ("t", "T"), prog.report(f"left stopped ({state}) by {what}")
    while sorted(live_children(prog.pid)) != sorted(kids_before) and time.monotonic() < deadline:
        time.sleep(0.01)  # a held child gets its SIGKILL (PTRACE_O_EXITKILL) as the tracer exits
    assert sorted(live_children(prog.pid)) == sorted(kids_before), \
        prog.report(f"a child left running by {what}: {live_children(prog.pid)} (before: {kids_before})")


def dump_killed(store, pid: int, env: dict | None = None, after: float | None = None, args: tuple = ()) -> int:
    """Run `snapshotd dump PID`; with `after`, SIGKILL it after that many
    seconds.  Returns its exit status."""
    p = subprocess.Popen(zh.cli_command(store, "dump", str(pid), *args), stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(zh.REPO_DIR),
                         env={**os.environ, **(env or {})})
    if after is not None:
        time.sleep(after)
        p.send_signal(signal.SIGKILL)
    try:
        _, err = p.communicate(timeout=zh.CLI_TIMEOUT)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        pytest.fail(f"dump of {pid} hung", pytrace=False)
    if p.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"dump of {pid} failed ({p.returncode}): {err.decode()[-2000:]}", pytrace=False)
    return p.returncode


def finish(prog: zh.Program) -> None:
    (prog.statedir / "go").write_text("go\n")
    result = prog.wait_file("result", zh.RESULT_TIMEOUT).read_text().strip()
    assert result == "PASS", prog.report(f"result: {result}")
    prog.wait_exit()


def start(name: str, tmp_path) -> zh.Program:
    statedir = Path(tmp_path) / name
    statedir.mkdir(parents=True)
    prog = zh.Program(name, statedir)
    prog.start()
    prog.wait_file("ready", zh.READY_TIMEOUT)
    return prog


# the n-th self-restoring call of a dump: 1 maps the scratch area, the middle
# ones ask the process for its state (per thread too), the clone of the
# copy-on-write child is one of the last, and the scratch area's munmap the last
CALLS = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89)


@pytest.mark.parametrize("name", ["regs_vector", "thread_sigmask", "sig_altstack"])
def test_snapshotd_killed_at_each_injection_step(tmp_path, store, name):
    prog = start(name, tmp_path)
    kids = live_children(prog.pid)
    killed = 0
    for call in CALLS:
        for step in range(1, 9):
            rc = dump_killed(store, prog.pid, {"SNAPSHOTD_INJECT_DIE": f"{call}:{step}"})
            killed += rc == -signal.SIGKILL
            assert_unharmed(prog, kids, f"snapshotd killed at step {step} of injection {call}")
    assert killed >= 3 * 8, f"only {killed} dumps reached their kill point"  # the test tested something
    # and a dump after all that still works and restores the program exactly
    snap = zh.dump(store, prog.pid)
    prog.kill()
    zh.restore(store, snap, prog.pid)
    prog.restored = True
    finish(prog)


def scratch_areas(pid: int) -> list[str]:
    """Mappings that look like snapshotd's scratch area (kernel/inject.py)."""
    from snapshotd.kernel import inject

    return [ln for ln in Path(f"/proc/{pid}/maps").read_text().splitlines()
            if " rwxp " in ln and int(ln.split("-")[1].split()[0], 16) - int(ln.split("-")[0], 16)
            == inject.SCRATCH_SIZE]


def injected_fds(pid: int) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if "userfaultfd" in link:
            out.append(f"{fd} -> {link}")
    return out


def test_a_scratch_area_left_by_a_killed_dump_is_removed_by_the_next(tmp_path, store):
    prog = start("mem_heap", tmp_path)
    assert dump_killed(store, prog.pid, {"SNAPSHOTD_CRASH_AT": "dump-infected"}) == -signal.SIGKILL
    assert_unharmed(prog, [], "snapshotd killed with its scratch area mapped")
    assert len(scratch_areas(prog.pid)) == 1  # what the kill left
    snap = zh.dump(store, prog.pid)
    assert scratch_areas(prog.pid) == [], "the next dump left the old scratch area in place"
    prog.kill()
    zh.restore(store, snap, prog.pid)
    prog.restored = True
    assert scratch_areas(prog.pid) == []
    finish(prog)


@pytest.mark.parametrize("point", ["dump-frozen", "dump-cow-child", "dump-copy-loop", "dump-cow-release"])
def test_snapshotd_killed_while_a_capture_child_is_held(tmp_path, store, point):
    """Killed while the tree is frozen, right after the copy-on-write child
    is made, while the child copies, and while it is being released
    (faults.crashpoint): the job runs on, and the child never runs its code."""
    prog = start("mem_heap", tmp_path)
    kids = live_children(prog.pid)
    rc = dump_killed(store, prog.pid, {"SNAPSHOTD_CRASH_AT": point}, args=("--capture", "cow"))
    assert rc == -signal.SIGKILL, f"the dump did not reach {point}"
    assert_unharmed(prog, kids, f"snapshotd killed at {point}")
    finish(prog)


def test_snapshotd_killed_at_random_moments_of_dumps(tmp_path, store):
    """Whole dumps of a process with 64 MiB of heap (copy-on-write child,
    its copy loop, page reading, commit), killed at random moments."""
    prog = start("mem_heap", tmp_path)
    kids = live_children(prog.pid)
    t0 = time.monotonic()
    zh.dump(store, prog.pid)
    full = time.monotonic() - t0
    rng = random.Random(1207)
    for i in range(25):
        dump_killed(store, prog.pid, after=rng.uniform(0.0, full), args=("--capture", rng.choice(["cow", "auto"])))
        assert_unharmed(prog, kids, f"snapshotd killed at a random moment (try {i})")
    finish(prog)


@pytest.mark.parametrize("fault", [{"SNAPSHOTD_INJECT_DIE": "1:3"}, {"SNAPSHOTD_INJECT_DIE": "30:4"},
                                   {"SNAPSHOTD_INJECT_DIE": "70:6"}, {"SNAPSHOTD_CRASH_AT": "dump-frozen:2"}])
def test_the_daemon_killed_mid_round_leaves_the_job_unharmed(tmp_path, root, fault):
    """The daemon dies (SIGKILL) inside a round: first rounds, and a later
    one with its dirty-page tracker held; the job runs on, and a restarted
    daemon carries on with its rounds."""
    from daemon_harness import Daemon

    prog = start("regs_vector", tmp_path)
    d = Daemon(root)
    d.start(env=fault)
    try:
        d.ok("register", str(prog.pid), "--every", "1s")
        try:
            d.p.wait(timeout=40)  # it kills itself at the fault
        except subprocess.TimeoutExpired:
            pytest.fail(f"the daemon never reached {fault}", pytrace=False)
        assert d.p.returncode == -signal.SIGKILL, d.log_text()[-3000:]
        d.log.close()
        assert_unharmed(prog, [], f"the daemon killed at {fault}")
        assert injected_fds(prog.pid) == [], "a descriptor made by an injected call was left in the job"
        d.start()  # registrations are kept: rounds go on
        n = len(d.snapshots())
        deadline = time.monotonic() + 30
        while len(d.snapshots()) < n + 2:
            assert time.monotonic() < deadline, "no two more rounds:\n" + d.log_text()[-4000:]
            time.sleep(0.1)
        assert_unharmed(prog, [], "rounds after the restart")
    finally:
        d.close()
    finish(prog)


def test_a_probe_child_dies_with_its_parent(tmp_path):
    """A feature probe's forked child (kernel/probes.py) must not outlive a
    daemon killed during the probe, nor hold its files."""
    import sys

    code = ("import os, signal, sys; from snapshotd.kernel import probes\n"
            "keep = open(sys.argv[1], 'w')\n"
            "with probes._Child() as c:\n"
            "    print(c.pid, flush=True)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    held = tmp_path / "held"
    res = subprocess.run([sys.executable, "-c", code, str(held)], capture_output=True, text=True,
                         cwd=str(zh.REPO_DIR), timeout=60)
    assert res.returncode == -signal.SIGKILL and res.stdout.strip().isdigit(), res
    child = int(res.stdout)
    deadline = time.monotonic() + 5
    while zh.proc_state(child) not in (None, "Z", "X") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert zh.proc_state(child) in (None, "Z", "X"), f"the probe child {child} outlived its parent"
