#!/bin/sh
# snapshotd one-shot demo, no daemon: snapshot a running Python computation with
# `snapshotd dump`, kill it, bring it back with `snapshotd restore`. Run as root.
set -eu
dir=$(mktemp -d /tmp/snapshotd-demo.XXXXXX)
store="$dir/store"
python3 "$(dirname "$0")/counter.py" "$dir/log" </dev/null >/dev/null 2>&1 &
pid=$!
sleep 2
echo "== running as PID $pid; last log line: $(tail -n1 "$dir/log")"
id=$(snapshotd --store "$store" dump "$pid")
echo "== snapshot $id taken; the program kept running"
snapshotd --store "$store" list
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
echo "== killed PID $pid; log stops at: $(tail -n1 "$dir/log")"
snapshotd --store "$store" restore "$id"
sleep 2
echo "== restored; same PID, computation continues from the snapshot:"
tail -n3 "$dir/log"
grep -E '^(Name|Pid|PPid)' "/proc/$pid/status"
kill -9 "$pid"
echo "== demo done (files in $dir)"
