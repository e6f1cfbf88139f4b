#!/usr/bin/env python3
"""Process-tree benchmark: NPROC processes sharing SIZE MiB.

    python3 benchmarks/bench_tree.py [--size-mib 1024] [--nproc 8] [--json] [--tmpdir DIR]

Starts benchmarks/treehog.c: half of SIZE MAP_SHARED|MAP_ANONYMOUS, half
private anonymous shared copy-on-write after fork (every child reads all of
it); even MiB blocks pseudo-random, odd ones zeros.  Measures:
  dump     wall time around `snapshotd --store TMP dump ROOT --json`, plus wall_s/frozen_s
  stored   stored_bytes from that JSON (shared pages must be stored once: compare
           with SIZE/2 of random data)
  restore  after kill -9 of every process and waiting for the PIDs: wall time
           around `snapshotd --store TMP restore ID --json`, plus wall_s
  verify   every restored process is alive and the checksum it writes on SIGUSR1
           equals the one it wrote before the dump
  memory   Rss and Pss summed over the tree (smaps_rollup) before the dump and
           after the restore: Pss shows whether copy-on-write sharing survived
Everything started is killed by PID in a finally block.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def wait_for(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def sums(d: str, pids: list[int]) -> list[str]:
    for f in os.listdir(d):
        if f.startswith("sum."):
            os.unlink(os.path.join(d, f))
    for p in pids:
        os.kill(p, signal.SIGUSR1)
    out = []
    for i in range(len(pids)):
        path = os.path.join(d, f"sum.{i}")
        wait_for(lambda: os.path.exists(path), 120, f"checksum {i}")
        out.append(open(path).read().strip())
    return out


def memory_mib(pids: list[int]) -> tuple[float, float]:
    """Sum over pids of Rss and Pss (/proc/PID/smaps_rollup), in MiB: Pss
    counts a page shared by n processes as 1/n, so the Pss sum is the
    tree's real footprint; Rss counts it n times."""
    rss = pss = 0
    for p in pids:
        with open(f"/proc/{p}/smaps_rollup") as f:
            for line in f:
                k, _, rest = line.partition(":")
                if k == "Rss":
                    rss += int(rest.split()[0])
                elif k == "Pss":
                    pss += int(rest.split()[0])
    return round(rss / 1024, 1), round(pss / 1024, 1)


def cli(store: str, *args: str) -> tuple[dict, float]:
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "snapshotd", "--store", store, "--json", *args],
                         capture_output=True, text=True, cwd=ROOT)
    wall = time.monotonic() - t0
    if res.returncode:
        raise RuntimeError(f"snapshotd {' '.join(args)} failed: {res.stderr.strip()}")
    return json.loads(res.stdout), wall


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--nproc", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--tmpdir")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="snapshotd-bench-tree-", dir=a.tmpdir)
    exe, store, d = os.path.join(tmp, "treehog"), os.path.join(tmp, "store"), os.path.join(tmp, "run")
    os.makedirs(d)
    subprocess.run(["gcc", "-O2", "-o", exe, os.path.join(HERE, "treehog.c")], check=True)
    pids: list[int] = []
    proc = None
    try:
        proc = subprocess.Popen([exe, str(a.size_mib), str(a.nproc), d], start_new_session=True)
        pids = [int(wait_for(lambda i=i: os.path.exists(f"{d}/ready.{i}") and open(f"{d}/ready.{i}").read().strip(),
                             300, f"process {i}")) for i in range(a.nproc)]
        before = sums(d, pids)
        rss_before, pss_before = memory_mib(pids)
        dumped, dump_wall = cli(store, "dump", str(pids[0]))
        assert sorted(dumped["pids"]) == sorted(pids), dumped["pids"]
        assert sums(d, pids) == before, "the dumped tree changed"
        for p in pids:
            os.kill(p, signal.SIGKILL)
        proc.wait()
        wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in pids), 30, "the tree to be gone")
        restored, restore_wall = cli(store, "restore", dumped["id"])
        after = sums(d, pids)
        rss_after, pss_after = memory_mib(pids)
        r = {
            "size_mib": a.size_mib, "nproc": a.nproc,
            "dump_wall_cli_s": round(dump_wall, 3), "dump_wall_s": dumped["wall_s"], "frozen_s": dumped["frozen_s"],
            "pages_dumped": dumped["pages"], "stored_bytes": dumped["stored_bytes"],
            "stored_mib": round(dumped["stored_bytes"] / 2**20, 1),
            "restore_wall_cli_s": round(restore_wall, 3), "restore_wall_s": restored["wall_s"],
            "rss_before_mib": rss_before, "pss_before_mib": pss_before,
            "rss_restored_mib": rss_after, "pss_restored_mib": pss_after,
            "checksums_equal": after == before,
        }
        if a.json:
            print(json.dumps(r))
        else:
            for k, v in r.items():
                print(f"{k:20} {v}")
        return 0 if after == before else 1
    finally:
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc is not None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
