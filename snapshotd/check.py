"""`snapshotd check`: the report of what this machine gives snapshotd: the
kernel features it uses, probed for real (kernel/probes.py), the dirty-page
trackers (incremental.report), capabilities, xstate size and pid_max; each
with whether it is required and what is lost without it."""
from __future__ import annotations

from .incremental import report as trackers
from .kernel import probes as kp

CAPS = {  # bit: (name, what is lost without it)
    21: ("CAP_SYS_ADMIN", "no PFNs in pagemap; exe link and set_tid need CAP_CHECKPOINT_RESTORE instead"),
    19: ("CAP_SYS_PTRACE", "only processes of the same user, not setuid/undumpable ones, can be dumped"),
    40: ("CAP_CHECKPOINT_RESTORE", "clone3 set_tid, ns_last_pid, map_files and exe link need CAP_SYS_ADMIN"),
    24: ("CAP_SYS_RESOURCE", "rlimit hard limits cannot be raised above the restorer's; pipes cannot grow "
         "above pipe-max-size; single-field PR_SET_MM_* fail (PR_SET_MM_MAP still works)"),
}


def run_checks() -> list[dict]:
    out: list[dict] = []

    def add(name, ok, detail, required, consequence):
        out.append({"name": name, "ok": bool(ok), "detail": detail, "required": required,
                    "consequence": consequence})

    def probe(name, fn, required, consequence):
        try:
            ok, detail, *extra = fn()
        except Exception as e:  # a probe that crashes counts as missing
            ok, detail, extra = False, f"probe failed: {type(e).__name__}: {e}", []
        add(name, ok, detail, required, consequence)
        return extra[0] if extra else None

    xs = probe("ptrace", kp.probe_ptrace, True, "no process can be frozen, dumped or restored")
    probe("process_vm_readv", kp.probe_process_vm_readv, True, "memory of the target cannot be read")
    probe("clone3_set_tid", kp.probe_clone3_set_tid, True, "restored processes cannot get their PIDs back")
    probe("pagemap", kp.probe_pagemap, True, "resident pages cannot be found (dump would copy whole mappings)")
    probe("pr_set_mm_map", kp.probe_pr_set_mm_map, True, "restored processes keep the stub's brk/args/env/auxv")
    probe("kcmp", kp.probe_kcmp, False, "shared files and dup'ed fds cannot be told from re-opened ones")
    probe("pidfd_getfd", kp.probe_pidfd, False, "a tracker cannot take a copy of the target's userfaultfd")
    probe("uffd_wp_async", kp.probe_uffd_wp_async, False, "no dirty-page tracking: incremental snapshots copy all")
    probe("pagemap_scan", kp.probe_pagemap_scan, False, "no dirty-page tracking: incremental snapshots copy all")
    probe("soft_dirty", kp.probe_soft_dirty, False, "nothing for snapshotd (it uses uffd WP_ASYNC); CRIU pre-dump needs it")
    probe("time_namespace", kp.probe_time_ns, False, "monotonic/boottime clocks jump when restored on another boot")

    chosen = False
    for t in trackers():
        # the first available tracker is the one dumps use (the CLI's one-shot dumps use "hash")
        detail = ("in use: " if t["ok"] and not chosen else "") + t["detail"]
        chosen = chosen or t["ok"]
        add(f"tracker:{t['name']}", t["ok"], detail, False,
            "not used for incremental snapshots here; a better-ranked or the hash tracker is")
    caps = 0
    for line in open("/proc/self/status"):
        if line.startswith("CapEff:"):
            caps = int(line.split()[1], 16)
    for bit, (name, cost) in CAPS.items():
        add(name, caps >> bit & 1, f"CapEff={caps:#x}", False, cost)
    add("xstate", xs, f"{xs[0]} bytes, XCR0={xs[1]:#x}" if xs else "NT_X86_XSTATE not readable", False,
        "FPU/AVX registers cannot be saved")
    pid_max = int(open("/proc/sys/kernel/pid_max").read())
    add("pid_max", True, str(pid_max), False, f"PIDs above {pid_max} cannot be restored on this machine")
    return out
