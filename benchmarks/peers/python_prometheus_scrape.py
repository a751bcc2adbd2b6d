# procsafe-bench peer: what a scrape of Python's prometheus_client costs in
# multiprocess mode. PROCESSES workers (forked, one mmap file each in
# PROMETHEUS_MULTIPROC_DIR) increment a Counter with one label taking SERIES
# values, the k-th increment of a worker to series k % SERIES; once they have
# exited, the parent scrapes SCRAPES times as a /metrics handler in
# multiprocess mode does (a fresh CollectorRegistry, a MultiProcessCollector
# over the directory, generate_latest), timing each scrape.
#
#   /usr/bin/python3 python_prometheus_scrape.py PROCESSES INCREMENTS SERIES SCRAPES
#
# Prints one line: "TOTAL SAMPLES BYTES SECONDS..." (TOTAL: the sum of the
# series read back by an extra, untimed collect; SAMPLES: the sample lines of
# the last scrape's text; BYTES: its length; then each scrape's seconds).
# Exits 77 when prometheus_client is not installed.
import os
import shutil
import sys
import tempfile
import time

directory = tempfile.mkdtemp(prefix='procsafe-bench-scrape-')
os.environ['PROMETHEUS_MULTIPROC_DIR'] = directory  # before the import: it selects the mode
try:
    from prometheus_client import CollectorRegistry, Counter, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector
except ImportError as e:
    shutil.rmtree(directory)
    print('prometheus_client not installed (Debian: python3-prometheus-client): %s' % e, file=sys.stderr)
    sys.exit(77)

from start_line import time_workers


def work(counter, n, series):
    names = [str(i) for i in range(series)]
    for k in range(n):
        counter.labels(names[k % series]).inc()


def scrape():
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return generate_latest(registry)


def main():
    processes, n, series, scrapes = (int(a) for a in sys.argv[1:5])
    try:
        counter = Counter('requests', 'Requests handled, by series.', ['series'])
        time_workers(processes, work, counter, n, series)
        seconds = []
        body = b''
        for _ in range(scrapes):
            start = time.perf_counter()
            body = scrape()
            seconds.append(time.perf_counter() - start)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        total = sum(s.value for m in registry.collect() for s in m.samples if s.name == 'requests_total')
        samples = sum(1 for line in body.split(b'\n') if line and not line.startswith(b'#'))
        print('%.0f' % total, samples, len(body), ' '.join('%.9f' % s for s in seconds))
    finally:
        shutil.rmtree(directory)


if __name__ == '__main__':
    main()
