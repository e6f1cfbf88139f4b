#!/bin/sh
# snapshotd demo: the service. A daemon on a private socket and store takes a
# snapshot of a running Python computation every 2 s; the computation is killed
# (SIGKILL); `snapshotd rollback` brings it back from the last round, with the
# same PID, and its log carries on with no gap and no repeat. Run as root.
# Leaves nothing running; its files stay in the directory it names.
# (examples/demo-oneshot.sh: the same without a daemon, `dump` then `restore`.)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/snapshotd-demo.XXXXXX)
sock="$dir/snapshotd.sock"    # never the system's /run/snapshotd.sock
store="$dir/store"            # never the system's /var/lib/snapshotd
log="$dir/counter.log"
job=demo
daemon= pid=

sd() { snapshotd --socket "$sock" --store "$store" "$@"; }

running() {  # PID exists and is not a zombie
    [ -r "/proc/$1/stat" ] && [ "$(sed 's/.*) //; s/ .*//' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

cleanup() {
    rc=$?
    set +e
    if [ -n "$daemon" ]; then
        echo "== stopping the daemon (SIGTERM to PID $daemon)"
        kill -TERM "$daemon" 2>/dev/null
        i=0
        while running "$daemon" && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        running "$daemon" && kill -KILL "$daemon" 2>/dev/null
        wait "$daemon" 2>/dev/null
    fi
    # the computation, by PID, if that PID still is our counter
    if [ -n "$pid" ] && grep -qa counter.py "/proc/$pid/cmdline" 2>/dev/null; then
        echo "== killing the computation (PID $pid)"
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$sock"
    if [ "$rc" -ne 0 ]; then
        echo "== demo FAILED; the daemon's log ($dir/daemon.log):" >&2
        tail -n 20 "$dir/daemon.log" >&2 2>/dev/null
    fi
    echo "== nothing left running; files in $dir (rm -rf it when done)"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== starting the daemon: socket $sock, store $store"
snapshotd --socket "$sock" --store "$store" daemon 2>"$dir/daemon.log" &
daemon=$!
i=0
until sd status >/dev/null 2>&1; do
    running "$daemon" || { echo "== the daemon exited" >&2; exit 1; }
    [ $i -lt 100 ] || { echo "== the daemon did not answer within 10 s" >&2; exit 1; }
    sleep 0.1; i=$((i + 1))
done
echo "== daemon PID $daemon is up"

python3 "$here/counter.py" "$log" </dev/null >/dev/null 2>&1 &
pid=$!
echo "== computation started: PID $pid ($here/counter.py, appending to $log)"

echo "== snapshotd register $pid --every 2s --job $job"
sd register "$pid" --every 2s --job "$job"

echo "== waiting for two rounds of job $job"
rounds() {
    sd snapshots --job "$job" --json |
        python3 -c 'import json, sys; print(len({r["round"] for r in json.load(sys.stdin) if r["complete"]}))'
}
i=0
while :; do
    n=$(rounds) || n=0
    [ "$n" -ge 2 ] && break
    running "$daemon" || { echo "== the daemon exited" >&2; exit 1; }
    [ $i -lt 300 ] || { echo "== no two rounds within 30 s" >&2; sd status >&2; exit 1; }
    sleep 0.1; i=$((i + 1))
done

sleep 1   # the computation runs on past the last round
kill -KILL "$pid"
wait "$pid" 2>/dev/null || true
size=$(wc -c <"$log")
echo "== killed PID $pid with SIGKILL; its log stops at: $(tail -n1 "$log")"
echo "== the rounds the daemon took (snapshotd snapshots --job $job):"
sd snapshots --job "$job"

echo "== snapshotd rollback $job"
out=$(sd rollback "$job")
echo "$out"
cut_to=$(echo "$out" | sed -n "s|^cut $log from [0-9]* to \\([0-9]*\\) bytes\$|\\1|p")
: "${cut_to:=$size}"   # nothing cut: no line was written after the round
at_round=$(head -c "$cut_to" "$log" | tail -n1)
step=$(echo "$at_round" | cut -d' ' -f2)

sleep 2
running "$pid" && grep -qa counter.py "/proc/$pid/cmdline" ||
    { echo "== PID $pid is not running after the rollback" >&2; exit 1; }
echo "== the same PID $pid runs again: $(grep -E '^(Name|Pid|PPid):' "/proc/$pid/status" | tr -s '\t\n' '  ' | sed 's/ $//')"
echo "== the log was cut back to the round (last line then: $at_round) and continues from it:"
grep -A4 "^step $step " "$log"
echo "   ..."
tail -n1 "$log"
awk '$2 != NR - 1 { bad = 1; print "   line " NR ": " $0 " (expected step " NR - 1 ")" }
     END { if (bad) exit 1; print "== checked: steps 0 to " NR - 1 ", each exactly once, no gap, no repeat" }' "$log"
