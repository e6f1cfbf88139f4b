"""An MPI job (MPICH from PyPI: `pip install mpich mpi4py`, the [mpi] extra)
dumped as one tree mid-run -- mpiexec, its hydra proxy and 4 ranks --, every
process killed, the tree restored: the job finishes with the same result as
an uninterrupted run.

What the tree holds (seen with ls -l /proc/PID/fd and ss on MPICH 5.0.2,
ch4:ucx): a unix socketpair between mpiexec and the proxy whose proxy end
every rank inherits (one description in 5 processes), one unix socketpair
per rank to the proxy (PMI), a TCP listener of mpiexec on 0.0.0.0 inherited
by all, pipes for stdin/stdout/stderr of each rank through the proxy, and in
each rank: epoll fds, UCX's TCP listeners and abstract unix datagram
sockets, /dev/shm/mpich_shm_* (mapped by all ranks) and UCX's deleted
/dev/shm/ucx_shm_posix_* files, SysV shared memory segments, and a UCX
progress thread.  No MPICH or UCX setting is needed: everything is restored
as is.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import zdtm_harness as H
from test_zdtm_tree import tree_pids
from zdtm_harness import dump, wait_gone

pytest.importorskip("mpi4py")
BIN = Path(sys.executable).parent
MPIEXEC = BIN / "mpiexec"
APP = Path(__file__).resolve().parent / "mpi" / "app.py"
NPROCS, STEPS, DUMP_AT = 4, 150, 40
if not MPIEXEC.exists():
    pytest.skip("mpiexec (MPICH from PyPI) is not installed in this environment", allow_module_level=True)


def start(outdir: Path) -> subprocess.Popen:
    outdir.mkdir(parents=True, exist_ok=True)
    with open(outdir / "out.log", "ab") as log:
        proc = subprocess.Popen([str(MPIEXEC), "-n", str(NPROCS), sys.executable, str(APP), str(outdir), str(STEPS)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=str(outdir),
                                start_new_session=True)
    H.STARTED_PIDS.add(proc.pid)
    return proc


def wait_for(path: Path, timeout: float, what: str, log: Path) -> str:
    end = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > end:
            pytest.fail(f"{what} did not appear within {timeout} s\n{H._read(log)[-3000:]}", pytrace=False)
        time.sleep(0.02)
    return path.read_text()


def shm_files(pids: list[int]) -> set[str]:
    """Named /dev/shm files the job has open (MPICH unlinks them only at
    finalize: a killed job leaves them behind)."""
    out = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("/dev/shm/") and not link.endswith(" (deleted)"):
                    out.add(link)
        except OSError:
            pass
    return out


def test_mpiexec_job_dump_kill_restore(tmp_path, store):
    # the reference: the same job, uninterrupted
    ref = start(tmp_path / "ref")
    assert ref.wait(timeout=120) == 0, H._read(tmp_path / "ref" / "out.log")
    want = (tmp_path / "ref" / "result").read_text()

    run = tmp_path / "run"
    job = start(run)
    leftovers: set[str] = set()
    try:
        end = time.monotonic() + 60
        while int(wait_for(run / "step", 60, "the job's first steps", run / "out.log") or 0) < DUMP_AT:
            assert time.monotonic() < end and job.poll() is None, H._read(run / "out.log")
            time.sleep(0.02)
        pids = tree_pids(job.pid)
        H.STARTED_PIDS.update(pids)
        assert len(pids) == 2 + NPROCS, f"expected mpiexec, a hydra proxy and {NPROCS} ranks, got {pids}"
        leftovers = shm_files(pids)
        snap = dump(store, job.pid)
        step_at_dump = int((run / "step").read_text())
        assert step_at_dump < STEPS - 10, "the job was nearly done at dump time: not a mid-run dump"

        for pid in pids:
            H.kill_pid(pid)
        job.wait(timeout=H.GONE_TIMEOUT)
        for pid in pids:
            wait_gone(pid)
        assert not (run / "result").exists()

        res = H.run_cli(store, "restore", snap)
        assert res.returncode == 0, f"restore failed\n{res.stdout}\n{res.stderr}"
        assert sorted(tree_pids(job.pid)) == sorted(pids), "the restored tree differs from the dumped one"
        got = wait_for(run / "result", 120, "the restored job's result", run / "out.log")
        assert got == want, f"restored job computed {got!r}, uninterrupted run {want!r}"
        for pid in pids:
            wait_gone(pid, timeout=30)
    finally:
        for pid in tree_pids(job.pid) if job.poll() is None else []:
            H.kill_pid(pid)
        for f in leftovers:
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass
