#!/usr/bin/env python3
"""Dump/restore benchmark against the memory-copy floor.

    python3 benchmarks/bench_dump_restore.py [--size-mib 1024] [--repeats 3] [--json] [--tmpdir DIR] [--keep]

Starts benchmarks/memhog.c (compiled with gcc into a temporary directory): SIZE MiB,
half written zeros, a quarter random bytes, a quarter a 16-page repeated pattern.
Measures, in one run:
  resident   VmRSS of memhog
  floor      process_vm_readv of all its resident pages (found with /proc/PID/pagemap,
             one iovec per run of present pages) into a pre-touched buffer, best of 3
  dump       wall time around `snapshotd --store TMP dump PID --json` (this Python's -m snapshotd, or
             --command, e.g. the console script of a `pip install .`), plus its wall_s/frozen_s;
             REPEATS full dumps, each into a fresh store: best (as for the floor) and median
  stored     stored_bytes from that JSON and the size of the .h5 file
  restore    after kill -9 and waiting for the PID to be free: wall time around
             `snapshotd --store TMP restore ID --json`, plus its wall_s; REPEATS times
             (kill the restored process, wait for its PID, restore again): best and median
  verify     the restored process is alive and the checksum it writes on SIGUSR1
             equals the one it wrote before the dump
Targets: stored/resident <= 30 %, dump wall/floor <= 4, restore wall/floor <= 4.
The package's bytecode is compiled first, as `pip install .` does: an editable
install under PYTHONDONTWRITEBYTECODE (this machine's environment) would
otherwise compile every module again in each command (~0.07 s).
Everything started is killed by PID in a finally block.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PAGE = 4096
IOV_MAX = 1024
CALL_MAX = 1 << 30
TARGETS = {"stored/resident": 0.30, "dump/floor": 4.0, "restore/floor": 4.0}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.process_vm_readv.restype = ctypes.c_ssize_t
_libc.process_vm_readv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p,
                                   ctypes.c_ulong, ctypes.c_ulong]


def wait_for(pred, timeout: float, what: str, step: float = 0.01):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def status_kib(pid: int, key: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def alive(pid: int) -> bool:
    """True if PID exists and is not a zombie."""
    s = read_text(f"/proc/{pid}/stat")
    return bool(s) and s.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def comm(pid: int) -> str:
    return (read_text(f"/proc/{pid}/comm") or "").strip()


def resident_runs(pid: int) -> list[tuple[int, int]]:
    """(address, length) of every run of present/swapped pages in readable mappings."""
    runs = []
    with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as pm:
        for line in open(f"/proc/{pid}/maps"):
            f = line.split()
            name = f[5] if len(f) > 5 else ""
            if "r" not in f[1] or name in ("[vsyscall]", "[vvar]", "[vvar_vclock]"):
                continue
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            e = np.frombuffer(os.pread(pm.fileno(), (hi - lo) // PAGE * 8, lo // PAGE * 8), dtype=np.uint64)
            present = ((e >> np.uint64(62)) & np.uint64(3)) != 0
            edges = np.flatnonzero(np.diff(np.concatenate(([0], present.view(np.int8), [0]))))
            for a, b in zip(edges[0::2], edges[1::2]):
                runs.append((lo + int(a) * PAGE, int(b - a) * PAGE))
    return runs


def read_floor(pid: int, runs: list[tuple[int, int]], repeats: int = 3) -> tuple[float, list[float]]:
    """Best time to process_vm_readv all runs into one pre-touched buffer."""
    total = sum(n for _, n in runs)
    buf = mmap.mmap(-1, total)
    try:
        base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        ctypes.memset(base, 1, total)  # pre-touch (fresh memory is slow the first time on this VM)
        pieces = [(a + o, min(CALL_MAX, n - o)) for a, n in runs for o in range(0, n, CALL_MAX)]
        batches, off, i = [], 0, 0
        while i < len(pieces):  # <= IOV_MAX iovecs and <= CALL_MAX bytes per call (the kernel caps ~2 GiB)
            chunk, size = [], 0
            while i < len(pieces) and len(chunk) < IOV_MAX and size + pieces[i][1] <= CALL_MAX:
                chunk.append(pieces[i])
                size += pieces[i][1]
                i += 1
            loc = (ctypes.c_uint64 * (2 * len(chunk)))()
            rem = (ctypes.c_uint64 * (2 * len(chunk)))()
            for j, (addr, n) in enumerate(chunk):
                loc[2 * j], loc[2 * j + 1] = base + off, n
                rem[2 * j], rem[2 * j + 1] = addr, n
                off += n
            batches.append((loc, rem, len(chunk), size))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for loc, rem, cnt, size in batches:
                got = _libc.process_vm_readv(pid, loc, cnt, rem, cnt, 0)
                if got != size:
                    e = ctypes.get_errno()
                    raise OSError(e, f"process_vm_readv returned {got} of {size}: {os.strerror(e)}")
            times.append(time.perf_counter() - t0)
        del loc, rem, batches
        return min(times), times
    finally:
        buf.close()


COMMAND = [sys.executable, "-m", "snapshotd"]  # --command replaces it


def snapshotd(store: str, *args: str, timeout: float = 600) -> tuple[float, subprocess.CompletedProcess]:
    cmd = [*COMMAND, "--store", store, *args, "--json"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    return time.perf_counter() - t0, p


def checksum_via_signal(pid: int, path: str, timeout: float = 60) -> str:
    if os.path.exists(path):
        os.unlink(path)
    os.kill(pid, signal.SIGUSR1)
    return wait_for(lambda: (read_text(path) or "").strip(), timeout, f"checksum file from PID {pid}")


def run(size_mib: int, tmpdir: str | None, keep: bool, repeats: int = 3) -> dict:
    import compileall

    compileall.compile_dir(os.path.join(ROOT, "snapshotd"), quiet=1)  # as an installed package has it
    tmp = tempfile.mkdtemp(prefix="snapshotd-bench-", dir=tmpdir)
    store, ready, sumfile = (os.path.join(tmp, n) for n in ("store", "ready", "checksum"))
    res: dict = {"size_mib": size_mib, "tmp": tmp, "errors": []}
    hog = None
    restored_pid = None
    try:
        exe = os.path.join(tmp, "memhog")
        subprocess.run(["gcc", "-O2", "-Wall", "-o", exe, os.path.join(HERE, "memhog.c")], check=True)
        log = open(os.path.join(tmp, "memhog.log"), "w")
        hog = subprocess.Popen([exe, str(size_mib), ready, sumfile], stdin=subprocess.DEVNULL, stdout=log,
                               stderr=log, cwd=tmp)
        log.close()
        pid = hog.pid
        res["pid"] = pid

        def ready_text():
            if hog.poll() is not None:
                raise RuntimeError(f"memhog exited with {hog.returncode}: {read_text(log.name)}")
            return read_text(ready)
        t0 = time.perf_counter()
        first_sum = wait_for(ready_text, 600, "memhog to fill its memory").split()[1]
        res["fill_s"] = time.perf_counter() - t0
        res["resident_bytes"] = status_kib(pid, "VmRSS") * 1024
        res["anon_huge_bytes"] = int(next((l.split()[1] for l in open(f"/proc/{pid}/smaps_rollup")
                                           if l.startswith("AnonHugePages:")), 0)) * 1024
        sum_before = checksum_via_signal(pid, sumfile)
        if sum_before != first_sum:
            raise RuntimeError(f"memhog checksum changed by itself: {first_sum} -> {sum_before}")
        res["checksum_before"] = sum_before

        runs = resident_runs(pid)
        res["floor_bytes"] = sum(n for _, n in runs)
        res["floor_iovecs"] = len(runs)
        res["floor_s"], res["floor_all_s"] = read_floor(pid, runs)

        dumps = []  # (CLI wall, JSON wall_s, frozen_s), each a full dump into a fresh store
        for k in range(repeats):
            wall, p = snapshotd(store if k == 0 else f"{store}-{k}", "dump", str(pid))
            if p.returncode != 0:
                res["errors"].append(f"dump failed (exit {p.returncode}): {p.stderr.strip()}")
                return res
            dk = json.loads(p.stdout.strip().splitlines()[-1])
            dumps.append((wall, dk["wall_s"], dk["frozen_s"]))
            if k == 0:
                d = dk
            else:
                shutil.rmtree(f"{store}-{k}", ignore_errors=True)
        res["dump_runs"] = dumps
        res["dump_wall_s"], res["dump_json_wall_s"], res["dump_frozen_s"] = (min(x[i] for x in dumps) for i in range(3))
        res["dump_wall_median_s"], res["dump_json_wall_median_s"] = (
            float(np.median([x[i] for x in dumps])) for i in range(2))
        res.update(stored_bytes=d["stored_bytes"], dump_pages=d["pages"], snapshot=d["id"])
        h5 = os.path.join(store, "snapshots", d["id"] + ".h5")
        res["h5_bytes"] = os.path.getsize(h5) if os.path.exists(h5) else None
        if not alive(pid) or checksum_via_signal(pid, sumfile) != sum_before:
            res["errors"].append("the dumped process did not run on unchanged after the dump")

        hog.kill()
        hog.wait()
        hog = None
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 10, f"PID {pid} to be free")

        restores = []  # (CLI wall, JSON wall_s)
        for k in range(repeats):
            if k:  # again: kill the restored process and wait for its PID
                os.kill(restored_pid, signal.SIGKILL)
                wait_for(lambda: not os.path.exists(f"/proc/{restored_pid}"), 10, f"PID {restored_pid} to be free",
                         0.02)
                restored_pid = None
            wall, p = snapshotd(store, "restore", d["id"])
            if p.returncode != 0:
                res["errors"].append(f"restore failed (exit {p.returncode}): {p.stderr.strip()}")
                return res
            r = json.loads(p.stdout.strip().splitlines()[-1])
            restored_pid = r["pid"]
            restores.append((wall, r["wall_s"]))
        res["restore_runs"] = restores
        res["restore_wall_s"], res["restore_json_wall_s"] = (min(x[i] for x in restores) for i in range(2))
        res["restore_wall_median_s"], res["restore_json_wall_median_s"] = (
            float(np.median([x[i] for x in restores])) for i in range(2))
        res.update(restored_pid=restored_pid, restore_notes=r.get("notes", []))
        if restored_pid != pid:
            res["errors"].append(f"restored PID {restored_pid} differs from dumped PID {pid}")
        time.sleep(0.2)
        res["restored_alive"] = alive(restored_pid) and comm(restored_pid) == "memhog"
        if not res["restored_alive"]:
            res["errors"].append(f"restored process {restored_pid} is not alive (comm {comm(restored_pid)!r})")
            return res
        try:
            res["checksum_after"] = checksum_via_signal(restored_pid, sumfile)
        except TimeoutError as e:
            res["checksum_after"] = None
            res["errors"].append(f"restored process wrote no checksum: {e}")
        res["checksum_ok"] = res["checksum_after"] == sum_before
        if res["checksum_after"] and not res["checksum_ok"]:
            res["errors"].append(f"checksum mismatch: {sum_before} before, {res['checksum_after']} after")
        res["restored_alive_after_check"] = alive(restored_pid)
        return res
    except Exception as e:  # report, with what was measured so far
        res["errors"].append(f"benchmark failed: {type(e).__name__}: {e}")
        return res
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
        if restored_pid and alive(restored_pid) and comm(restored_pid) == "memhog":
            os.kill(restored_pid, signal.SIGKILL)
            try:  # not our child: its parent (init or a subreaper) reaps it, up to ~1 s here
                wait_for(lambda: not os.path.exists(f"/proc/{restored_pid}"), 5, "restored process to go", 0.05)
            except TimeoutError:
                pass
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def ratios(res: dict) -> dict:
    out = {}
    if res.get("stored_bytes") is not None and res.get("resident_bytes"):
        out["stored/resident"] = res["stored_bytes"] / res["resident_bytes"]
    for k in ("dump", "restore"):
        if res.get(f"{k}_wall_s") and res.get("floor_s") and not any(e.startswith(k) for e in res["errors"]):
            out[f"{k}/floor"] = res[f"{k}_wall_s"] / res["floor_s"]
            if res.get(f"{k}_json_wall_s") is not None:
                out[f"{k}/floor (JSON wall_s)"] = res[f"{k}_json_wall_s"] / res["floor_s"]
            if res.get(f"{k}_wall_median_s") is not None:
                out[f"{k}/floor (median)"] = res[f"{k}_wall_median_s"] / res["floor_s"]
                out[f"{k}/floor (JSON wall_s, median)"] = res[f"{k}_json_wall_median_s"] / res["floor_s"]
    return out


def table(res: dict) -> str:
    mib = lambda b: "-" if b is None else f"{b / 2**20:.1f} MiB"  # noqa: E731
    sec = lambda s: "-" if s is None else f"{s:.3f} s"  # noqa: E731
    g = res.get
    rows = [
        ("command", g("command", "-")),
        ("memhog size", f"{res['size_mib']} MiB (AnonHugePages {mib(g('anon_huge_bytes'))})"),
        ("resident (VmRSS)", mib(g("resident_bytes"))),
        ("floor: process_vm_readv", f"{sec(g('floor_s'))} for {mib(g('floor_bytes'))} in {g('floor_iovecs')} "
         f"iovecs ({g('floor_bytes', 0) / g('floor_s', 1) / 1e9:.2f} GB/s; runs "
         + ", ".join(f"{t:.3f}" for t in g("floor_all_s", [])) + ")"),
        ("dump wall (CLI), best / median", f"{sec(g('dump_wall_s'))} / {sec(g('dump_wall_median_s'))}"),
        ("dump wall_s (JSON), best / median", f"{sec(g('dump_json_wall_s'))} / {sec(g('dump_json_wall_median_s'))}"),
        ("dump frozen_s (JSON), best", sec(g("dump_frozen_s"))),
        ("dump runs (CLI, JSON, frozen)", "; ".join(f"{a:.3f}, {b:.3f}, {c:.3f}" for a, b, c in g("dump_runs", []))),
        ("stored_bytes (JSON) / .h5 size", f"{mib(g('stored_bytes'))} / {mib(g('h5_bytes'))}"),
        ("restore wall (CLI), best / median", f"{sec(g('restore_wall_s'))} / {sec(g('restore_wall_median_s'))}"),
        ("restore wall_s (JSON), best / median",
         f"{sec(g('restore_json_wall_s'))} / {sec(g('restore_json_wall_median_s'))}"),
        ("restore runs (CLI, JSON)", "; ".join(f"{a:.3f}, {b:.3f}" for a, b in g("restore_runs", []))),
        ("restored alive, checksum equal", f"{g('restored_alive')}, {g('checksum_ok')} "
         f"({g('checksum_before')} / {g('checksum_after')})"),
    ]
    lines = [f"| {'measure':36} | value |", f"|{'-' * 38}|-------|"]
    lines += [f"| {a:36} | {b} |" for a, b in rows]
    lines += ["", f"| {'ratio':36} | value | target | met |", f"|{'-' * 38}|-------|--------|-----|"]
    for k, v in ratios(res).items():
        t = TARGETS.get(k.split(" ")[0])
        shown = f"{v * 100:.1f} %" if k == "stored/resident" else f"{v:.2f}"
        tgt = f"<= {t * 100:.0f} %" if k == "stored/resident" else f"<= {t:g}"
        lines.append(f"| {k:36} | {shown} | {tgt} | {'yes' if v <= t else 'NO'} |")
    for e in res["errors"]:
        lines.append(f"\nERROR: {e}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3, help="dumps and restores to time (best and median)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--tmpdir", help="where to make the temporary directory (memhog, store); default $TMPDIR")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--command", help="the snapshotd command to time, e.g. .venv/bin/snapshotd as the README "
                                      "installs it (default: this Python's -m snapshotd, from the checkout)")
    a = ap.parse_args()
    if a.command:
        COMMAND[:] = [os.path.abspath(a.command)]
    res = run(a.size_mib, a.tmpdir, a.keep, max(1, a.repeats))
    res["command"] = " ".join(COMMAND)
    res["ratios"] = ratios(res)
    res["machine"] = f"{platform.machine()} Linux {platform.release()}, {os.cpu_count()} CPUs"
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        print(table(res))
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
