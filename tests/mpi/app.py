"""A small MPI job for the checkpoint/restore test (tests/test_mpi.py).

Run as `mpiexec -n N python app.py OUTDIR STEPS`.  Each rank keeps a vector
of floats and, every step, mixes it with its ring neighbours' (sendrecv)
and with the global sum and maximum (allreduce), so every step depends on
every rank's previous one.  Rank 0 writes OUTDIR/step (the last finished
step) as it goes, and OUTDIR/result (a digest of every rank's final vector)
at the end.  A short sleep per step makes the job last long enough to be
dumped mid-run; the result does not depend on timing.
"""
import hashlib
import os
import sys
import time

from mpi4py import MPI


def main() -> None:
    outdir, steps = sys.argv[1], int(sys.argv[2])
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    vec = [float((rank + 1) * (i + 1) % 17) for i in range(64)]
    for step in range(steps):
        left = comm.sendrecv(vec[:8], dest=(rank + 1) % size, source=(rank - 1) % size)
        total = comm.allreduce(sum(vec), op=MPI.SUM)
        top = comm.allreduce(max(vec), op=MPI.MAX)
        vec = [(v * 0.999 + left[i % 8] * 0.001 + (total % 97.0) / (1 + top)) % 1000.0
               for i, v in enumerate(vec)]
        if rank == 0 and step % 5 == 0:
            with open(os.path.join(outdir, "step.tmp"), "w") as f:
                f.write(str(step))
            os.replace(os.path.join(outdir, "step.tmp"), os.path.join(outdir, "step"))
        time.sleep(0.01)
    every = comm.gather(vec, root=0)
    if rank == 0:
        digest = hashlib.sha256(repr(every).encode()).hexdigest()
        with open(os.path.join(outdir, "result.tmp"), "w") as f:
            f.write(f"{size} {steps} {digest}\n")
        os.replace(os.path.join(outdir, "result.tmp"), os.path.join(outdir, "result"))


if __name__ == "__main__":
    main()
