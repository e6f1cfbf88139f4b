"""Rounds: one consistent moment across the trees of a job (docs/FORMAT.md §15).

    STORE/rounds/<job>/<round id>.json                     committed round records
    STORE/rounds/<job>/.<round id>.json.tmp-<host>-<pid>   being written (ignored)

A round record is written only after every member snapshot is committed, so
a visible record names snapshots that were all durable first. A record is
*complete* when every member snapshot still exists (and, with deep=True,
opens as a snapshot whose id, job and round attributes match the record).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass, field

from .fsutil import fsync_dir, temp_writer_dead, write_atomic
from .snapshot import FormatError, read_attrs

ROUND_FORMAT = "snapshotd-round"
ROUND_VERSION = 1
JOB_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# A job's key names it in the store: its name for root's jobs, "UID:NAME" for
# another owner's, so names of different users never meet (docs/SECURITY.md).
KEY_RE = re.compile(r"^(?:([1-9][0-9]{0,9}):)?([A-Za-z0-9][A-Za-z0-9._-]{0,63})$")
ROUND_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9]{3}-[0-9a-f]{4}$")


class RoundError(Exception):
    pass


@dataclass
class Round:
    id: str
    job: str
    created: float = 0.0
    uid: int = 0  # owner of the job
    members: list = field(default_factory=list)  # [{"snapshot", "root_pid", "name", "stored_bytes", "frozen_s"}]
    problems: list = field(default_factory=list)  # why it is not complete ([] = complete)

    @property
    def complete(self) -> bool:
        return not self.problems and bool(self.members)

    def to_dict(self) -> dict:
        return {"round": self.id, "job": self.job, "created": self.created, "uid": self.uid,
                "members": self.members, "complete": self.complete, "problems": self.problems}


def check_job(job: str) -> str:
    """job: a job key (a name, or UID:NAME for a job another user owns)."""
    if not isinstance(job, str) or not KEY_RE.match(job):
        raise RoundError(f"bad job id {job!r}: use letters, digits, '.', '_' or '-' (at most 64, "
                         "starting with a letter or digit), optionally after UID: (another user's job)")
    return job


def job_key(uid: int, name: str) -> str:
    """The store's key of job name owned by uid."""
    check_job(name)
    if ":" in name:
        raise RoundError(f"bad job name {name!r}: a name has no ':'")
    return name if uid == 0 else f"{uid}:{name}"


def split_key(key: str) -> tuple[int, str]:
    """(owner uid, name) of a job key."""
    m = KEY_RE.match(check_job(key))
    return int(m.group(1) or 0), m.group(2)


def new_round_id() -> str:
    t = time.time()
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(t))}-{int(t * 1000) % 1000:03d}-{secrets.token_hex(2)}"


def _jobdir(store, job: str) -> str:
    return os.path.join(store.path, "rounds", check_job(job))


def _snap_path(store, sid: str) -> str:
    return os.path.join(store.snapdir, sid + ".h5")


def _encode(doc: dict) -> bytes:
    return json.dumps(doc, indent=1).encode() + b"\n"


def write_round(store, job: str, round_id: str, members: list[dict], uid: int = 0) -> Round:
    """Commit a round record: temp file, fsync, link(2) to its final name
    (never replacing one), fsync the directory. Every member snapshot must
    already be committed."""
    for m in members:
        if not os.path.isfile(_snap_path(store, m["snapshot"])):
            raise RoundError(f"round {round_id}: member snapshot {m['snapshot']} is not committed")
    d = _jobdir(store, job)
    for p in (os.path.join(store.path, "rounds"), d):
        if not os.path.isdir(p):
            os.makedirs(p, mode=0o700, exist_ok=True)
            fsync_dir(os.path.dirname(p))
    rec = Round(id=round_id, job=job, created=time.time(), uid=uid, members=members)
    doc = {"format": ROUND_FORMAT, "format_version": ROUND_VERSION, "round": round_id, "job": job,
           "created": rec.created, "uid": uid, "hostname": socket.gethostname(), "members": members}
    write_atomic(os.path.join(d, round_id + ".json"), _encode(doc), replace=False)
    return rec


def _read(path: str, job: str, rid: str) -> Round:
    try:
        with open(path) as f:
            doc = json.load(f)
        if doc.get("format") != ROUND_FORMAT or doc.get("round") != rid or doc.get("job") != job:
            raise ValueError("not a round record of this job")
        if int(doc.get("format_version", 0)) > ROUND_VERSION:
            raise ValueError(f"format version {doc['format_version']} is newer than this snapshotd reads")
        return Round(id=rid, job=job, created=float(doc["created"]), uid=int(doc.get("uid", 0)),
                     members=list(doc["members"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        return Round(id=rid, job=job, problems=[f"round record unreadable: {e}"])


def check_members(store, rec: Round, deep: bool = False) -> list[str]:
    """Why rec is not complete ([] if it is). deep: open each member and
    compare its attributes with the record (else only check it exists)."""
    problems = []
    for m in rec.members:
        path = _snap_path(store, m["snapshot"])
        if not os.path.isfile(path):
            problems.append(f"snapshot {m['snapshot']} is missing")
            continue
        if deep:
            try:
                a = read_attrs(path)
                if (a.get("id"), a.get("job"), a.get("round")) != (m["snapshot"], rec.job, rec.id):
                    problems.append(f"snapshot {m['snapshot']} does not belong to round {rec.id}")
            except (FormatError, OSError, KeyError) as e:
                problems.append(f"snapshot {m['snapshot']} is damaged: {e}")
    return problems


def jobs(store) -> list[str]:
    try:
        return sorted(n for n in os.listdir(os.path.join(store.path, "rounds")) if KEY_RE.match(n))
    except FileNotFoundError:
        return []


def rounds(store, job: str, deep: bool = False) -> list[Round]:
    """Committed round records of job (a key), oldest first, each with
    .problems filled in (a round with a missing or damaged member is not
    complete). A record whose owner is not the key's (a non-root key's
    records are that uid's) is not the job's: it is left out."""
    d = _jobdir(store, job)
    owner = split_key(job)[0]
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        if n.startswith(".") or not n.endswith(".json") or not ROUND_RE.match(n[:-5]):
            continue
        rec = _read(os.path.join(d, n), job, n[:-5])
        if owner and not rec.problems and rec.uid != owner:
            continue
        if not rec.problems:
            rec.problems = check_members(store, rec, deep)
        out.append(rec)
    out.sort(key=lambda r: r.id)
    return out


def latest_complete(store, job: str) -> Round | None:
    """The newest round whose members all open as this round's snapshots."""
    for rec in reversed(rounds(store, job)):
        if rec.complete:
            rec.problems = check_members(store, rec, deep=True)
            if rec.complete:
                return rec
    return None


def find(store, job: str, ref: str) -> Round:
    """A round of job given its id (or a unique prefix) or a member snapshot
    id (or a unique prefix of one)."""
    recs = rounds(store, job)
    hits = [r for r in recs if r.id == ref] or [r for r in recs if r.id.startswith(ref)]
    if not hits:
        hits = [r for r in recs if any(m["snapshot"] == ref for m in r.members)] or \
               [r for r in recs if any(m["snapshot"].startswith(ref) for m in r.members)]
    if not hits:
        raise RoundError(f"job {job} has no round or snapshot {ref!r}")
    if len(hits) > 1:
        raise RoundError(f"{ref!r} is ambiguous in job {job}: rounds {', '.join(r.id for r in hits[:5])}")
    rec = hits[0]
    if not rec.problems:
        rec.problems = check_members(store, rec, deep=True)
    return rec


def delete(store, job: str, round_id: str) -> None:
    d = _jobdir(store, job)
    try:
        os.unlink(os.path.join(d, round_id + ".json"))
    except FileNotFoundError:
        return
    fsync_dir(d)


def replace_members(store, job: str, rec: Round, swap: dict[str, str]) -> Round:
    """Rewrite a committed record with member snapshots swapped for other
    committed snapshots of the same moment (compaction: old id -> compacted
    copy's id). The new record goes to a temp file, is fsync'd and renamed
    over the old one (atomic: a reader sees the old or the new record, each
    naming committed snapshots); then the directory is fsync'd."""
    path = os.path.join(_jobdir(store, job), rec.id + ".json")
    with open(path) as f:
        doc = json.load(f)
    if doc.get("format") != ROUND_FORMAT or doc.get("round") != rec.id:
        raise RoundError(f"round {rec.id} of job {job}: record unreadable")
    members = []
    for m in doc["members"]:
        m = dict(m)
        if m["snapshot"] in swap:
            m["compacted_from"], m["snapshot"] = m["snapshot"], swap[m["snapshot"]]
            if not os.path.isfile(_snap_path(store, m["snapshot"])):
                raise RoundError(f"round {rec.id}: snapshot {m['snapshot']} is not committed")
        members.append(m)
    doc["members"] = members
    doc["compacted"] = time.time()
    write_atomic(path, _encode(doc), replace=True)
    return Round(id=rec.id, job=job, created=rec.created, uid=rec.uid, members=members)


def remove_stale_temps(store) -> None:
    """Remove temp records left by writers that died."""
    for job in jobs(store):
        d = _jobdir(store, job)
        for n in os.listdir(d):
            if temp_writer_dead(n):
                try:
                    os.unlink(os.path.join(d, n))
                except FileNotFoundError:
                    pass
