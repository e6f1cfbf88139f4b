"""snapshotd command line: parsing and printing only."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import __version__

EPILOG = """\
The store is --store, else $SNAPSHOTD_STORE, else /var/lib/snapshotd.
Examples:
  snapshotd dump 4242                 snapshot PID 4242 (it keeps running)
  snapshotd restore 20261125-181500-4242-a1b2
  snapshotd list --json
"""


class CliError(Exception):
    pass


def _store(args):
    from .storage.store import DEFAULT_STORE, Store

    return Store(args.store or os.environ.get("SNAPSHOTD_STORE") or DEFAULT_STORE)


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
    from .dump import dump

    sid, st = dump(args.pid, _store(args), kill=args.kill)
    obj = {"id": sid, "pid": args.pid, "frozen_s": round(st.frozen_s, 6), "wall_s": round(st.wall_s, 6),
           "pages": st.pages, "stored_bytes": int(st.stored_bytes), "killed": bool(args.kill)}
    if args.json:
        _emit(args, obj, "")
    else:
        print(f"dumped PID {args.pid}: {st.pages} pages, {_human(st.stored_bytes)} stored, "
              f"frozen {st.frozen_s * 1000:.1f} ms, {st.wall_s:.2f} s" + (", process killed" if args.kill else ""),
              file=sys.stderr)
        print(sid)


def cmd_restore(args):
    from .restore import restore

    store = _store(args)
    with store.open(args.snapshot) as reader:
        pid, st, notes = restore(reader)
    for n in notes:
        print(f"snapshotd: note: {n}", file=sys.stderr)
    if args.json:
        _emit(args, {"pid": pid, "snapshot": args.snapshot, "wall_s": round(st.wall_s, 6), "pages": st.pages,
                     "notes": notes}, "")
    else:
        print(f"restored PID {pid} in {st.wall_s:.2f} s", file=sys.stderr)
        print(pid)


def cmd_list(args):
    rows = _store(args).list()
    if args.json:
        print(json.dumps(rows, default=str))
        return
    if not rows:
        print("no snapshots", file=sys.stderr)
        return
    print(f"{'ID':32} {'PID':>7} {'KIND':5} {'CREATED (UTC)':20} {'STORED':>10}")
    for r in rows:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.get("created", 0)))
        print(f"{r['id']:32} {r.get('root_pid', '?'):>7} {r.get('kind', '?'):5} {created:20} "
              f"{_human(r.get('file_bytes', 0)):>10}")


def cmd_show(args):
    store = _store(args)
    with store.open(args.snapshot) as r:
        attrs = dict(r.attrs)
        image = r.image()
        procs = [{
            "pid": p["pid"], "comm": p["comm"], "exe": p["exe"], "threads": [t["tid"] for t in p["threads"]],
            "mappings": len(p["mappings"]), "fds": [f["fd"] for f in p["fds"]],
            "pages": int(len(r.page_table(p["pid"])[0])),
        } for p in image["processes"]]
    if args.json:
        print(json.dumps({"attrs": attrs, "processes": procs, "image": image if args.full else None}, default=str))
        return
    for k in ("id", "kind", "parent", "root_pid", "hostname", "format_version", "stored_bytes", "unique_pages"):
        if k in attrs:
            print(f"{k:15} {attrs[k]}")
    print(f"{'created':15} {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(attrs.get('created', 0)))}")
    for p in procs:
        print(f"process {p['pid']} ({p['comm']}) {p['exe']}")
        print(f"  threads  {' '.join(map(str, p['threads']))}")
        print(f"  mappings {p['mappings']}   pages {p['pages']}   fds {' '.join(map(str, p['fds']))}")


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
def _ask(args, op, **kw):
    from .daemon.protocol import ProtocolError, call, socket_path

    try:
        return call(socket_path(getattr(args, "socket", None)), op, **kw)
    except ProtocolError as e:
        raise CliError(str(e)) from None


def _when(t) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) if t else "-"


def cmd_daemon(args):
    from .daemon.protocol import ProtocolError, parse_duration, socket_path
    from .daemon.server import DaemonStartError, run

    try:
        retention = parse_duration(args.retention_every)
    except ProtocolError as e:
        raise CliError(f"--retention-every: {e}") from None
    if args.workers < 1:
        raise CliError("--workers must be at least 1")
    from .storage.store import DEFAULT_STORE

    try:
        return run(args.store or os.environ.get("SNAPSHOTD_STORE") or DEFAULT_STORE,
                   socket_path(args.socket), retention_every=retention, workers=args.workers)
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
    r = _ask(args, "snapshot-now", **_target(args))
    if args.json:
        return _emit(args, r, "")
    print(f"round {r['round']} of job {r['job']} in {r['duration_s']:.2f} s", file=sys.stderr)
    for s in r["snapshots"]:
        print(s["snapshot"])


def cmd_rollback(args):
    r = _ask(args, "rollback", job=args.job, to=args.to, keep_files=args.keep_files)
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

    d = add("dump", cmd_dump, "Snapshot a running process (it keeps running). Prints the snapshot id.")
    d.add_argument("pid", type=int, metavar="PID")
    d.add_argument("--kill", action="store_true", help="kill the process after a successful dump (migration)")
    r = add("restore", cmd_restore, "Recreate a process from a snapshot, with its PID and TIDs. Prints the PID.")
    r.add_argument("snapshot", metavar="SNAPSHOT", help="snapshot id, unique id prefix, or path to a .h5 file")
    add("list", cmd_list, "List the snapshots in the store.")
    s = add("show", cmd_show, "Describe one snapshot.")
    s.add_argument("snapshot", metavar="SNAPSHOT")
    s.add_argument("--full", action="store_true", help="with --json: include the whole image")
    add("check", cmd_check, "Report which kernel features snapshotd can use on this machine.")

    def svc(name, fn, help_):
        sp = add(name, fn, help_)
        sp.add_argument("--socket", metavar="PATH", default=argparse.SUPPRESS, help="the daemon's socket (default $SNAPSHOTD_SOCKET or "
                        "/run/snapshotd.sock)")
        return sp

    dm = svc("daemon", cmd_daemon, "Run the snapshot service in the foreground (logs to stderr; SIGTERM stops it).")
    dm.add_argument("--retention-every", default="1m", metavar="DURATION",
                    help="how often retention runs (default 1m)")
    dm.add_argument("--workers", type=int, default=2, help="rounds taken at once (default 2)")
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


if __name__ == "__main__":
    sys.exit(main())
