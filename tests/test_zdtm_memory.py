"""ZDTM memory tests: each program keeps some kind of memory across C/R."""

import json
import resource

import pytest

from zdtm_harness import READY_TIMEOUT, RESULT_TIMEOUT, Program, last_line, restore, run_cli, run_zdtm

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
    "mem_zero_pages",     # zero pages among pages zero but for one byte
]


@pytest.mark.parametrize("name", MEMORY_PROGRAMS)
def test_memory(name, tmp_path, store):
    run_zdtm(name, tmp_path, store)


# The same programs captured copy-on-write (small ones are otherwise read
# while frozen): their pages come from the held child, data behind PROT_NONE
# included.
@pytest.mark.parametrize("name", ["mem_private_anon", "mem_file_private", "mem_prot_none", "mem_sparse",
                                  "mem_stack", "mem_heap", "mem_zero_pages"])
def test_memory_cow(name, tmp_path, store):
    run_zdtm(name, tmp_path, store, dump_args=("--capture", "cow"))


@pytest.mark.parametrize("how", ["copy loop", "switched off", "fault in the loop", "fd limit 1"])
def test_cow_child_pages_are_read_one_way_or_another(how, tmp_path, store, monkeypatch):
    """The held copy-on-write child copies its own pages into a memory file
    of ours (childcopy.py).  (A process under seccomp is refused at dump
    until filters are restored: tests/test_refused.py.)  Switched off
    (SNAPSHOTD_COPY_LOOP=0), stopped by a real fault in the loop, or refused
    (an fd limit of 1 leaves no room for the socket pair), the pages are read
    through /proc/PID/mem instead, and said so; every way, the restored
    program finds its 64 MiB intact."""
    prog = Program("mem_private_anon", tmp_path / "p")
    prog.statedir.mkdir()
    env = {"switched off": "0", "fault in the loop": "fault"}.get(how)
    if env:
        monkeypatch.setenv("SNAPSHOTD_COPY_LOOP", env)
    prog.start()
    prog.wait_file("ready", READY_TIMEOUT)
    if how == "fd limit 1":
        hard = resource.prlimit(prog.pid, resource.RLIMIT_NOFILE)[1]
        resource.prlimit(prog.pid, resource.RLIMIT_NOFILE, (1, hard))
    res = run_cli(store, "dump", str(prog.pid), "--capture", "cow", "--json")
    assert res.returncode == 0, res.stderr
    assert prog.alive(), prog.report("not running after the dump")
    out = json.loads(last_line(res.stdout))
    assert out["capture"] == "cow"
    said = {"fault in the loop": "stopped at a fault", "fd limit 1": "could not copy its pages itself"}.get(how)
    read_otherwise = [ln for ln in res.stderr.splitlines() if "/mem" in ln]
    if said is None:
        assert not read_otherwise, res.stderr
    else:
        assert len(read_otherwise) == 1 and said in read_otherwise[0], res.stderr
    prog.kill()
    restore(store, out["id"], prog.pid)
    prog.restored = True
    if how == "fd limit 1":  # restored with it: the program needs fds to report
        resource.prlimit(prog.pid, resource.RLIMIT_NOFILE, (hard, hard))
    (prog.statedir / "go").write_text("go\n")
    assert (prog.wait_file("result", RESULT_TIMEOUT).read_text().strip() == "PASS"), prog.report("result")
