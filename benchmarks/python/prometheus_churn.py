# prometheus_client's values in procsafe (procsafe.prometheus) against
# prometheus_client's own multiprocess mode, side by side in one run.
#
#   PYTHONPATH=build/dev/python /usr/bin/python3 benchmarks/python/prometheus_churn.py [--quick] [--repeat R]
#
# 1. Cost per call, one process: Counter.inc(), Gauge.set() (livesum),
#    Histogram.observe(), on prometheus_client's default values (one process
#    only, a float under a lock), its multiprocess mode (an mmap file per
#    process) and procsafe; timeit loops, R repetitions interleaved across
#    backends, medians (min..max).
# 2. Worker churn: worker lifetimes, as gunicorn's --max-requests makes them:
#    a forked process makes the app's metrics (a Counter with 5 label values,
#    Gauges of modes livesum and all, a Histogram), serves 20 "requests",
#    exits; multiprocess mode's documented gunicorn hook (mark_process_dead)
#    runs for each. After 10, 100 and 1,000 lifetimes: a scrape as a
#    /metrics handler makes it (a fresh CollectorRegistry, the backend's
#    collector, generate_latest; median of R), the exposition's bytes, and the
#    bytes the backend keeps (procsafe: the segment's bytes in use;
#    multiprocess: its directory's files, allocated blocks). Totals checked
#    (exit 1 when one is wrong), and the bounded growth: procsafe's bytes in
#    use and sample lines after the last stage equal to those after the first
#    (exit 1 otherwise). Timing is printed, never asserted.
#
# --quick (ctest's bench.python_prometheus): 10 and 100 lifetimes, fewer calls.
# Exits 77 when procsafe or prometheus_client cannot be imported.
import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import timeit

try:
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
    from prometheus_client import multiprocess
    import procsafe
    import procsafe.prometheus as pp
except ImportError as e:
    print("prometheus_churn.py: SKIPPED: %s (PYTHONPATH to the built package; python3-prometheus-client)" % e, file=sys.stderr)
    sys.exit(77)

PATHS = ["/", "/a", "/b", "/c", "/d"]
REQUESTS_PER_LIFETIME = 20


def make_metrics():
    return (Counter("app_requests", "Requests.", ["path"], registry=None),
            Gauge("app_inflight", "In flight.", multiprocess_mode="livesum", registry=None),
            Gauge("app_worker_started", "Start time.", multiprocess_mode="all", registry=None),
            Histogram("app_latency_seconds", "Latency.", registry=None))


def lifetime(i):
    requests, inflight, started, latency = make_metrics()
    started.set(i)
    for k in range(REQUESTS_PER_LIFETIME):
        inflight.inc()
        requests.labels(PATHS[k % len(PATHS)]).inc()
        latency.observe(0.001 * (k % 7))
        inflight.dec()


class Backend:
    def __init__(self, name, value_class, collector, stored):
        self.name, self.value_class, self.collector, self.stored = name, value_class, collector, stored
        self.lifetimes = 0

    def run(self, n):
        values.ValueClass = self.value_class
        for _ in range(n):
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    lifetime(self.lifetimes)
                except BaseException:
                    import traceback
                    traceback.print_exc()
                    code = 1
                os._exit(code)
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                sys.exit("a worker of %s failed" % self.name)
            if self.name == "multiprocess":
                multiprocess.mark_process_dead(pid, MP_DIR)  # the gunicorn child_exit hook its docs give
            self.lifetimes += 1

    def scrape(self):
        registry = CollectorRegistry()
        self.collector(registry)
        return generate_latest(registry)


def mp_stored():
    files = [os.path.join(MP_DIR, f) for f in os.listdir(MP_DIR)]
    return sum(os.stat(f).st_blocks * 512 for f in files), len(files)


def ps_stored():
    seg = procsafe.Segment.open(SEGMENT)
    try:
        return seg.size - seg.free_memory(), 1
    finally:
        seg.close()


def total_requests(text):
    from prometheus_client.parser import text_string_to_metric_families
    t = 0
    for f in text_string_to_metric_families(text.decode()):
        for s in f.samples:
            if s.name == "app_requests_total":
                t += s.value
    return t


def fmt(xs, scale=1e9, digits=1):
    xs = [x * scale for x in xs]
    return "%.*f (%.*f..%.*f)" % (digits, statistics.median(xs), digits, min(xs), digits, max(xs))


def main():
    global MP_DIR, SEGMENT
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=None)
    args = ap.parse_args()
    repeat = args.repeat or (3 if args.quick else 7)
    calls = 20_000 if args.quick else 200_000
    stages = (10, 100) if args.quick else (10, 100, 1000)

    MP_DIR = tempfile.mkdtemp(prefix="procsafe-bench-mp-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = MP_DIR
    SEGMENT = "procsafe-bench-prom-%d" % os.getpid()
    status = 0
    try:
        mp_class = values.MultiProcessValue()
        pp.enable(SEGMENT, 64 << 20)
        ps_class = values.ValueClass
        print("procsafe %s, prometheus_client %s, Python %s (%s); %s, %d CPUs"
              % (procsafe.__version__, getattr(prometheus_client, "__version__", "0.16"), platform.python_version(),
                 sys.executable, platform.processor() or platform.machine(), os.cpu_count()))

        # 1. per call
        contenders = {}
        for name, cls in (("default (one process)", values.MutexValue), ("multiprocess", mp_class), ("procsafe", ps_class)):
            values.ValueClass = cls
            c = Counter("bench_calls_%d" % len(contenders), "x", registry=None)
            g = Gauge("bench_gauge_%d" % len(contenders), "x", multiprocess_mode="livesum", registry=None)
            h = Histogram("bench_hist_%d" % len(contenders), "x", registry=None)
            contenders[name] = {"Counter.inc()": c.inc, "Gauge.set(v)": lambda g=g: g.set(3.0),
                                "Histogram.observe(v)": lambda h=h: h.observe(0.3)}
        results = {(n, op): [] for n in contenders for op in contenders[n]}
        for _ in range(repeat):  # interleaved: drift hits every backend alike
            for n, ops in contenders.items():
                for op, fn in ops.items():
                    results[(n, op)].append(timeit.timeit(fn, number=calls) / calls)
        print("\n1. one process, %d calls per timed loop, median of %d (min..max), ns per call" % (calls, repeat))
        print("%-22s %26s %26s %26s %12s" % ("call", *contenders.keys(), "mp/procsafe"))
        for op in next(iter(contenders.values())):
            row = [results[(n, op)] for n in contenders]
            ratio = statistics.median(row[1]) / statistics.median(row[2])
            print("%-22s %26s %26s %26s %11.2fx" % (op, *(fmt(r) for r in row), ratio))

        # 2. churn
        backends = [Backend("procsafe", ps_class, lambda r: pp.ProcsafeCollector(r, SEGMENT), ps_stored),
                    Backend("multiprocess", mp_class, lambda r: multiprocess.MultiProcessCollector(r, MP_DIR), mp_stored)]
        print("\n2. worker lifetimes (each: make the metrics, %d requests, exit); scrape: median of %d (min..max)"
              % (REQUESTS_PER_LIFETIME, repeat))
        print("%-13s %9s %22s %14s %9s %16s %8s" % ("backend", "lifetimes", "scrape ms", "text bytes", "samples",
                                                     "bytes kept", "files"))
        table = {}
        for stage in stages:
            for b in backends:
                b.run(stage - b.lifetimes)
                times, text = [], b""
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    text = b.scrape()
                    times.append(time.perf_counter() - t0)
                kept, files = b.stored()
                lines = sum(1 for ln in text.splitlines() if ln and not ln.startswith(b"#"))
                table[(b.name, stage)] = (statistics.median(times), len(text), lines, kept)
                want = stage * REQUESTS_PER_LIFETIME
                got = total_requests(text)
                if got != want:
                    print("%s after %d lifetimes: app_requests_total %g, not %d" % (b.name, stage, got, want))
                    status = 1
                print("%-13s %9d %22s %14d %9d %16d %8d" % (b.name, stage, fmt(times, 1e3, 2), len(text), lines, kept, files))
        first, last = stages[0], stages[-1]
        print("\nafter %d lifetimes against %d (x: last/first)" % (last, first))
        for b in backends:
            t0, _, l0, k0 = table[(b.name, first)]
            t1, _, l1, k1 = table[(b.name, last)]
            print("  %-13s scrape %.2fx   bytes kept %.2fx   samples %.2fx" % (b.name, t1 / t0, k1 / k0, l1 / l0))
        s_last, m_last = table[("procsafe", last)], table[("multiprocess", last)]
        print("  at %d lifetimes, multiprocess/procsafe: scrape %.1fx, bytes kept %.1fx"
              % (last, m_last[0] / s_last[0], m_last[3] / s_last[3]))
        if table[("procsafe", last)][3] != table[("procsafe", first)][3] or \
                table[("procsafe", last)][2] != table[("procsafe", first)][2]:
            print("FAILED: procsafe's bytes in use or samples grew with the lifetimes")
            status = 1
        else:
            print("bounded: procsafe's bytes in use and samples after %d lifetimes equal those after %d" % (last, first))
    finally:
        pp.disable()
        shutil.rmtree(MP_DIR, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
