"""tcp_peer: the other host of zdtm/net_tcp_two_hosts.c, run in another
network namespace and never dumped: it must not notice that its peer was
dumped, killed and restored.

    tcp_peer.py ADDRESS PORT STATEDIR

Listens (with a small receive buffer), writes STATEDIR/peer_listening,
accepts one connection, reads and checks 100000 bytes, sends 50000 that the
program leaves queued, and leaves the program's next bytes unread (their
count: STATEDIR/tail, written by the program).  When STATEDIR/gap appears it sends
4096 more bytes (the program is away by then: they must reach it after its
restore).  When STATEDIR/go appears: reads those bytes and 1 MB, sends
1 MB, expects a clean end of file, closes.  Writes STATEDIR/peer_result:
PASS, or FAIL: what it saw (a reset, an early end of file, wrong bytes).
"""
import os
import socket
import sys
import time

import numpy as np

FIRST, QUEUED, GAP, MORE = 100000, 50000, 4096, 1 << 20


def mix(lo: int, n: int) -> bytes:
    """Low bytes of zdtm_mix(lo .. lo+n-1) (splitmix64, zdtm.h)."""
    with np.errstate(over="ignore"):
        x = np.arange(lo, lo + n, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x & np.uint64(0xFF)).astype(np.uint8).tobytes()


def read_n(c: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        got = c.recv(n - len(out))
        if not got:
            raise EOFError(f"end of file after {len(out)} of {n} bytes")
        out += got
    return bytes(out)


def wait_file(path: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise TimeoutError(f"no {os.path.basename(path)} after {timeout} s")
        time.sleep(0.01)


def main() -> str:
    addr, port, sd = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # the program's window fills up
    ls.bind((addr, port))
    ls.listen(1)
    open(os.path.join(sd, "peer_listening"), "w").close()
    ls.settimeout(20)
    c, _ = ls.accept()
    ls.close()
    c.settimeout(30)
    if read_n(c, FIRST) != mix(0, FIRST):
        return "FAIL: first 100000 bytes differ"
    c.sendall(mix(11, QUEUED))
    wait_file(os.path.join(sd, "gap_go"), 60) if os.path.exists(os.path.join(sd, "expect_gap")) else None
    if os.path.exists(os.path.join(sd, "gap_go")):
        c.sendall(mix(11 + QUEUED, GAP))
        open(os.path.join(sd, "gap"), "w").close()
    wait_file(os.path.join(sd, "go"), 60)
    tail = int(open(os.path.join(sd, "tail")).read())
    if read_n(c, tail) != mix(FIRST, tail):
        return f"FAIL: the {tail} bytes queued on both sides differ"
    if read_n(c, MORE) != mix(23, MORE):
        return "FAIL: 1 MB after restore differs"
    c.sendall(mix(37, MORE))
    if c.recv(1) != b"":
        return "FAIL: data instead of end of file"
    c.close()
    return "PASS"


if __name__ == "__main__":
    try:
        res = main()
    except Exception as e:  # a reset shows here as ConnectionResetError
        res = f"FAIL: {type(e).__name__}: {e}"
    sd = sys.argv[3]
    with open(os.path.join(sd, "peer_result.tmp"), "w") as f:
        f.write(res + "\n")
    os.rename(os.path.join(sd, "peer_result.tmp"), os.path.join(sd, "peer_result"))
