"""The API in one process: every kind's operations, the drop-ins'
semantics, pickling, and bad input that raises the specific exception and
changes nothing."""
import ctypes
import multiprocessing
import os
import pickle
import subprocess

import pytest

import procsafe


def test_counter_operations(seg):
    for kind in (seg.atomic_counter, seg.mutex_counter):
        c = kind("c_" + kind.__name__, "int64", 10)
        assert (c.increment(), c.add(5), c.decrement(), c.sub(2)) == (11, 16, 15, 13)
        assert (c.fetch_add(7), c.fetch_sub(1), c.exchange(100), c.value()) == (13, 20, 19, 100)
        assert c.compare_exchange(100, 1) and not c.compare_exchange(100, 2) and c.value() == 1
        c.store(-4)
        assert c.value() == -4
        c.reset()
        assert c.value() == 0
        assert c.wait_at_least(0, timeout=0) and not c.wait_equal(5, timeout=0.01)
    u = seg.atomic_counter("u8", "uint8", 255)
    assert u.increment() == 0  # wraps as std::atomic does
    f = seg.atomic_counter("f", float, 0.5)
    assert f.add(0.25) == 0.75 and f.type == "float64"


def test_mutex_locked_block_commits_or_rolls_back(seg):
    m = seg.mutex_counter("m", "int32", 5)
    with m.locked() as v:
        v.value = v.value * 10 + 1
    assert m.value() == 51
    with pytest.raises(ZeroDivisionError):
        with m.locked() as v:
            v.value += 1000
            1 / 0
    assert m.value() == 51  # rolled back
    with m.locked() as v:
        with pytest.raises(RuntimeError, match="holds this counter's lock"):
            m.increment()  # would wait for itself forever
    assert m.recoveries == 0


def test_other_kinds(seg):
    s = seg.sharded_counter("s", "uint64", slots=8)
    s.add(3)
    s.increment()
    assert s.sum() == 4 and s.slots() == 8
    a = seg.counter_array("a", 3, "int64", 2, labels={"code": ["200", "404", "500"]})
    a[0].add(1)
    a[-1].increment()
    assert a.values() == [3, 2, 3] and len(a) == 3 and isinstance(a[1], procsafe.AtomicCounter)
    with pytest.raises(procsafe.OutOfRange, match="'a'"):
        a[3]
    h = seg.histogram("h", [0.5, 1], help="Latency.", unit="seconds")
    for v in (0.1, 0.7, 5):
        h.observe(v)
    assert h.read() == ((0.5, 1.0), (1, 1, 1), 5.8, 3)
    g = seg.live_gauge("g", "int32")
    g.add(5)
    g.sub(2)
    assert g.value() == 3 and g.contribution() == 3
    l = seg.latch("l", 2)
    l.count_down(2)
    assert l.try_wait() and l.wait(timeout=0)
    b = seg.barrier("b", 1)
    assert b.arrive_and_wait(timeout=1) and b.phase() == 1


def test_find_or_construct_and_pickle_by_reference(seg):
    c = seg.atomic_counter("shared", "uint32", 7)
    assert seg.atomic_counter("shared", "uint32", 999).value() == 7  # found, not made again
    again = pickle.loads(pickle.dumps(c))
    again.increment()
    assert c.value() == 8
    a = seg.counter_array("arr", 2, sync="mutex")
    pickle.loads(pickle.dumps(a[1])).add(4)
    assert a.values() == [0, 4]
    assert pickle.loads(pickle.dumps(seg)).name == seg.name


def test_anonymous_segment_refuses_to_pickle():
    with procsafe.Segment.anonymous(1 << 16) as anon:
        c = anon.atomic_counter("c")
        with pytest.raises(TypeError, match="anonymous segment"):
            pickle.dumps(c)
        ctx = multiprocessing.get_context("fork")  # inherited: no pickling needed
        p = ctx.Process(target=c.add, args=(5,))
        p.start()
        p.join(30)
        assert c.value() == 5


def test_drop_ins_behave_as_multiprocessing():
    for code in "bBhHiIlLqQfd":
        ours, theirs = procsafe.Value(code, 3), multiprocessing.Value(code, 3)
        assert ours.value == theirs.value
        if code in "fd":
            ours.value = theirs.value = 2.5
        else:
            ours.value = theirs.value = -(2 ** 40) - 77  # stored modulo 2**bits, as ctypes does
            assert ours.value == theirs.value
            theirs.value = theirs.value - 300
            assert ours.add(-300) == theirs.value  # add() wraps the same way
        assert ours.value == theirs.value
    v = procsafe.Value(ctypes.c_int, 2 ** 31 - 1)
    v.value += 1  # as multiprocessing.Value: wraps to the smallest int
    assert v.value == -2 ** 31
    with v.get_lock():
        v.value += 1
    assert v.get_obj().value == -2 ** 31 + 1
    assert isinstance(v.get_lock(), procsafe.SharedLock)
    with pytest.raises(TypeError):
        v.value = 1.5
    raw = procsafe.RawValue("d", 1.5)
    assert raw.increment() == 2.5
    with pytest.raises(AttributeError):
        raw.get_lock()
    lock = procsafe.Lock()
    assert lock.acquire() and not lock.acquire(False) and not lock.acquire(timeout=0.01)
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()
    assert pickle.loads(pickle.dumps(v)).value == v.value


def test_bad_input_raises_the_specific_error_and_changes_nothing(seg, name):
    seg.atomic_counter("hits")
    free = seg.free_memory()
    cases = [
        (procsafe.TypeMismatch, TypeError, lambda: seg.mutex_counter("hits")),
        (procsafe.TypeMismatch, TypeError, lambda: seg.atomic_counter("hits", "uint64")),
        (procsafe.InvalidArgument, ValueError, lambda: seg.atomic_counter("x", "complex")),
        (procsafe.InvalidArgument, ValueError, lambda: seg.sharded_counter("x", "float64")),
        (procsafe.InvalidArgument, ValueError, lambda: procsafe.Value("z")),
        (procsafe.InvalidName, ValueError, lambda: seg.atomic_counter("")),
        (procsafe.InvalidName, ValueError, lambda: procsafe.Segment.create("/etc/passwd", 4096)),
        (procsafe.SegmentNotFound, FileNotFoundError, lambda: procsafe.Segment.open(name + "-missing")),
        (procsafe.SegmentExists, FileExistsError, lambda: procsafe.Segment.create(name, 4096)),
        (procsafe.InvalidArgument, ValueError, lambda: procsafe.Segment.create(name + "-neg", -1)),
        (procsafe.InvalidArgument, ValueError, lambda: seg.counter_array("x", 0)),
        (procsafe.OutOfSpace, procsafe.Error, lambda: seg.counter_array("huge", 1 << 20)),
        (procsafe.InvalidArgument, ValueError, lambda: seg.latch("x", -1)),
        (procsafe.InvalidArgument, ValueError, lambda: seg.atomic_counter("x", kind="gauge", labels={"code": ["1"]})),
        (procsafe.ObjectNotFound, LookupError, lambda: seg._find("atomic_counter", "nothing", "int64")),
    ]
    for error, builtin, call in cases:
        with pytest.raises(error) as info:
            call()
        assert isinstance(info.value, builtin)
        assert str(info.value).startswith("procsafe")
    with pytest.raises(OverflowError):
        seg.atomic_counter("hits").add(2 ** 63)
    with pytest.raises(TypeError):
        seg.atomic_counter("hits").add(1.5)
    assert seg.free_memory() == free  # nothing was made
    assert "x" not in seg and "huge" not in seg and seg.atomic_counter("hits").value() == 0
    assert not os.path.exists("/dev/shm/" + name + "-neg")


@pytest.mark.skipif("PROCSAFE_CLI" not in os.environ, reason="the procsafe command is not built (PROCSAFE_CLI)")
def test_metadata_reaches_procsafe_show(seg):
    seg.atomic_counter("jobs_done", help="Jobs the workers finished.", kind="counter").add(42)
    seg.counter_array("responses", 2, labels={"code": ["200", "404"]})[1].increment()
    out = subprocess.run([os.environ["PROCSAFE_CLI"], "export", seg.name], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "# HELP jobs_done_total Jobs the workers finished." in out.stdout
    assert "jobs_done_total" in out.stdout and " 42" in out.stdout
    assert 'code="404"' in out.stdout


def test_noop_for_the_benchmarks():
    assert procsafe._procsafe._Noop().noop() is None


def test_lock_takes_threadings_arguments_too_and_says_whether_it_is_held():
    lock = procsafe.Lock()
    assert lock.locked() is False
    assert lock.acquire(blocking=False) is True  # threading's name
    assert lock.locked() is True
    lock.release()
    assert lock.acquire(True, -1) is True  # threading's "no timeout"
    lock.release()
    assert lock.locked() is False


def test_value_refuses_none_as_its_initial_value_as_ctypes_does():
    with pytest.raises(TypeError):
        procsafe.Value("i", None)
    with pytest.raises(TypeError):
        procsafe.RawValue("d", None)
