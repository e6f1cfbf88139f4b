"""zdtmlib: the ZDTM protocol for the Python test programs (see zdtm.h).

    st = zdtmlib.State(sys.argv)   # STATEDIR, made absolute
    ...set up...
    st.ready()
    while not st.go(): ...work...
    ...verify, calling st.fail("reason") for each problem...
    st.finish()                    # writes result: PASS / FAIL: reasons
"""

import os
import sys


class State:
    def __init__(self, argv):
        if len(argv) < 2:
            sys.exit("usage: prog STATEDIR")
        self.dir = os.path.abspath(argv[1])
        self.failures = []

    def path(self, name):
        return os.path.join(self.dir, name)

    def _write(self, name, text):
        tmp = self.path(name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, self.path(name))

    def ready(self):
        self._write("ready", "ready\n")

    def go(self):
        return os.path.exists(self.path("go"))

    def fail(self, reason):
        reason = " ".join(str(reason).split())
        print("FAIL:", reason, file=sys.stderr, flush=True)
        self.failures.append(reason)

    def check(self, cond, reason):
        if not cond:
            self.fail(reason)

    def finish(self):
        if self.failures:
            self._write("result", "FAIL: " + "; ".join(self.failures[:8]) + "\n")
        else:
            self._write("result", "PASS\n")
        sys.exit(0)
