# procsafe from Python, against what Python users count with today.
#
#   /usr/bin/python3 benchmarks/python/bench.py [--quick] [--check] [--repeat R]
#
# 1. Processes: P forked processes x N increments of one counter (default
#    10 x 100,000, seed 000's workload), from Python: procsafe's drop-in Value
#    (add, increment, and get_lock() as seed 000 writes it), a segment's
#    atomic_counter and sharded_counter, against multiprocessing.Value +
#    get_lock() (seed 000's safe counter) and prometheus_client's counter in
#    multiprocess mode. The workers meet at a start barrier; the clock runs
#    from its release to the last worker's finish stamp (their exit is not
#    counted); ns/incr is that wall time over all P x N increments.
# 2. One process, per call: each increment against the floor, a no-op
#    METH_NOARGS method of a C type (procsafe._procsafe._Noop().noop()), and
#    add(1) against the no-op that takes an argument too (noop1(1), METH_O),
#    in the same timeit loop; an empty loop measures the loop itself.
#
# Every contender runs R times (default 5), the repetitions interleaved
# across contenders so that drift on a shared machine hits them alike;
# medians are printed with min..max. Totals are checked (exit 1 when one is
# wrong); timing is not, unless --check (exit 1 when a target is missed).
# --quick: small sizes, one repetition per process contender (ctest's smoke
# test). Exits 77 when procsafe cannot be imported.
import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import timeit
from multiprocessing import Barrier, Event, Process, RawArray

# prometheus_client picks its multiprocess mode at import, from this variable.
PROMETHEUS_DIR = tempfile.mkdtemp(prefix='procsafe-bench-python-')
os.environ['PROMETHEUS_MULTIPROC_DIR'] = PROMETHEUS_DIR

import multiprocessing  # noqa: E402

try:
    import prometheus_client  # noqa: E402
    from prometheus_client import CollectorRegistry, Counter  # noqa: E402
    from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402
except ImportError:
    prometheus_client = None

try:
    import procsafe  # noqa: E402
    from procsafe import _procsafe  # noqa: E402
except ImportError as e:
    shutil.rmtree(PROMETHEUS_DIR)
    print(f'bench.py: SKIPPED: procsafe cannot be imported ({e}); set PYTHONPATH to the built package',
          file=sys.stderr)
    sys.exit(77)

# Targets (issue 20): an increment within 1.5x of a no-op C method call (per
# call, one process), and at least 15x faster than multiprocessing.Value +
# get_lock() on seed 000's workload (P processes).
NOOP_RATIO_MAX = 1.5
MP_SPEEDUP_MIN = 15.0


# ---- 1. P processes x N increments ----------------------------------------

def time_workers(processes, work):
    """Runs work() in `processes` forked workers released together; returns
    the seconds from the release to the last worker's finish stamp."""
    ready, go = Barrier(processes + 1), Event()
    done = RawArray('d', processes)  # each worker's perf_counter() at its end (one clock for all: Linux)

    def worker(i):
        ready.wait()
        go.wait()
        work()
        done[i] = time.perf_counter()

    workers = [Process(target=worker, args=(i,)) for i in range(processes)]
    for w in workers:
        w.start()
    ready.wait()
    start = time.perf_counter()
    go.set()
    for w in workers:
        w.join()
    if any(w.exitcode != 0 for w in workers):
        raise RuntimeError('a worker failed')
    return max(done) - start


def value_get_lock(module):  # seed 000's SafeCounter.increment(), inlined, on module.Value
    def make(n):
        v = module.Value('i', 0)

        def work():
            for _ in range(n):
                with v.get_lock():
                    v.value += 1
        return work, lambda: v.value
    return make


def procsafe_value_add(n):
    v = procsafe.Value('q', 0)

    def work():
        for _ in range(n):
            v.add(1)
    return work, lambda: v.value


def procsafe_value_increment(n):
    v = procsafe.Value('q', 0)

    def work():
        for _ in range(n):
            v.increment()
    return work, lambda: v.value


def segment_counter(kind):  # Segment.atomic_counter, .sharded_counter: make(n) for the contender table
    def make(n):
        seg = procsafe.Segment.anonymous(1 << 16)  # inherited by the forked workers
        c = getattr(seg, kind)('requests')

        def work():
            for _ in range(n):
                c.increment()
        return work, lambda: (seg, c.value())[1]
    return make


def prometheus_counter(n):
    name = f'requests{time.perf_counter_ns()}'  # a fresh series each run (files are per pid)
    c = Counter(name, 'Requests handled.', registry=None)

    def work():
        for _ in range(n):
            c.inc()

    def total():
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=PROMETHEUS_DIR)
        return sum(s.value for m in registry.collect() for s in m.samples if s.name == name + '_total')
    return work, total


def noop_floor(n):  # not a counter: the cost of the call itself, in P processes
    noop = _procsafe._Noop()

    def work():
        for _ in range(n):
            noop.noop()
    return work, None


PROCESS_CONTENDERS = [
    ('multiprocessing.Value + get_lock() (seed 000)', value_get_lock(multiprocessing)),
    ('procsafe.Value + get_lock() (import changed)', value_get_lock(procsafe)),
    ('procsafe.Value.add(1)', procsafe_value_add),
    ('procsafe.Value.increment()', procsafe_value_increment),
    ('Segment.atomic_counter().increment()', segment_counter('atomic_counter')),
    ('Segment.sharded_counter().increment()', segment_counter('sharded_counter')),
    ('prometheus_client Counter.inc() (multiprocess)', prometheus_counter),
    ('floor: _Noop().noop() (counts nothing)', noop_floor),
]


# ---- 2. one process, per call ------------------------------------------------

def call_contenders():
    mp_v = multiprocessing.Value('i', 0)
    ps_v = procsafe.Value('q', 0)
    seg = procsafe.Segment.anonymous(1 << 20)
    env = {
        'noop': _procsafe._Noop(),
        'mp_v': mp_v,
        'ps_v': ps_v,
        'ps_vl': procsafe.Value('i', 0),
        'atomic': seg.atomic_counter('atomic'),
        'sharded': seg.sharded_counter('sharded'),
        'mutex': seg.mutex_counter('mutex'),
    }
    if prometheus_client:
        env['prom'] = Counter('calls', 'Calls.', registry=None)
    rows = [
        ('empty loop', 'pass'),
        ('floor: _Noop().noop()', 'noop.noop()'),
        ('floor: _Noop().noop1(1)', 'noop.noop1(1)'),
        ('procsafe.Value.add(1)', 'ps_v.add(1)'),
        ('procsafe.Value.increment()', 'ps_v.increment()'),
        ('atomic_counter.increment()', 'atomic.increment()'),
        ('sharded_counter.increment()', 'sharded.increment()'),
        ('mutex_counter.increment()', 'mutex.increment()'),
        ('procsafe.Value + get_lock()', 'with ps_vl.get_lock():\n    ps_vl.value += 1'),
        ('multiprocessing.Value + get_lock()', 'with mp_v.get_lock():\n    mp_v.value += 1'),
    ]
    if prometheus_client:
        rows.append(('prometheus_client Counter.inc()', 'prom.inc()'))
    return rows, env, seg


# ---- the run -------------------------------------------------------------------

def spread(values, fmt):
    return f'{fmt.format(statistics.median(values))} ({fmt.format(min(values))}..{fmt.format(max(values))})'


def main():
    parser = argparse.ArgumentParser(description='procsafe from Python, against multiprocessing and prometheus_client')
    parser.add_argument('--quick', action='store_true', help='small sizes, for a smoke test')
    parser.add_argument('--check', action='store_true', help='exit 1 when a target is missed')
    parser.add_argument('--processes', type=int, help='default 10 (quick: 4)')
    parser.add_argument('--increments', type=int, help='per process; default 100,000 (quick: 2,000)')
    parser.add_argument('--calls', type=int, help='per timed loop, one process; default 1,000,000 (quick: 20,000)')
    parser.add_argument('--repeat', type=int, help='repetitions of each contender; default 5 (quick: 1 and 3)')
    o = parser.parse_args()
    P = o.processes or (4 if o.quick else 10)
    N = o.increments or (2000 if o.quick else 100000)
    calls = o.calls or (20000 if o.quick else 1000000)
    reps = o.repeat or (1 if o.quick else 5)
    call_reps = o.repeat or (3 if o.quick else 7)
    cpus = len(os.sched_getaffinity(0))
    cpu = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name')),
               platform.processor())
    print(f'procsafe {getattr(procsafe, "__version__", "?")} from Python {platform.python_version()} '
          f'({sys.executable}); {cpu}, {cpus} CPUs; start method fork')
    if not prometheus_client:
        print('prometheus_client not installed (Debian: python3-prometheus-client): its rows are skipped')

    contenders = [(name, make) for name, make in PROCESS_CONTENDERS
                  if prometheus_client or make is not prometheus_counter]
    seconds = {name: [] for name, _ in contenders}
    wrong = []
    for _ in range(reps):  # interleaved: each repetition runs every contender once
        for name, make in contenders:
            work, total = make(N)
            seconds[name].append(time_workers(P, work))
            if total is not None and total() != P * N:
                wrong.append(f'{name}: {total()} of {P * N}')

    print(f'\n1. {P} processes x {N:,} increments of one counter'
          f'{f" on {cpus} CPUs (oversubscribed)" if P > cpus else f" on {cpus} CPUs"}; '
          f'median of {reps} (min..max), from the start barrier to the last finish')
    base = statistics.median(seconds[contenders[0][0]])
    floor = statistics.median(seconds[contenders[-1][0]])
    print(f'{"contender":<48} {"ns/incr (min..max)":>26} {"total":>7} {"x faster than mp":>17} {"x floor":>8}')
    for name, _ in contenders:
        s = seconds[name]
        ns = [x * 1e9 / (P * N) for x in s]
        ok = 'n/a' if 'floor' in name else ('WRONG' if any(w.startswith(name + ':') for w in wrong) else 'exact')
        print(f'{name:<48} {spread(ns, "{:.1f}"):>26} {ok:>7} {base / statistics.median(s):>16.1f}x '
              f'{statistics.median(s) / floor:>7.2f}x')

    rows, env, seg = call_contenders()
    per_call = {name: [] for name, _ in rows}
    timers = [(name, timeit.Timer(stmt, globals=env)) for name, stmt in rows]
    for _ in range(call_reps):
        for name, timer in timers:
            per_call[name].append(timer.timeit(calls) * 1e9 / calls)
    loop = statistics.median(per_call['empty loop'])
    noop = statistics.median(per_call['floor: _Noop().noop()'])
    mp = statistics.median(per_call['multiprocessing.Value + get_lock()'])
    print(f'\n2. one process, {calls:,} calls per timed loop (timeit), median of {call_reps} (min..max); '
          f'the loop alone costs {loop:.1f} ns')
    print(f'{"call":<36} {"ns/call, loop included":>26} {"minus loop":>11} {"x no-op":>8} {"x faster than mp":>17}')
    for name, _ in rows:
        v = per_call[name]
        m = statistics.median(v)
        print(f'{name:<36} {spread(v, "{:.1f}"):>26} {m - loop:>11.1f} {m / noop:>7.2f}x {mp / m:>16.1f}x')

    # The targets: the per-call cost against the no-op call (one process,
    # loop included), the speed-up on seed 000's workload (P processes).
    # add(n) takes an argument: its floor is the no-op that takes one too.
    targets = []
    noop1 = statistics.median(per_call['floor: _Noop().noop1(1)'])
    for name, floor, floor_name in (('procsafe.Value.increment()', noop, 'noop()'),
                                    ('atomic_counter.increment()', noop, 'noop()'),
                                    ('procsafe.Value.add(1)', noop1, 'noop1(1)')):
        ratio = statistics.median(per_call[name]) / floor
        targets.append((f'{name} per call, x the no-op call {floor_name} (<= {NOOP_RATIO_MAX:g}x)', ratio,
                        ratio <= NOOP_RATIO_MAX))
    for name in ('procsafe.Value.add(1)', 'Segment.atomic_counter().increment()'):
        speedup = base / statistics.median(seconds[name])
        targets.append((f'{name} in {P} processes, x faster than multiprocessing.Value + get_lock() '
                        f'(>= {MP_SPEEDUP_MIN:g}x)', speedup, speedup >= MP_SPEEDUP_MIN))
    print('\ntargets (issue 20):')
    for what, value, met in targets:
        print(f'  {what}: {value:.2f}x {"met" if met else "MISSED"}')
    seg_close = getattr(seg, 'close', None)
    if seg_close:
        seg_close()
    shutil.rmtree(PROMETHEUS_DIR, ignore_errors=True)
    for w in wrong:
        print(f'WRONG TOTAL: {w}')
    if wrong:
        return 1
    if o.check and not all(met for _, _, met in targets):
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
