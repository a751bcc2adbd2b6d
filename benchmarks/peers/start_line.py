# procsafe-bench peers in Python: the timing every Python peer shares. The
# workers meet at a start barrier; the parent times from their release to
# the last worker's exit (as procsafe's harness does, from a start barrier).
import sys
import time
from multiprocessing import Barrier, Event, Process


def time_workers(processes, work, *args):
    """Runs work(*args) in `processes` forked workers that start together;
    returns the seconds from their release to the last exit. Exits the
    program with an error when a worker failed."""
    ready, go = Barrier(processes + 1), Event()

    def worker():
        ready.wait()
        go.wait()
        work(*args)

    workers = [Process(target=worker) for _ in range(processes)]
    for w in workers:
        w.start()
    ready.wait()  # every worker is at the barrier
    start = time.perf_counter()
    go.set()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - start
    if any(w.exitcode != 0 for w in workers):
        sys.exit('a worker failed')
    return seconds
