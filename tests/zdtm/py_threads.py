"""py_threads: a multithreaded CPython program.

Four worker threads each run a pure-Python accumulation (a running hash
over an integer sequence) and, in pairs, pass numbered items through a
queue.Queue (producer -> consumer), while the main thread polls for go.
threading.get_native_id() of every thread is recorded first.  After go the
main thread sets a stop Event; each worker checks its native id is
unchanged and reports its step count and hash; after join() the main
thread recomputes each hash and checks every queued item arrived exactly
once, in order.
"""

import queue
import sys
import threading
import time

import zdtmlib

MOD = (1 << 61) - 1
stop = threading.Event()
results = {}


def accumulate(seed, n):
    h = seed
    for i in range(n):
        h = (h * 6364136223846793005 + i + seed) % MOD
    return h


def worker(idx, started):
    tid0 = threading.get_native_id()
    started.release()
    h, n = idx + 1, 0
    while not stop.is_set():
        for _ in range(500):
            h = (h * 6364136223846793005 + n + idx + 1) % MOD
            n += 1
        time.sleep(0.001)
    results[idx] = (tid0, threading.get_native_id(), n, h)


def producer(q, started):
    started.release()
    k = 0
    while not stop.is_set():
        q.put(k)
        k += 1
        time.sleep(0.001)
    q.put(None)
    results["produced"] = k


def consumer(q, started):
    started.release()
    got = []
    while True:
        item = q.get()
        if item is None:
            break
        got.append(item)
    results["consumed"] = got


def main():
    st = zdtmlib.State(sys.argv)
    started = threading.Semaphore(0)
    q = queue.Queue(maxsize=64)
    threads = [threading.Thread(target=worker, args=(i, started)) for i in range(4)]
    threads += [threading.Thread(target=producer, args=(q, started)),
                threading.Thread(target=consumer, args=(q, started))]
    for t in threads:
        t.start()
    for _ in threads:
        started.acquire()
    main_tid = threading.get_native_id()
    st.ready()
    while not st.go():
        time.sleep(0.002)

    st.check(threading.get_native_id() == main_tid, "main native id changed")
    stop.set()
    for t in threads:
        t.join(timeout=20)
        st.check(not t.is_alive(), "thread %s did not finish" % t.name)
    for idx in range(4):
        if idx not in results:
            st.fail("worker %d reported nothing" % idx)
            continue
        tid0, tid1, n, h = results[idx]
        st.check(tid0 == tid1, "worker %d native id %d -> %d" % (idx, tid0, tid1))
        st.check(n > 0, "worker %d did no work" % idx)
        st.check(h == accumulate(idx + 1, n), "worker %d hash wrong after %d steps" % (idx, n))
    st.check(results.get("consumed") == list(range(results.get("produced", -1))),
             "queue items lost, duplicated or reordered")
    st.finish()


main()
