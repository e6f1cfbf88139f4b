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
           "pages": st.pages, "stored_bytes": int(st.stored_bytes), "killed": bool(args.kill), "pids": st.pids}
    if args.json:
        _emit(args, obj, "")
    else:
        tree = f" and {len(st.pids) - 1} descendants ({' '.join(map(str, st.pids[1:]))})" if len(st.pids) > 1 else ""
        print(f"dumped PID {args.pid}{tree}: {st.pages} pages, {_human(st.stored_bytes)} stored, "
              f"frozen {st.frozen_s * 1000:.1f} ms, {st.wall_s:.2f} s" + (", killed" if args.kill else ""),
              file=sys.stderr)
        print(sid)


def cmd_restore(args):
    from .restore import restore

    store = _store(args)
    with store.open(args.snapshot) as reader:
        pid, st, notes = restore(reader, pidns=args.pidns)
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
            "pid": p["pid"], "ppid": p["ppid"], "pgid": p["pgid"], "sid": p["sid"], "zombie": p.get("zombie", False),
            "comm": p["comm"], "exe": p["exe"], "threads": [t["tid"] for t in p["threads"]],
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
        if p["zombie"]:
            print(f"process {p['pid']} ({p['comm']}) zombie, parent {p['ppid']}")
            continue
        print(f"process {p['pid']} ({p['comm']}) {p['exe']}  parent {p['ppid']} group {p['pgid']} session {p['sid']}")
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="snapshotd", description="Transparent checkpoint/restore of Linux processes.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", metavar="DIR", help="snapshot store directory (default $SNAPSHOTD_STORE or /var/lib/snapshotd)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
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
