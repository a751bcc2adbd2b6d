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
from multiprocessing import Array, Value

from start_line import time_workers


def work(counter, n, series):
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
    seconds = time_workers(processes, work, counter, n, series)
    total = counter.value if series == 1 else sum(counter[:])
    print(total, seconds)


if __name__ == '__main__':
    main()
