"""snapshotd command line: parsing and printing only."""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

from . import __version__

EPILOG = """\
The store is --store, else $SNAPSHOTD_STORE, else /var/lib/snapshotd.
Examples:
  snapshotd dump 4242                 snapshot PID 4242 (it keeps running)
  snapshotd restore 20261125-181500-4242-a1b2
  snapshotd list --json
  snapshotd verify                    re-hash everything stored
  snapshotd prune --keep-last 3 --keep-daily 7
"""


class CliError(Exception):
    pass


def _store(args, write: bool = False, refs=()):
    """The store of --store / $SNAPSHOTD_STORE / the default, checked: a
    command that only reads needs an existing store (a directory holding
    snapshots/); one that writes (write=True) may create one in a missing or
    empty directory, never in a file or someone else's directory.  refs: the
    command's SNAPSHOT arguments; when every one is a .h5 file path, the
    store is not read and a read-only command does not need one."""
    from .storage.store import DEFAULT_STORE, Store

    store = Store(args.store or os.environ.get("SNAPSHOTD_STORE") or DEFAULT_STORE)
    if write:
        store.check_writable()
    elif not (refs and all(r.endswith(".h5") and os.path.isfile(r) for r in refs)):
        store.check_readable()
    return store


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _emit(args, obj: dict, text: str) -> None:
    if args.json:
        print(json.dumps(obj, indent=None, sort_keys=True))
    else:
        print(text)


def cmd_dump(args):
    # The mappings' flags come from /proc/PID/smaps, which walks every page
    # table (~15 ms per GiB): read them while the dump's modules load.
    from .kernel import procfs

    early: dict = {}

    def read_early():
        try:
            early.update(procfs.vmflags_by_vma(args.pid))
        except OSError:  # the dump says what is wrong
            pass
    reader = threading.Thread(target=read_early, daemon=True)
    reader.start()
    from .dump import dump, resolve_parent

    reader.join()
    store = _store(args, write=True)
    parent = resolve_parent(store, args.pid, args.parent) if args.parent else None
    sid, st = dump(args.pid, store, kill=args.kill, parent=parent, capture=args.capture, vmflags=early)
    for n in st.notes:
        print(f"snapshotd: note: {n}", file=sys.stderr)
    obj = {"id": sid, "pid": args.pid, "parent": parent or "", "frozen_s": round(st.frozen_s, 6), "wall_s": round(st.wall_s, 6),
           "pages": st.pages, "stored_bytes": int(st.stored_bytes), "killed": bool(args.kill), "pids": st.pids,
           "kind": "incremental" if parent else "full", "tracker": st.tracker, "capture": st.capture,
           "unchanged_pages": st.unchanged_pages, "new_pages": st.new_pages}
    if args.json:
        _emit(args, obj, "")
    else:
        tree = f" and {len(st.pids) - 1} descendants ({' '.join(map(str, st.pids[1:]))})" if len(st.pids) > 1 else ""
        print(f"dumped PID {args.pid}{tree}: {st.pages} pages, {_human(st.stored_bytes)} stored, "
              f"frozen {st.frozen_s * 1000:.1f} ms, {st.wall_s:.2f} s" + (", killed" if args.kill else ""),
              file=sys.stderr)
        print(sid)


def _damage_report(reader, store=None) -> str:
    problems = reader.verify()
    if store is not None:
        store.quarantine(sorted(reader.damaged_packs), f"damaged, found by restore of {reader.id}")
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return f"snapshot {reader.id} is damaged, not restoring: " + "; ".join(problems[:5]) + more


def cmd_restore(args):
    from .restore import restore
    from .storage.snapshot import DamagedError

    store = _store(args, refs=[args.snapshot])
    with store.open(args.snapshot) as reader:
        if reader.missing_packs():
            raise CliError(_damage_report(reader, store))
        try:
            pid, st, notes = restore(reader, pidns=args.pidns)
        except DamagedError:
            # every page is checked as it is read, before the process runs;
            # the half-built process is gone: report everything that is wrong
            raise CliError(_damage_report(reader, store)) from None
    for n in notes:
        print(f"snapshotd: note: {n}", file=sys.stderr)
    outside = st.outside_pids[0] if st.outside_pids else pid
    if args.json:
        _emit(args, {"pid": pid, "pids": st.pids, "pidns": st.pidns, "outside_pid": outside,
                     "outside_pids": st.outside_pids, "snapshot": args.snapshot, "wall_s": round(st.wall_s, 6),
                     "pages": st.pages, "notes": notes}, "")
    else:
        tree = f" and {len(st.pids) - 1} descendants ({' '.join(map(str, st.pids[1:]))})" if len(st.pids) > 1 else ""
        print(f"restored PID {pid}{tree} in {st.wall_s:.2f} s", file=sys.stderr)
        if st.pidns:
            print("in a new PID namespace; seen from outside: "
                  + ", ".join(f"{a} is {b}" for a, b in zip(st.pids, st.outside_pids)), file=sys.stderr)
        print(outside)  # the PID to use from here (ps, kill)


def cmd_list(args):
    rows = _store(args).list()
    if args.json:
        print(json.dumps(rows, default=str))
        return
    if not rows:
        print("no snapshots", file=sys.stderr)
        return
    print(f"{'ID':34} {'PID':>7} {'KIND':11} {'CREATED (UTC)':19} {'NEW DATA':>10} {'JOB':8} PARENT")
    for r in rows:
        if "error" in r:
            print(f"{r['id']:34} {'?':>7} {'UNREADABLE':11} {r['error']}")
            continue
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.get("created", 0)))
        print(f"{r['id']:34} {r.get('root_pid', '?'):>7} {r.get('kind', '?'):11} {created:19} "
              f"{_human(r.get('stored_bytes', 0)):>10} {r.get('job') or '-':8} {r.get('parent') or '-'}")


def cmd_show(args):
    store = _store(args, refs=[args.snapshot])
    with store.open(args.snapshot) as r:
        attrs = dict(r.attrs)
        image = r.image()
        procs = [{
            "pid": p["pid"], "ppid": p["ppid"], "pgid": p["pgid"], "sid": p["sid"], "zombie": p.get("zombie", False),
            "comm": p["comm"], "exe": p["exe"], "threads": [t["tid"] for t in p["threads"]],
            "mappings": len(p["mappings"]), "fds": [f["fd"] for f in p["fds"]],
            "pages": int(len(r.page_table(p["pid"])[0])),
        } for p in image["processes"]]
    if args.json:
        print(json.dumps({"attrs": attrs, "processes": procs, "image": image if args.full else None}, default=str))
        return
    for k in ("id", "kind", "parent", "chain_depth", "root_pid", "tree", "job", "round", "hostname",
              "format_version", "pages", "new_pages", "stored_bytes", "compacted_from", "tracker"):
        if k in attrs:
            print(f"{k:15} {attrs[k]}")
    print(f"{'created':15} {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(attrs.get('created', 0)))}")
    for p in procs:
        if p["zombie"]:
            print(f"process {p['pid']} ({p['comm']}) zombie, parent {p['ppid']}")
            continue
        print(f"process {p['pid']} ({p['comm']}) {p['exe']}  parent {p['ppid']} group {p['pgid']} session {p['sid']}")
        print(f"  threads  {' '.join(map(str, p['threads']))}")
        print(f"  mappings {p['mappings']}   pages {p['pages']}   fds {' '.join(map(str, p['fds']))}")


def cmd_verify(args):
    from .progress import Progress
    from .storage.maintenance import verify

    results = verify(_store(args, refs=args.snapshot), args.snapshot or None, progress_factory=Progress)
    bad = [r for r in results if not r["ok"]]
    if args.json:
        print(json.dumps({"ok": not bad, "snapshots": results}))
    else:
        if not results:
            print("no snapshots", file=sys.stderr)
        for r in results:
            print(f"{r['id']:32} {'ok' if r['ok'] else 'DAMAGED'}")
            for pr in r["problems"]:
                print(f"  {pr}")
    return 1 if bad else 0


def cmd_prune(args):
    from .storage.maintenance import Policy, prune

    pol = Policy(last=args.keep_last, hourly=args.keep_hourly, daily=args.keep_daily, weekly=args.keep_weekly)
    out = prune(_store(args), pol, job=args.job, tree=args.tree, dry_run=args.dry_run, gc=not args.no_gc)
    if args.json:
        print(json.dumps(out))
        return
    verb = "would remove" if args.dry_run else "removed"
    for rid in out.get("removed_rounds", []):
        print(f"{verb} round {rid}")
    for sid in out["removed"]:
        print(f"{verb} {sid}")
    gc = out.get("gc")
    print(f"kept {len(out['kept'])} snapshot(s), {verb} {len(out['removed'])}"
          + (f"; freed {_human(gc['freed_bytes'])} in {len(gc['removed_packs'])} pack(s)" if gc else ""),
          file=sys.stderr)


def cmd_compact(args):
    from .progress import Progress
    from .storage.maintenance import compact

    store = _store(args, refs=[args.snapshot])  # compact() makes a store for a .h5 file's copy
    with store.open(args.snapshot) as r:
        total = len(r.all_refs()) * 4096
    bar = Progress(f"compact {args.snapshot}", total)
    try:
        out = compact(store, args.snapshot, progress=bar)
    finally:
        bar.close()
    if args.json:
        print(json.dumps(out))
    else:
        print(f"compacted {out['source']} into a full snapshot: {out['pages']} pages, "
              f"{_human(out['stored_bytes'])} stored, {out['wall_s']:.2f} s", file=sys.stderr)
        print(out["id"])


def cmd_gc(args):
    out = _store(args).gc(dry_run=args.dry_run)
    if args.json:
        print(json.dumps(out))
    else:
        verb = "would free" if args.dry_run else "freed"
        print(f"{verb} {_human(out['freed_bytes'])}: {len(out['removed_packs'])} unreferenced pack(s); "
              f"{out['kept_packs']} in use", file=sys.stderr)


def cmd_check(args):
    from .check import run_checks

    results = run_checks()
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            mark = "ok  " if r["ok"] else "MISSING"
            print(f"{mark:8} {r['name']:28} {r['detail']}")
            if not r["ok"] and r.get("consequence"):
                print(f"{'':8} {'':28} -> {r['consequence']}")
    return 0 if all(r["ok"] or not r.get("required") for r in results) else 1


# -- the service (snapshotd/daemon/): the daemon itself, and verbs that ask it --
def _ask(args, op, bar: bool = False, **kw):
    """One request to the daemon. bar: long work; on a terminal (and without
    --json) the daemon reports its progress and a bar is drawn on stderr."""
    from .daemon.protocol import ProtocolError, call, socket_path
    from .progress import Progress

    shown: list = []

    def on_progress(p):
        if not shown or shown[0].label != p["label"]:
            shown[:] = [Progress(p["label"], int(p["total"]))]
        shown[0].update(int(p["done"]), int(p["total"]))

    want = bar and not args.json and sys.stderr.isatty()
    try:
        return call(socket_path(getattr(args, "socket", None)), op, on_progress=on_progress if want else None, **kw)
    except ProtocolError as e:
        raise CliError(str(e)) from None
    finally:
        for b in shown:
            b.close()


def _when(t) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) if t else "-"


def cmd_daemon(args):
    from .daemon.protocol import ProtocolError, parse_duration, socket_path
    from .daemon.server import DaemonStartError, run

    try:
        retention = parse_duration(args.retention_every)
    except ProtocolError as e:
        raise CliError(f"--retention-every: {e}") from None
    try:
        compact_every = parse_duration(args.compact_every)
    except ProtocolError as e:
        raise CliError(f"--compact-every: {e}") from None
    if args.workers < 1:
        raise CliError("--workers must be at least 1")
    if args.compact_depth < 1 or args.compact_packs < 1:
        raise CliError("--compact-depth and --compact-packs must be at least 1")
    store = _store(args, write=True)  # a file or someone else's directory: say so before starting
    try:
        return run(store.path,
                   socket_path(args.socket), retention_every=retention, workers=args.workers,
                   compact_every=compact_every, compact_depth=args.compact_depth, compact_packs=args.compact_packs)
    except DaemonStartError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"cannot start the daemon: {e.strerror or e}" + (f": {e.filename}" if e.filename else "")) from None


def cmd_register(args):
    from .daemon.protocol import ProtocolError, parse_duration

    try:
        parse_duration(args.every)
    except ProtocolError as e:
        raise CliError(f"--every: {e}") from None
    if args.keep is not None and args.keep < 1:
        raise CliError("--keep must be at least 1")
    r = _ask(args, "register", pid=args.pid, every=args.every, job=args.job, keep=args.keep, name=args.name)
    _emit(args, r, f"registered PID {r['pid']} in job {r['job']}, every {r['every']}"
          + (f", keeping {r['keep']} rounds" if r.get("keep") else "") + f"; next run {_when(r.get('next_run'))} UTC")


def _target(args) -> dict:
    if (args.pid is None) == (args.job is None):
        raise CliError("give either a PID or --job JOBID")
    return {"pid": args.pid} if args.pid is not None else {"job": args.job}


def cmd_unregister(args):
    r = _ask(args, "unregister", **_target(args))
    _emit(args, r, f"unregistered {', '.join(map(str, r['pids'])) or 'nothing'} (job {r['job']}); snapshots kept")


def cmd_status(args):
    r = _ask(args, "status")
    if args.json:
        return _emit(args, r, "")
    print(f"daemon PID {r['daemon_pid']}, store {r['store']}, up since {_when(r['started'])} UTC")
    for name, u in sorted(r.get("upkeep", {}).items()):
        done = (f"removed {u['removed_snapshots']} snapshot(s), {u['removed_packs']} pack(s) "
                f"({_human(u['freed_bytes'])})" if name == "retention" else f"compacted {u['compacted_rounds']} round(s)"
                + (f", last {u['last_compacted']}" if u.get("last_compacted") else ""))
        print(f"{name} every {u['every']}: last run {_when(u['last_run'])} UTC, {done}"
              + (f"; LAST ERROR ({_when(u['last_error_time'])}): {u['last_error']}" if u["last_error"] else ""))
    if not r["trees"]:
        print("no registered trees")
        return
    print(f"{'PID':>7} {'JOB':16} {'NAME':12} {'EVERY':>5} {'STATE':8} {'NEXT RUN (UTC)':19} "
          f"{'LAST SNAPSHOT':32} {'SIZE':>9} {'TOOK':>7}  LAST ERROR")
    for t in r["trees"]:
        state = t["state"] if t["state"] == "active" else f"retired ({t['reason']})"
        print(f"{t['pid']:>7} {t['job']:16} {t['name'] or '-':12} {t['every']:>5} {state:8} "
              f"{_when(t['next_run']):19} {t['last_snapshot'] or '-':32} "
              f"{_human(t['last_bytes']) if t['last_snapshot'] else '-':>9} "
              f"{(str(round(t['last_duration'], 2)) + 's') if t['last_time'] else '-':>7}  {t['last_error'] or '-'}")


def cmd_snapshots(args):
    rows = _ask(args, "snapshots", job=args.job)
    if args.json:
        print(json.dumps(rows))
        return
    if not rows:
        print("no snapshots", file=sys.stderr)
        return
    print(f"{'SNAPSHOT':32} {'JOB':16} {'ROUND':26} {'PID':>7} {'NAME':12} {'CREATED (UTC)':19} {'STORED':>10}")
    for x in rows:
        print(f"{x['snapshot']:32} {x['job']:16} {x['round']:26} {x['pid']:>7} {x['name'] or '-':12} "
              f"{_when(x['created']):19} {_human(x['stored_bytes']):>10}" + ("" if x["complete"] else "  INCOMPLETE"))


def cmd_snapshot_now(args):
    r = _ask(args, "snapshot-now", bar=True, **_target(args))
    if args.json:
        return _emit(args, r, "")
    print(f"round {r['round']} of job {r['job']} in {r['duration_s']:.2f} s", file=sys.stderr)
    for s in r["snapshots"]:
        print(s["snapshot"])


def cmd_rollback(args):
    r = _ask(args, "rollback", bar=True, job=args.job, to=args.to, keep_files=args.keep_files)
    if args.json:
        return _emit(args, r, "")
    print(f"job {r['job']} rolled back to round {r['round']}")
    if r["killed"]:
        print(f"killed old processes: {' '.join(map(str, r['killed']))}")
    for c in r["cut"]:
        print(f"cut {c['path']} from {c['from']} to {c['to']} bytes")
    if r["keep_files"]:
        print("files left as they are (--keep-files)")
    for n in r["notes"]:
        print(f"snapshotd: note: {n}", file=sys.stderr)
    for x in r["restored"]:
        print(f"restored PID {x['pid']} from {x['snapshot']}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="snapshotd", description="Transparent checkpoint/restore of Linux processes.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", metavar="DIR", help="snapshot store directory (default $SNAPSHOTD_STORE or /var/lib/snapshotd)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--socket", metavar="PATH", help="the daemon's socket (default $SNAPSHOTD_SOCKET or /run/snapshotd.sock)")
    p.add_argument("--version", action="version", version=f"snapshotd {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    def add(name, fn, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        sp.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
        sp.add_argument("--store", metavar="DIR", default=argparse.SUPPRESS, help="snapshot store directory")
        return sp

    d = add("dump", cmd_dump, "Snapshot a running process and all its descendants (they keep running). "
            "Prints the snapshot id.")
    d.add_argument("pid", type=int, metavar="PID")
    d.add_argument("--kill", action="store_true", help="kill the whole tree after a successful dump (migration)")
    d.add_argument("--parent", metavar="SNAPSHOT",
                   help="make an incremental snapshot in the chain of SNAPSHOT ('latest': the newest "
                        "snapshot of this PID); only content not yet stored is written")
    d.add_argument("--capture", choices=("auto", "cow", "frozen"), default="auto",
                   help="cow: freeze only for a copy-on-write fork and read memory from it while the process "
                        "runs; frozen: read memory while the process is stopped; auto (default): frozen when few "
                        "pages must be read (tracked incremental snapshots), else cow.  Trees of several "
                        "processes are captured frozen")
    r = add("restore", cmd_restore, "Recreate a process tree from a snapshot, with its PIDs and TIDs. "
            "Prints the root's PID.")
    r.add_argument("snapshot", metavar="SNAPSHOT", help="snapshot id, unique id prefix, or path to a .h5 file")
    ns = r.add_mutually_exclusive_group()
    ns.add_argument("--pidns", dest="pidns", action="store_true", default=None,
                    help="restore into a new PID namespace, where the tree keeps its PIDs (the default when a PID "
                         "is taken); prints the root's PID as seen from outside")
    ns.add_argument("--no-pidns", dest="pidns", action="store_false",
                    help="fail, naming the process that holds it, when a PID is taken")
    add("list", cmd_list, "List the snapshots in the store.")
    s = add("show", cmd_show, "Describe one snapshot.")
    s.add_argument("snapshot", metavar="SNAPSHOT")
    s.add_argument("--full", action="store_true", help="with --json: include the whole image")
    add("check", cmd_check, "Report which kernel features snapshotd can use on this machine.")
    v = add("verify", cmd_verify, "Re-hash every page the snapshots need; report what is damaged or missing "
                                  "(exit 1 if anything is).")
    v.add_argument("snapshot", nargs="*", metavar="SNAPSHOT", help="snapshots to check (default: all)")
    pr = add("prune", cmd_prune, "Remove snapshots a retention policy does not keep (per tree; for a job "
                                 "snapshotted in rounds by the daemon, per round: whole rounds are kept or "
                                 "removed), then garbage-collect unreferenced page packs.")
    pr.add_argument("--keep-last", type=int, default=0, metavar="N", help="keep the newest N of each tree (of each job's complete rounds)")
    pr.add_argument("--keep-hourly", type=int, default=0, metavar="N",
                    help="keep the newest of each of the last N hours that have snapshots")
    pr.add_argument("--keep-daily", type=int, default=0, metavar="N", help="same, per day")
    pr.add_argument("--keep-weekly", type=int, default=0, metavar="N", help="same, per ISO week")
    pr.add_argument("--job", metavar="JOBID", help="only snapshots of this job (by rounds if it has any)")
    pr.add_argument("--tree", metavar="TREE", help="only this tree (HOST:PID as in `show`, or a root PID)")
    pr.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    pr.add_argument("--no-gc", action="store_true", help="do not garbage-collect packs afterwards")
    c = add("compact", cmd_compact, "Write a new full snapshot of the same moment with its pages in packs "
                                    "of its own, so older chain members can be pruned and their packs freed. "
                                    "Prints the new id.")
    c.add_argument("snapshot", metavar="SNAPSHOT")
    g = add("gc", cmd_gc, "Delete page packs that no snapshot references (mark and sweep).")
    g.add_argument("--dry-run", action="store_true", help="say what would be freed, delete nothing")

    def svc(name, fn, help_):
        sp = add(name, fn, help_)
        sp.add_argument("--socket", metavar="PATH", default=argparse.SUPPRESS, help="the daemon's socket (default $SNAPSHOTD_SOCKET or "
                        "/run/snapshotd.sock)")
        return sp

    dm = svc("daemon", cmd_daemon, "Run the snapshot service in the foreground (logs to stderr; SIGTERM stops it).")
    dm.add_argument("--retention-every", default="1m", metavar="DURATION",
                    help="how often retention runs (default 1m)")
    dm.add_argument("--workers", type=int, default=2, help="rounds taken at once (default 2)")
    dm.add_argument("--compact-every", default="6h", metavar="DURATION",
                    help="how often to look for rounds to compact (default 6h); only jobs with --keep are compacted")
    dm.add_argument("--compact-depth", type=int, default=32, metavar="N",
                    help="compact a job's newest complete round once a member is N incremental snapshots deep "
                         "(default 32)")
    dm.add_argument("--compact-packs", type=int, default=64, metavar="N",
                    help="... or once a member's pages lie in N or more page packs (default 64)")
    rg = svc("register", cmd_register, "Have the daemon snapshot a process on a schedule.")
    rg.add_argument("pid", type=int, metavar="PID")
    rg.add_argument("--every", required=True, metavar="DURATION", help="interval: 30s, 10m, 2h ...")
    rg.add_argument("--job", metavar="JOBID", help="snapshot together with the other trees of this job")
    rg.add_argument("--keep", type=int, metavar="N", help="keep the newest N complete rounds of the job")
    rg.add_argument("--name", metavar="NAME", help="a label shown by status and snapshots")
    ur = svc("unregister", cmd_unregister, "Stop snapshotting a process or a job (its snapshots are kept).")
    ur.add_argument("pid", type=int, nargs="?", metavar="PID")
    ur.add_argument("--job", metavar="JOBID")
    svc("status", cmd_status, "Registered trees: next run, last snapshot, its size and duration, last error.")
    sn = svc("snapshots", cmd_snapshots, "Snapshots the daemon took, by round.")
    sn.add_argument("--job", metavar="JOBID")
    nw = svc("snapshot-now", cmd_snapshot_now, "Take a round now for a registered process's job, or a job.")
    nw.add_argument("pid", type=int, nargs="?", metavar="PID")
    nw.add_argument("--job", metavar="JOBID")
    rb = svc("rollback", cmd_rollback, "Kill a job's processes and restore all its trees from one round.")
    rb.add_argument("job", metavar="JOBID")
    rb.add_argument("--to", metavar="SNAPSHOT", help="a round id or a snapshot id of the round (default: newest "
                    "complete round)")
    rb.add_argument("--keep-files", action="store_true",
                    help="do not cut files the job was writing back to their size at the round")
    return p


def main(argv=None) -> int:
    from .dump import DumpError
    from .restore import RestoreError
    from .storage.snapshot import DamagedError, FormatError
    from .storage.store import StoreError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.cmd:
        parser.print_help()
        return 2
    if args.json:
        from . import progress

        progress.ENABLED = False  # never a bar with --json
    try:
        rc = args.fn(args)
        return rc or 0
    except (DumpError, RestoreError, StoreError, FormatError, DamagedError, CliError) as e:
        print(f"snapshotd: error: {e}", file=sys.stderr)
        return 1
    except PermissionError as e:
        print(f"snapshotd: error: permission denied: {e.filename or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("snapshotd: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The `snapshotd` command: main(), then exit at once.  By then every
    file is committed and closed and every thread has finished; tearing the
    interpreter down (freeing each object, joining idle pool threads, closing
    HDF5) only added ~30 ms to each command."""
    rc = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: the output did not arrive
        rc = rc or 1
    os._exit(rc)


if __name__ == "__main__":
    run()
