# procsafe-bench peer: Python's multiprocessing.Value under get_lock(), the
# tutorial's safe counter; with SERIES > 1, a multiprocessing.Array of SERIES
# counters under its lock, the k-th increment of a worker to element k % SERIES.
#
#   python3 python_multiprocessing_value.py PROCESSES INCREMENTS SERIES
#
# The workers meet at a start barrier; the parent times from their release to
# the last worker's exit and prints "TOTAL SECONDS" (TOTAL read back from the
# shared memory after the workers ended).
import sys
import time
from multiprocessing import Array, Barrier, Event, Process, Value


def work(counter, ready, go, n, series):
    ready.wait()
    go.wait()
    if series == 1:
        for _ in range(n):
            with counter.get_lock():
                counter.value += 1
    else:
        for k in range(n):
            with counter.get_lock():
                counter[k % series] += 1


def main():
    processes, n, series = (int(a) for a in sys.argv[1:4])
    counter = Value('i', 0) if series == 1 else Array('i', series)
    ready, go = Barrier(processes + 1), Event()
    workers = [Process(target=work, args=(counter, ready, go, n, series)) for _ in range(processes)]
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
    total = counter.value if series == 1 else sum(counter[:])
    print(total, seconds)


if __name__ == '__main__':
    main()
