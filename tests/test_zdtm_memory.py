"""ZDTM memory tests: each program keeps some kind of memory across C/R."""

import os
from pathlib import Path

import pytest

from zdtm_harness import READY_TIMEOUT, RESULT_TIMEOUT, Program, restore, run_cli, run_zdtm

MEMORY_PROGRAMS = [
    "mem_private_anon",   # private anonymous pattern + read-only area
    "mem_shared_anon",    # MAP_SHARED|MAP_ANONYMOUS, two views
    "mem_file_private",   # MAP_PRIVATE file, COWed and clean pages
    "mem_file_shared",    # MAP_SHARED regular file in STATEDIR
    "mem_file_shm",       # MAP_SHARED file on /dev/shm
    "mem_file_deleted",   # mappings of unlinked files
    "mem_prot_none",      # PROT_NONE guards and data behind PROT_NONE
    "mem_sparse",         # 1 GiB MAP_NORESERVE, 1/64 pages touched
    "mem_stack",          # deep recursion
    "mem_heap",           # malloc'd tree and list
]


@pytest.mark.parametrize("name", MEMORY_PROGRAMS)
def test_memory(name, tmp_path, store):
    run_zdtm(name, tmp_path, store)


# The same programs captured copy-on-write (small ones are otherwise read
# while frozen): the held child writes its pages into a ring itself, and
# pages it cannot read (data behind PROT_NONE) come through /proc/PID/mem.
@pytest.mark.parametrize("name", ["mem_private_anon", "mem_file_private", "mem_prot_none", "mem_sparse",
                                  "mem_stack", "mem_heap"])
def test_memory_cow(name, tmp_path, store):
    run_zdtm(name, tmp_path, store, dump_args=("--capture", "cow"))


def _memory_cgroup(name: str) -> tuple[Path, str] | None:
    """A new memory cgroup (v1 or v2) and the name of its limit file."""
    if os.path.isdir("/sys/fs/cgroup/memory"):
        d, limit = Path("/sys/fs/cgroup/memory") / name, "memory.limit_in_bytes"
    elif "memory" in Path("/sys/fs/cgroup/cgroup.subtree_control").read_text():
        d, limit = Path("/sys/fs/cgroup") / name, "memory.max"
    else:
        return None
    d.mkdir()
    return d, limit


def test_memory_cow_tight_cgroup(tmp_path, store):
    """A job whose memory cgroup has no room for the capture child's ring
    (64 MiB) is still dumped copy-on-write, through /proc/PID/mem, and says
    so; the restored program checks its memory."""
    statedir = tmp_path / "mem_private_anon"
    statedir.mkdir()
    prog = Program("mem_private_anon", statedir)
    prog.start()
    got = _memory_cgroup(f"snapshotd-test-{prog.pid}")
    if got is None:
        prog.kill()
        pytest.skip("no memory cgroup controller")
    cg, limit = got
    try:
        (cg / limit).write_text(str(96 << 20))
        (cg / "cgroup.procs").write_text(str(prog.pid))
        prog.wait_file("ready", READY_TIMEOUT)
        res = run_cli(store, "dump", str(prog.pid), "--capture", "cow")
        assert res.returncode == 0, res.stderr
        assert "read through /proc/PID/mem: its memory cgroup has no" in res.stderr, res.stderr
        snap = res.stdout.strip().splitlines()[-1]
        prog.kill()
        restore(store, snap, prog.pid)
        prog.restored = True
        (statedir / "go").write_text("go\n")
        assert (prog.wait_file("result", RESULT_TIMEOUT)).read_text().strip() == "PASS", prog.report("result")
        prog.wait_exit()
    finally:
        if prog.alive():
            prog.kill()
        cg.rmdir()
