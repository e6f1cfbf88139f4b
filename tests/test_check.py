"""`snapshotd check`: the probes agree with what this machine is known to have
(/work/shared/docs/kernel-facts.md) and the CLI prints them."""
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = {"ptrace", "process_vm_readv", "clone3_set_tid", "pagemap", "pr_set_mm_map"}


def run_check(*extra):
    return subprocess.run([sys.executable, "-m", "snapshotd", "check", *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def checks():
    p = run_check("--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert isinstance(out, list) and out
    for r in out:
        assert set(r) == {"name", "ok", "detail", "required", "consequence"}, r
        assert isinstance(r["ok"], bool) and isinstance(r["required"], bool)
        assert isinstance(r["detail"], str) and r["consequence"]
    return {r["name"]: r for r in out}


@pytest.mark.skipif(os.geteuid() != 0, reason="the required probes need root")
def test_required_features_ok(checks):
    assert {n for n, r in checks.items() if r["required"]} == REQUIRED
    for name in REQUIRED:
        assert checks[name]["ok"], checks[name]


def test_soft_dirty_agrees_with_kernel_config(checks):
    try:
        config = gzip.open("/proc/config.gz", "rt").read().splitlines()
    except OSError:
        pytest.skip("no /proc/config.gz")
    assert checks["soft_dirty"]["ok"] == ("CONFIG_MEM_SOFT_DIRTY=y" in config)
    assert not checks["soft_dirty"]["ok"]  # this kernel lacks it (kernel-facts.md)
    assert not checks["soft_dirty"]["required"]


def test_machine_facts(checks):
    # kernel-facts.md: everything but CAP_SYS_RESOURCE, WP_ASYNC and PAGEMAP_SCAN work, 2432-byte xstate
    assert checks["uffd_wp_async"]["ok"] and checks["pagemap_scan"]["ok"]
    assert checks["pid_max"]["detail"] == open("/proc/sys/kernel/pid_max").read().strip()
    caps = int(next(l for l in open("/proc/self/status") if l.startswith("CapEff:")).split()[1], 16)
    assert checks["CAP_SYS_RESOURCE"]["ok"] == bool(caps >> 24 & 1)
    assert checks["xstate"]["ok"] and "bytes" in checks["xstate"]["detail"]


def test_human_output_one_line_per_check(checks):
    p = run_check()
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    # one line per check, in order; a missing one may add an indented "-> consequence" line under it
    heads = [l for l in lines if not l.lstrip().startswith("->")]
    assert len(heads) == len(checks)
    for line, (name, r) in zip(heads, checks.items()):
        assert line.split()[:2] == ["ok" if r["ok"] else "MISSING", name], line
    assert len(lines) - len(heads) == sum(not r["ok"] for r in checks.values())
