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

directory = tempfile.mkdtemp(prefix='procsafe-bench-prometheus-')
os.environ['PROMETHEUS_MULTIPROC_DIR'] = directory  # before the import: it selects the mode
try:
    from prometheus_client import CollectorRegistry, Counter
    from prometheus_client.multiprocess import MultiProcessCollector
except ImportError as e:
    shutil.rmtree(directory)
    print('prometheus_client not installed (Debian: python3-prometheus-client): %s' % e, file=sys.stderr)
    sys.exit(77)

from start_line import time_workers


def work(counter, n, series):
    if series == 1:
        for _ in range(n):
            counter.inc()
    else:
        names = [str(i) for i in range(series)]
        for k in range(n):
            counter.labels(names[k % series]).inc()


def main():
    processes, n, series = (int(a) for a in sys.argv[1:4])
    try:
        if series == 1:
            counter = Counter('requests', 'Requests handled.')
        else:
            counter = Counter('requests', 'Requests handled, by series.', ['series'])
        seconds = time_workers(processes, work, counter, n, series)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        total = sum(s.value for m in registry.collect() for s in m.samples if s.name == 'requests_total')
        print('%.0f' % total if float(total).is_integer() else total, seconds)
    finally:
        shutil.rmtree(directory)


if __name__ == '__main__':
    main()
