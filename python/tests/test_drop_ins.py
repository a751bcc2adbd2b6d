"""The drop-ins' life cycle across processes: where a child's objects go,
what a fork in the middle of placing one does, a reference unpickled after
its segment was made again (found by the adversarial review)."""
import multiprocessing
import os
import pickle
import signal
import threading

import pytest

import procsafe


def ours():
    return {n for n in os.listdir("/dev/shm") if n.startswith("procsafe-py-")}


def make_and_count(i):
    v = procsafe.Value("i", i)
    v.add(1)
    lock = procsafe.Lock()
    with lock:
        return v.value


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_values_made_in_child_processes_leave_no_segment(method):
    before = ours()
    procsafe.Value("i", 0)  # the parent's default segment exists: forked children place theirs in it
    ctx = multiprocessing.get_context(method)
    pids = set()  # this test's children: other tests may run Python beside it (ctest -j)
    with ctx.Pool(2) as pool:
        pids.update(p.pid for p in pool._pool)
        assert pool.map(make_and_count, range(4)) == [1, 2, 3, 4]
        pool.close()
        pool.join()  # the workers leave as multiprocessing's children do (os._exit after its exit functions)
    children = [ctx.Process(target=make_and_count, args=(1,)) for _ in range(2)]
    for c in children:
        c.start()
        pids.add(c.pid)
    for c in children:
        c.join(60)
        assert c.exitcode == 0
    left = {n for n in ours() - before if int(n.split("-")[2]) in pids}
    for n in left:
        procsafe.Segment.remove(n)
    assert not left


def test_a_fork_while_another_thread_places_an_object_does_not_hang_the_child():
    ref = pickle.dumps(procsafe.Value("i", 1))
    taken, go = threading.Event(), threading.Event()

    def hold():  # inside place(), as a thread making a Value is when another forks
        with procsafe._lock:
            taken.set()
            go.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    assert taken.wait(10)
    try:
        pid = os.fork()
        if pid == 0:
            signal.alarm(10)  # a hang is reported as SIGALRM, not a stuck run
            v = procsafe.Value("i", 2)
            w = pickle.loads(ref)
            os._exit(0 if (v.value, w.value) == (2, 1) else 1)
        _, status = os.waitpid(pid, 0)
    finally:
        go.set()
        t.join(30)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_reference_unpickled_after_its_segment_was_made_again_reaches_the_new_one(name):
    s1 = procsafe.Segment.create(name, 1 << 16)
    ref = pickle.dumps(s1.atomic_counter("hits"))
    c = pickle.loads(ref)  # this process maps the segment for unpickling (kept)
    c.add(5)
    del c
    s1.close()  # removes it (this process made it)
    with procsafe.Segment.create(name, 1 << 16) as s2:  # made again, the same counter in it
        new = s2.atomic_counter("hits")
        c = pickle.loads(ref)
        c.add(1)
        assert new.value() == 1
        assert c.value() == 1
        assert not c.segment.is_stale()
        del c
