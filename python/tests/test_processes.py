"""Exact totals with real processes: every object kind under fork, spawn and
forkserver, Pool, ProcessPoolExecutor, threads, and C++ writers beside Python ones."""
import concurrent.futures
import multiprocessing
import os
import subprocess
import threading

import pytest

import procsafe
import workers

P = 3  # processes
N = workers.N


def make_all(seg):
    seg.atomic_counter("atomic")
    seg.mutex_counter("mutex", "float64")
    seg.sharded_counter("sharded")
    seg.counter_array("array", 4, "uint32")
    seg.counter_array("marray", 2, "int16", sync="mutex")
    seg.histogram("hist", [1.0, 2.0])


def check_all(seg, value, locked, raw, writers):
    total = writers * N
    assert seg.atomic_counter("atomic").value() == total
    assert seg.mutex_counter("mutex", "float64").value() == total
    assert seg.sharded_counter("sharded").sum() == total
    assert seg.counter_array("array", 4, "uint32").values() == [total // 4] * 4
    assert seg.counter_array("marray", 2, "int16", sync="mutex").values() == [total // 2] * 2
    snap = seg.histogram("hist", [1.0, 2.0]).read()
    assert snap.count == total
    assert list(snap.counts) == [writers * len(range(0, N, 3)) + writers * len(range(1, N, 3)), writers * len(range(2, N, 3)), 0]
    assert value.value == total
    assert locked.value == total
    assert raw.value == total


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_every_kind_exact_under_each_start_method(seg, method):
    ctx = multiprocessing.get_context(method)
    make_all(seg)
    value, locked, lock, raw = procsafe.Value("q", 0), procsafe.Value("f"), procsafe.Lock(), procsafe.RawValue("i", 0)
    start = seg.barrier("start", P)
    procs = [ctx.Process(target=workers.count_everything, args=(seg.name, value, locked, lock, raw, start)) for _ in range(P)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    check_all(seg, value, locked, raw, P)


def test_pool_apply_async_and_process_pool_executor(seg):
    counter = seg.atomic_counter("jobs")
    value, lock, raw = procsafe.Value("i"), procsafe.Lock(), procsafe.RawValue("d")
    ctx = multiprocessing.get_context("spawn")  # every argument is pickled
    with ctx.Pool(2) as pool:
        results = [pool.apply_async(workers.pool_task, (counter, value, lock, raw, 500)) for _ in range(4)]
        assert [r.get(60) for r in results] == [500] * 4
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        futures = [ex.submit(workers.pool_task, counter, value, lock, raw, 500) for _ in range(4)]
        assert [f.result(60) for f in futures] == [500] * 4
    assert counter.value() == 4000
    assert value.value == 4000
    assert raw.value == 4000.0


def test_live_gauge_counts_live_processes_only(seg):
    ctx = multiprocessing.get_context("fork")
    gauge = seg.live_gauge("busy")
    ready, release = seg.latch("ready", P), seg.latch("release", 1)
    procs = [ctx.Process(target=workers.live_worker, args=(seg.name, 100 + i, ready, release)) for i in range(P)]
    for p in procs:
        p.start()
    assert ready.wait(timeout=30)
    assert gauge.value() == 300 + 0 + 1 + 2
    assert gauge.live_processes() == P
    release.count_down()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert gauge.value() == 0  # the workers are gone: so are their contributions


def test_barrier_phases_across_processes(seg):
    ctx = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(P, mp_context=ctx) as ex:
        futures = [ex.submit(workers.barrier_worker, seg.name, P, 20) for _ in range(P)]
        assert [f.result(60) for f in futures] == ["ok"] * P
    assert seg.barrier("step", P).phase() == 20


def test_threads_exact(seg):
    atomic, mutex, sharded = seg.atomic_counter("a"), seg.mutex_counter("m"), seg.sharded_counter("s")
    value, lock, raw = procsafe.Value("H"), procsafe.RLock(), procsafe.RawValue("l")
    start = threading.Barrier(4)

    def work():
        start.wait(30)
        for _ in range(N):
            atomic.increment()
            with mutex.locked() as v:
                v.value += 1
            sharded.add(1)
            value.add(1)
            with lock:
                with lock:  # an RLock: its owner takes it again
                    raw.value += 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert atomic.value() == mutex.value() == sharded.sum() == raw.value == 4 * N
    assert value.value == 4 * N % 65536


@pytest.mark.skipif("PROCSAFE_PY_WRITER" not in os.environ, reason="the C++ writer is built by CMake (PROCSAFE_PY_WRITER)")
def test_cpp_and_python_writers_on_one_counter(seg):
    atomic, mutex = seg.atomic_counter("hits"), seg.mutex_counter("held")
    start = seg.latch("start", 4)
    writer = os.environ["PROCSAFE_PY_WRITER"]
    cpp = [subprocess.Popen([writer, seg.name, name, kind, str(N)]) for name, kind in (("hits", "atomic"), ("held", "mutex"))]

    def python_writer():
        start.count_down()
        assert start.wait(timeout=30)
        for _ in range(N):
            atomic.increment()
            with mutex.locked() as v:
                v.value += 1
        os._exit(0)

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=python_writer) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert [c.wait(60) for c in cpp] == [0, 0]
    assert atomic.value() == 3 * N  # one C++ writer and two Python writers each
    assert mutex.value() == 3 * N
