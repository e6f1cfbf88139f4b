#!/usr/bin/env python3
"""Daemon benchmark (issue 6): N registered small programs at one interval for
a while; rounds taken vs due, the daemon's CPU share and RSS.

    python3 benchmarks/bench_daemon.py [--programs 64] [--every 5s] [--seconds 120] [--json]

Each program is tests/daemon/counter.c (a 1 MiB heap, a line appended to its
log every 20 ms), registered as its own job (one tree per round). Rounds due
for a tree = whole intervals between its registration and the end. CPU share
is the daemon's utime+stime (/proc/PID/stat 14-15) over the wall time of the
measured window, as a fraction of one core; RSS is sampled from
/proc/PID/status (VmRSS) every second, and VmHWM is read at the end.
Run as root.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def cli(sock, store, *args):
    res = subprocess.run([sys.executable, "-m", "snapshotd", "--store", store, "--socket", sock, "--json", *args],
                         capture_output=True, text=True, cwd=REPO)
    if res.returncode:
        raise SystemExit(f"snapshotd {' '.join(args)} failed: {res.stderr.strip()}")
    return json.loads(res.stdout)


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        st = f.read().rsplit(")", 1)[1].split()
    return int(st[11]) + int(st[12])  # fields 14, 15: utime, stime


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith(key + ":"):
                return int(ln.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--programs", type=int, default=64)
    ap.add_argument("--every", default="5s")
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--keep", type=int, default=2, help="retention per job (bounds the store size)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    every = int(a.every[:-1]) * {"s": 1, "m": 60, "h": 3600}[a.every[-1]]

    root = tempfile.mkdtemp(prefix="snapshotd-bench-daemon-")
    sock, store = os.path.join(root, "sock"), os.path.join(root, "store")
    counter = os.path.join(root, "counter")
    subprocess.run(["gcc", "-O1", "-o", counter, os.path.join(REPO, "tests", "daemon", "counter.c")], check=True)
    log = open(os.path.join(root, "daemon.log"), "w")
    d = subprocess.Popen([sys.executable, "-m", "snapshotd", "--store", store, "daemon", "--socket", sock,
                          "--workers", str(a.workers)], stdout=log, stderr=log, cwd=REPO)
    pids = []
    try:
        for _ in range(200):
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(sock)
                break
            except OSError:
                time.sleep(0.1)
            finally:
                s.close()
        for i in range(a.programs):
            w = os.path.join(root, f"p{i}")
            os.makedirs(w)
            subprocess.run(["setsid", "-f", counter, w, "20"], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        for i in range(a.programs):
            ready = os.path.join(root, f"p{i}", "ready")
            while not os.path.exists(ready):
                time.sleep(0.02)
            pids.append(int(open(ready).read()))
        reg_at = {}
        for p in pids:
            cli(sock, store, "register", str(p), "--every", a.every, "--keep", str(a.keep))
            reg_at[p] = time.time()
        t0, c0 = time.time(), cpu_ticks(d.pid)
        rss_max = 0
        while time.time() - t0 < a.seconds:
            rss_max = max(rss_max, status_kib(d.pid, "VmRSS"))
            time.sleep(1)
        t1, c1 = time.time(), cpu_ticks(d.pid)
        hwm = status_kib(d.pid, "VmHWM")
        st = cli(sock, store, "status")
        taken = sum(t["snapshots"] for t in st["trees"])
        failed = sum(t["failures"] for t in st["trees"])
        due = sum(int((t1 - reg_at[p]) // every) for p in pids)
        with open(os.path.join(root, "daemon.log")) as f:
            text = f.read()
        skipped = text.count("maximum number of running instances")
        missed_warn = text.count("was missed by")
        out = {
            "programs": a.programs, "every_s": every, "seconds": round(t1 - t0, 1), "workers": a.workers,
            "rounds_due": due, "rounds_taken": taken, "rounds_failed": failed,
            "runs_skipped_still_running": skipped, "runs_missed_warnings": missed_warn,
            "daemon_cpu_share": round((c1 - c0) / TICK / (t1 - t0), 3),
            "daemon_rss_max_mib": round(rss_max / 1024, 1), "daemon_vmhwm_mib": round(hwm / 1024, 1),
            "mean_round_s": round(sum(t["last_duration"] for t in st["trees"]) / len(st["trees"]), 4),
            "mean_frozen_ms": round(1000 * sum(t["last_frozen"] for t in st["trees"]) / len(st["trees"]), 2),
        }
    finally:
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        d.send_signal(signal.SIGTERM)
        try:
            d.wait(60)
        except subprocess.TimeoutExpired:
            d.kill()
        log.close()
        shutil.rmtree(root, ignore_errors=True)
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:28} {v}")


if __name__ == "__main__":
    main()
