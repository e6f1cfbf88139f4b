"""Rounds (snapshotd/round.py, storage/rounds.py): several trees frozen
together, committed, then the record; completeness; nothing half-visible."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from daemon_harness import cleanup_counter, kill_pid, start_counter, wait_gone
from snapshotd.dump import DumpError
from snapshotd.daemon.round import Member, take_round
from snapshotd.storage import rounds
from snapshotd.storage.store import Store


@pytest.fixture(scope="module", autouse=True)
def _counter_build():
    yield
    cleanup_counter()


@pytest.fixture
def work():
    d = tempfile.mkdtemp(prefix="snapshotd-rounds-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_rounds_commit_members_then_record_and_detect_damage(work, store):
    st = Store(str(store))
    pids = [start_counter(os.path.join(work, n)) for n in ("a", "b")]
    r1, res1 = take_round(st, "J1", [Member(p) for p in pids], uid=1234)
    r2, res2 = take_round(st, "J1", [Member(p) for p in pids], uid=1234)
    listed = rounds.rounds(st, "J1")
    assert [r.id for r in listed] == [r1.id, r2.id] and all(r.complete for r in listed)
    assert listed[0].uid == 1234
    for res, rec in ((res1, r1), (res2, r2)):
        assert {r.pid for r in res} == set(pids)
        for r in res:  # every member carries its job and round
            with st.open(r.snapshot) as rd:
                assert (rd.attrs["job"], rd.attrs["round"]) == ("J1", rec.id)
    # all members were frozen together: one frozen interval for the round
    assert len({r.stats.frozen_s for r in res2}) == 1
    assert rounds.latest_complete(st, "J1").id == r2.id
    assert rounds.find(st, "J1", res1[0].snapshot).id == r1.id

    # a damaged member: the round is no longer the newest complete one
    path = os.path.join(st.snapdir, res2[1].snapshot + ".h5")
    with open(path, "r+b") as f:
        f.truncate(100)
    assert rounds.latest_complete(st, "J1").id == r1.id
    # a missing member: not complete, and reported
    os.unlink(path)
    rec = rounds.rounds(st, "J1")[-1]
    assert not rec.complete and "missing" in rec.problems[0]
    with pytest.raises(rounds.RoundError):
        rounds.check_job("../etc")


def snapshot_files(st) -> list:
    return os.listdir(st.snapdir) if os.path.isdir(st.snapdir) else []


def test_a_failed_round_leaves_nothing_visible(work, store):
    st = Store(str(store))
    alive = start_counter(os.path.join(work, "a"))
    dead = start_counter(os.path.join(work, "b"))
    kill_pid(dead)
    wait_gone(dead)
    with pytest.raises(DumpError):
        take_round(st, "J2", [Member(alive), Member(dead)])
    assert rounds.rounds(st, "J2") == []
    assert snapshot_files(st) == []
    # a stranger at a registered PID: refused, process untouched, nothing stored
    with pytest.raises(DumpError, match="another process"):
        take_round(st, "J2", [Member(alive, start_time=1)])
    assert snapshot_files(st) == [] and rounds.rounds(st, "J2") == []
    with open(f"/proc/{alive}/stat") as f:
        assert f.read().rsplit(")", 1)[1].split()[0] in ("R", "S")
    rec, res = take_round(st, "J2", [Member(alive)])
    with st.open(res[0].snapshot) as r:
        assert not r.verify()
