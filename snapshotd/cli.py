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

    sid, st = dump(args.pid, _store(args), kill=args.kill, parent=args.parent, capture=args.capture)
    for n in st.notes:
        print(f"snapshotd: note: {n}", file=sys.stderr)
    obj = {"id": sid, "pid": args.pid, "frozen_s": round(st.frozen_s, 6), "wall_s": round(st.wall_s, 6),
           "pages": st.pages, "stored_bytes": int(st.stored_bytes), "killed": bool(args.kill),
           "kind": "incremental" if args.parent else "full", "tracker": st.tracker, "capture": st.capture,
           "unchanged_pages": st.unchanged_pages, "new_pages": st.new_pages}
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

    d = add("dump", cmd_dump, "Snapshot a running process (it keeps running). Prints the snapshot id.")
    d.add_argument("pid", type=int, metavar="PID")
    d.add_argument("--kill", action="store_true", help="kill the process after a successful dump (migration)")
    d.add_argument("--parent", metavar="SNAPSHOT",
                   help="make an incremental snapshot: store only what changed since SNAPSHOT "
                        "(id, prefix, or 'latest' = the newest snapshot of this PID)")
    d.add_argument("--capture", choices=("auto", "cow", "frozen"), default="auto",
                   help="cow: freeze only for a copy-on-write fork and read memory from it while the process "
                        "runs; frozen: read memory while the process is stopped; auto (default): frozen when few "
                        "pages must be read (tracked incremental snapshots), else cow")
    r = add("restore", cmd_restore, "Recreate a process from a snapshot, with its PID and TIDs. Prints the PID.")
    r.add_argument("snapshot", metavar="SNAPSHOT", help="snapshot id, unique id prefix, or path to a .h5 file")
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
