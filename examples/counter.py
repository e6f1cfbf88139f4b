"""A long computation to checkpoint: it appends one line per step to a log."""
import sys
import time

log = open(sys.argv[1], "a", buffering=1)
total = 0
for step in range(10**9):
    total += sum(i * i for i in range(20000))
    log.write(f"step {step} total {total}\n")
    time.sleep(0.2)
