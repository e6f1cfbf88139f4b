"""py_compute: a CPython interpreter in the middle of a pure-Python loop.

The loop builds a dict (str key -> tuple), a list of floats and a running
polynomial hash over both, one iteration at a time, checking for go every
2000 iterations (with a short sleep).  Everything lives in the interpreter's
heap, frames and evaluation stack.  After go: the data is recomputed from
scratch for the same number of iterations and must be equal, including the
running hash, the dict's insertion order and the interpreter's recursion
and GC machinery (a deep recursion and gc.collect() still work).
"""

import gc
import sys
import time

import zdtmlib

MOD = (1 << 61) - 1


def step(i, d, lst, h):
    key = "k%d" % (i * 7919 % 100003)
    val = (i, i * i % 65537, key[::-1])
    d[key] = val
    x = (i % 1000) / 7.0 + len(d) * 0.5
    lst.append(x)
    h = (h * 1000003 + i * 31 + len(key) + val[1]) % MOD
    h = (h ^ int(x * 1000)) % MOD
    return h


def run(n):
    d, lst, h = {}, [], 7
    for i in range(n):
        h = step(i, d, lst, h)
    return d, lst, h


def depth(n):
    return 0 if n == 0 else 1 + depth(n - 1)


def main():
    st = zdtmlib.State(sys.argv)
    d, lst, h = {}, [], 7
    i = 0
    for i in range(5000):
        h = step(i, d, lst, h)
    i = 5000
    st.ready()
    while True:
        h = step(i, d, lst, h)
        i += 1
        if i % 2000 == 0:
            if st.go():
                break
            time.sleep(0.002)

    d2, lst2, h2 = run(i)
    st.check(h == h2, "running hash %d != recomputed %d after %d steps" % (h, h2, i))
    st.check(d == d2, "dict differs after %d steps" % i)
    st.check(list(d) == list(d2), "dict insertion order differs")
    st.check(lst == lst2, "list differs after %d steps" % i)
    st.check(depth(500) == 500, "deep recursion broken")
    gc.collect()
    st.check(len(d) == len(d2), "dict changed by gc")
    st.finish()


main()
