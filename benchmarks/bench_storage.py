#!/usr/bin/env python3
"""Storage benchmark (issue 3): what a chain and a store-wide dedup cost.

    python3 benchmarks/bench_storage.py [--size-mib 1024] [--json] [--tmpdir DIR]

Starts benchmarks/memhog.c (SIZE MiB: half zeros, a quarter random, a quarter
a repeated pattern; the same bytes in every instance) and reports, in one run:
  full         stored bytes of `snapshotd dump PID`, against resident memory
  unchanged    stored bytes + snapshot file size of `dump PID --parent latest`
               with nothing changed, against the full snapshot
  four         total stored bytes of 4 identical memhogs dumped into one fresh
               store, against one of them
  write        the storage layer alone, measured first (after sync(2), so no
               writeback of earlier work competes): the memhog's resident memory,
               read once into a buffer, handed to SnapshotWriter (hash, dedup,
               compress, write, fsync, commit) into a fresh store; GB/s of
               resident memory
Targets: full <= 30 % of resident, unchanged <= 1 % of full, four <= 1.1x one,
write >= 1 GB/s.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from bench_dump_restore import read_text, resident_runs, snapshotd, status_kib, wait_for  # noqa: E402

TARGETS = {"full/resident": 0.30, "unchanged/full": 0.01, "four/one": 1.1, "write GB/s": 1.0}


def start_hog(exe: str, size_mib: int, tmp: str, n: int) -> subprocess.Popen:
    ready = os.path.join(tmp, f"ready{n}")
    hog = subprocess.Popen([exe, str(size_mib), ready, os.path.join(tmp, f"sum{n}")],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: read_text(ready), 600, f"memhog {n} to fill its memory")
    return hog


def dump_json(store: str, *args: str) -> dict:
    _, p = snapshotd(store, "dump", *args)
    if p.returncode:
        raise RuntimeError(f"dump {args} failed: {p.stderr.strip()}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def write_throughput(pid: int, store: str) -> tuple[float, int]:
    """Seconds for SnapshotWriter to take pid's resident memory (already in
    a buffer) and commit it; and the bytes handed over."""
    from snapshotd.storage.store import Store

    runs = resident_runs(pid)
    total = sum(n for _, n in runs)
    buf = np.ones(total, dtype=np.uint8)  # pre-touched
    addrs = np.concatenate([np.arange(a, a + n, 4096, dtype=np.uint64) for a, n in runs])
    off = 0
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for a, n in runs:
            mem.seek(a)
            mem.readinto(memoryview(buf)[off:off + n])
            off += n
    st = Store(store)
    t0 = time.perf_counter()
    sid, w = st.writer(pid)
    step = 8192 * 4096
    for i in range(0, total, step):
        data = buf[i:i + step]
        # hashed here; zero pages get the zero reference, nothing stored
        w.add_pages(pid, addrs[i // 4096:(i + len(data)) // 4096], data)
    w.commit({"version": 1, "processes": []})
    return time.perf_counter() - t0, total


def run(size_mib: int, tmpdir: str | None) -> dict:
    tmp = tempfile.mkdtemp(prefix="snapshotd-bench-storage-", dir=tmpdir)
    res: dict = {"size_mib": size_mib}
    hogs = []
    try:
        exe = os.path.join(tmp, "memhog")
        subprocess.run(["gcc", "-O2", "-Wall", "-o", exe, os.path.join(HERE, "memhog.c")], check=True)
        hogs.append(start_hog(exe, size_mib, tmp, 0))
        pid = hogs[0].pid
        res["resident_bytes"] = status_kib(pid, "VmRSS") * 1024
        # the storage layer alone first, on a quiet disk (os.sync: no writeback of
        # earlier work competing with it)
        os.sync()
        res["write_s"], res["write_bytes"] = write_throughput(pid, os.path.join(tmp, "storew"))
        store = os.path.join(tmp, "store")
        full = dump_json(store, str(pid))
        res["full_stored"] = full["stored_bytes"]
        second = dump_json(store, str(pid), "--parent", "latest")
        snapfile = os.path.join(store, "snapshots", second["id"] + ".h5")
        res["unchanged_stored"] = second["stored_bytes"]
        res["unchanged_file"] = os.path.getsize(snapfile)
        for n in range(1, 4):
            hogs.append(start_hog(exe, size_mib, tmp, n))
        store4 = os.path.join(tmp, "store4")
        res["four_each"] = [dump_json(store4, str(h.pid))["stored_bytes"] for h in hogs]
    finally:
        for h in hogs:
            h.kill()
            h.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    r = res
    res["ratios"] = {
        "full/resident": r["full_stored"] / r["resident_bytes"],
        "unchanged/full": (r["unchanged_stored"] + r["unchanged_file"]) / r["full_stored"],
        "four/one": sum(r["four_each"]) / r["four_each"][0],
        "write GB/s": r["write_bytes"] / r["write_s"] / 1e9,
    }
    return res


def table(res: dict) -> str:
    mib = 1 << 20
    r = res
    lines = ["| measure | value |", "|---|---|",
             f"| resident | {r['resident_bytes'] / mib:.1f} MiB |",
             f"| full snapshot stored | {r['full_stored'] / mib:.1f} MiB |",
             f"| unchanged snapshot: new data + snapshot file | {r['unchanged_stored']} B + "
             f"{r['unchanged_file'] / 1024:.1f} KiB |",
             f"| four identical processes, stored each | "
             f"{', '.join(f'{x / mib:.2f} MiB' for x in r['four_each'])} |",
             f"| storage layer alone | {r['write_bytes'] / mib:.0f} MiB in {r['write_s']:.3f} s |",
             "", "| ratio | value | target | met |", "|---|---|---|---|"]
    for k, v in r["ratios"].items():
        t = TARGETS[k]
        ok = v >= t if k == "write GB/s" else v <= t
        pct = k in ("full/resident", "unchanged/full")
        shown = f"{v * 100:.2f} %" if pct else f"{v:.3f}"
        tshown = f"{t * 100:.0f} %" if pct else f"{t}"
        lines.append(f"| {k} | {shown} | {'>=' if k == 'write GB/s' else '<='} {tshown} | {'yes' if ok else 'NO'} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--tmpdir")
    a = ap.parse_args()
    res = run(a.size_mib, a.tmpdir)
    print(json.dumps(res, indent=1) if a.json else table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
