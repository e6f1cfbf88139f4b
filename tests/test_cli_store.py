"""A bad --store: every verb answers with one line `snapshotd: error: ...`
and a non-zero exit, never a traceback and never "no snapshots".

The rule: a store is a directory holding snapshots/.  Verbs that only read
(list, show, verify, restore, prune, compact, gc) refuse anything else; verbs
that write (dump, daemon) may create a store in a missing or empty directory
but refuse a file or a directory holding other things."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from zdtm_harness import STARTED_PIDS, assert_cli_fails, cli_command, run_cli

READ_VERBS = [
    ["list"],
    ["--json", "list"],
    ["show", "0123"],
    ["verify"],
    ["verify", "0123"],
    ["restore", "0123"],
    ["prune", "--keep-last", "1"],
    ["compact", "0123"],
    ["gc"],
    ["gc", "--dry-run"],
]


def _ids(v):
    return "-".join(a.lstrip("-") for a in v)


def _listing(path):
    """What a refused command must leave as it was (/proc changes by itself)."""
    return sorted(os.listdir(path)) if os.path.isdir(path) and path != "/proc" else None


def fails(argv, **kw) -> str:
    """argv exits non-zero with exactly one stderr line `snapshotd: error: ...`."""
    res = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, **kw)
    report = (f"$ {' '.join(map(str, argv))}\nexit {res.returncode}\n"
              f"--- stdout ---\n{res.stdout}--- stderr ---\n{res.stderr}")
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0, report
    assert "Traceback" not in res.stderr, report
    assert len(lines) == 1 and lines[0].startswith("snapshotd: error: "), report
    assert "no snapshots" not in (res.stderr + res.stdout).splitlines(), report
    return lines[0]


@pytest.fixture
def target():
    """A process to point dump at (a refused dump must not touch it)."""
    p = subprocess.Popen(["sleep", "120"], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    STARTED_PIDS.add(p.pid)
    yield p
    p.kill()
    p.wait()


def make_bad(tmp_path, kind: str) -> tuple[str, str]:
    """(a --store that is not a store, words the error must contain)."""
    if kind == "file":
        p = tmp_path / "afile"
        p.write_text("not a store\n")
        return str(p), "is not a snapshotd store (not a directory)"
    if kind == "proc":
        return "/proc", "/proc is not a snapshotd store (no snapshots/ directory)"
    if kind == "empty-dir":
        p = tmp_path / "empty"
        p.mkdir()
        return str(p), "is not a snapshotd store (no snapshots/ directory)"
    if kind == "other-dir":
        p = tmp_path / "other"
        p.mkdir()
        (p / "data.txt").write_text("mine\n")
        return str(p), "is not a snapshotd store (no snapshots/ directory)"
    if kind == "snapshots-file":
        p = tmp_path / "odd"
        p.mkdir()
        (p / "snapshots").write_text("")
        return str(p), "is not a snapshotd store"
    if kind == "missing":
        return str(tmp_path / "no-such-store"), "no store at"
    if kind == "under-a-file":
        (tmp_path / "afile").write_text("")
        return str(tmp_path / "afile" / "store"), "no store at"
    raise AssertionError(kind)


BAD = ["file", "proc", "empty-dir", "other-dir", "snapshots-file", "missing", "under-a-file"]


@pytest.mark.parametrize("verb", READ_VERBS, ids=_ids)
@pytest.mark.parametrize("kind", BAD)
def test_read_verbs_refuse_what_is_not_a_store(tmp_path, kind, verb):
    path, words = make_bad(tmp_path, kind)
    before = _listing(path)
    line = assert_cli_fails(path, *verb)
    assert line.startswith("snapshotd: error: ") and words in line, line
    assert _listing(path) == before, "a refused command changed the directory"


def test_store_from_environment_is_checked_too(tmp_path):
    f = tmp_path / "afile"
    f.write_text("")
    env = {**os.environ, "SNAPSHOTD_STORE": str(f)}
    line = fails([sys.executable, "-m", "snapshotd", "list"], env=env)
    assert "not a snapshotd store" in line


def test_empty_store_lists_nothing(tmp_path):
    store = tmp_path / "store"
    (store / "snapshots").mkdir(parents=True)
    res = run_cli(store, "list")
    assert res.returncode == 0 and res.stderr.strip() == "no snapshots", res
    res = run_cli(store, "--json", "list")
    assert res.returncode == 0 and res.stdout.strip() == "[]", res
    res = run_cli(store, "verify")
    assert res.returncode == 0, res
    assert "no snapshot '0123'" in assert_cli_fails(store, "show", "0123")


def test_read_only_empty_directory_is_not_a_store(tmp_path, target):
    """An empty directory root cannot write to (a read-only bind mount) is
    not a store: `list` says so instead of "no snapshots", and dump says why
    it cannot make a store there."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root and mount(8)")
    if subprocess.run(["mount", "--bind", str(ro), str(ro)], capture_output=True).returncode != 0:
        pytest.skip("bind mounts are not allowed here")
    try:
        r = subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        with pytest.raises(OSError):
            (ro / "probe").write_text("")
        for verb in (["list"], ["verify"], ["gc"], ["prune", "--keep-last", "1"]):
            assert "is not a snapshotd store (no snapshots/ directory)" in assert_cli_fails(ro, *verb)
        line = assert_cli_fails(ro, "dump", str(target.pid))
        assert "Read-only file system" in line, line
        assert target.poll() is None
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    assert os.listdir(ro) == []


def test_unreadable_store_is_permission_denied(tmp_path):
    """A store this user cannot read.  Root reads everything, so the CLI runs
    as root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (setpriv)."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or not setpriv:
        pytest.skip("needs root and setpriv(1)")
    store = tmp_path / "store"
    (store / "snapshots").mkdir(parents=True)
    drop = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]
    try:
        for mode_of, mode in ((store, 0o000), (store / "snapshots", 0o000)):
            os.chmod(mode_of, mode)
            for verb in (["list"], ["verify"], ["show", "0123"], ["gc"]):
                line = fails(drop + cli_command(store, *verb))
                assert f"cannot read store {store}: permission denied" in line, line
            os.chmod(mode_of, 0o700)
    finally:
        os.chmod(store, 0o700)
        os.chmod(store / "snapshots", 0o700)


@pytest.mark.parametrize("kind", ["file", "proc", "other-dir", "snapshots-file"])
def test_dump_refuses_to_make_a_store_there(tmp_path, kind, target):
    path, _ = make_bad(tmp_path, kind)
    before = _listing(path)
    line = assert_cli_fails(path, "dump", str(target.pid))
    assert "not a snapshotd store" in line, line
    if kind in ("proc", "other-dir"):
        assert "not empty" in line, line
    assert _listing(path) == before
    assert target.poll() is None


@pytest.mark.parametrize("kind", ["file", "proc", "other-dir"])
def test_daemon_refuses_a_store_that_is_not_one(tmp_path, kind):
    path, _ = make_bad(tmp_path, kind)
    sock = tmp_path / "sock"
    line = fails(cli_command(path, "daemon", "--socket", str(sock)))
    assert "not a snapshotd store" in line, line
    assert not sock.exists()


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_dump_makes_a_store_in_a_missing_or_empty_directory(tmp_path, kind, target):
    store = tmp_path / "store"
    if kind == "empty":
        store.mkdir()
    res = run_cli(store, "dump", str(target.pid))
    assert res.returncode == 0, res
    sid = res.stdout.strip().splitlines()[-1]
    assert (store / "snapshots" / f"{sid}.h5").is_file()
    res = run_cli(store, "--json", "list")
    assert res.returncode == 0 and sid in res.stdout, res
    # a snapshot file path needs no store: show it with --store pointing nowhere
    res = run_cli(tmp_path / "no-such-store", "show", str(store / "snapshots" / f"{sid}.h5"))
    assert res.returncode == 0 and sid in res.stdout, res
