# procsafe-bench peer: Python's prometheus_client in multiprocess mode (one
# mmap file per process in PROMETHEUS_MULTIPROC_DIR, merged when scraped), as
# a preforking server uses it: a Counter defined before the fork, incremented
# by every worker; with SERIES > 1, a Counter with one label taking SERIES
# values, the k-th increment of a worker to series k % SERIES.
#
#   /usr/bin/python3 python_prometheus_client.py PROCESSES INCREMENTS SERIES
#
# The workers meet at a start barrier; the parent times from their release to
# the last worker's exit, then collects the files as a scrape would and
# prints "TOTAL SECONDS". Exits 77 when prometheus_client is not installed.
import os
import shutil
import sys
import tempfile
import time

directory = tempfile.mkdtemp(prefix='procsafe-bench-prometheus-')
os.environ['PROMETHEUS_MULTIPROC_DIR'] = directory  # before the import: it selects the mode
try:
    from prometheus_client import CollectorRegistry, Counter
    from prometheus_client.multiprocess import MultiProcessCollector
except ImportError as e:
    shutil.rmtree(directory)
    print('prometheus_client not installed (Debian: python3-prometheus-client): %s' % e, file=sys.stderr)
    sys.exit(77)

from multiprocessing import Barrier, Event, Process


def work(counter, ready, go, n, series):
    names = [str(i) for i in range(series)]
    ready.wait()
    go.wait()
    if series == 1:
        for _ in range(n):
            counter.inc()
    else:
        for k in range(n):
            counter.labels(names[k % series]).inc()


def main():
    processes, n, series = (int(a) for a in sys.argv[1:4])
    try:
        if series == 1:
            counter = Counter('requests', 'Requests handled.')
        else:
            counter = Counter('requests', 'Requests handled, by series.', ['series'])
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
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        total = sum(s.value for m in registry.collect() for s in m.samples if s.name == 'requests_total')
        print('%.0f' % total if float(total).is_integer() else total, seconds)
    finally:
        shutil.rmtree(directory)


if __name__ == '__main__':
    main()
