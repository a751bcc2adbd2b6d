"""Crashes and interruptions: a process SIGKILLed inside a locked block
stalls nobody; a wait is interrupted by Ctrl-C (SIGINT); the drop-ins'
segment of a killed process is listed and removed by the procsafe command."""
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import procsafe
import workers


@pytest.mark.parametrize("what", ["counter", "lock"])
def test_sigkill_inside_a_locked_block_stalls_nobody(seg, what):
    c = seg.mutex_counter("c", "int64", 7)
    lock = seg._lock("lock", False, True)
    inside = seg.latch("inside", 1)
    seg.latch("never", 1)
    p = multiprocessing.get_context("fork").Process(target=workers.hold_and_die, args=(seg.name, what))
    p.start()
    assert inside.wait(timeout=30)  # it holds the lock now
    os.kill(p.pid, signal.SIGKILL)
    p.join(30)
    assert p.exitcode == -signal.SIGKILL
    if what == "counter":
        assert c.increment() == 8  # the dead holder's +1000 was never committed
        assert c.recoveries == 1
        with c.locked() as v:
            v.value += 1
        assert c.value() == 9
    else:
        assert lock.acquire(timeout=10)
        assert lock.recoveries == 1
        lock.release()


def asleep(pid, timeout=10, task=None):
    """Waits (bounded) until the process (or its thread `task`) sleeps in the kernel (state S: its wait)."""
    deadline = time.monotonic() + timeout
    path = "/proc/%d/stat" % pid if task is None else "/proc/%d/task/%d/stat" % (pid, task)
    while time.monotonic() < deadline:
        with open(path) as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "S":
                return
        time.sleep(0.001)
    raise AssertionError("the child never slept in its wait")


WAITER = r"""
import sys, time, procsafe
seg = procsafe.Segment.open(sys.argv[1])
c, ready = seg.atomic_counter("c"), seg.atomic_counter("ready")
what = sys.argv[2]
obj = {"counter": lambda: c.wait_at_least(1, timeout=None),
       "latch": lambda: seg.latch("l", 1).wait(),
       "barrier": lambda: seg.barrier("b", 2).arrive_and_wait(),
       "lock": lambda: seg._lock("k", False, False).acquire()}[what]
ready.increment()
start = time.monotonic()
try:
    obj()
except KeyboardInterrupt:
    print("interrupted after %.3f s" % (time.monotonic() - start))
    sys.exit(0)
sys.exit(3)
"""


@pytest.mark.parametrize("what", ["counter", "latch", "barrier", "lock"])
def test_a_wait_is_interrupted_by_sigint(seg, what):
    ready = seg.atomic_counter("ready")
    seg.atomic_counter("c")
    seg.latch("l", 1)
    seg.barrier("b", 2)
    k = seg._lock("k", False, True)
    assert k.acquire()  # held here: the child waits for it
    child = subprocess.Popen([sys.executable, "-c", WAITER, seg.name, what], stdout=subprocess.PIPE, text=True)
    try:
        assert ready.wait_at_least(1, timeout=30)
        asleep(child.pid)  # in the wait itself, not before it
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=10)
    finally:
        child.kill()
        k.release()
    assert child.returncode == 0, out
    assert "interrupted" in out


@pytest.mark.skipif("PROCSAFE_CLI" not in os.environ, reason="the procsafe command is not built (PROCSAFE_CLI)")
def test_drop_in_segment_after_sigkill_is_listed_and_removed():
    child = subprocess.Popen([sys.executable, "-c", "import procsafe, sys, time\nv = procsafe.Value('i', 5)\n"
                              "print(v.segment.name, flush=True)\nsys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    name = child.stdout.readline().strip()
    child.kill()
    child.wait(10)
    try:
        assert os.path.exists("/dev/shm/" + name)
        cli = os.environ["PROCSAFE_CLI"]
        listed = subprocess.run([cli, "list"], capture_output=True, text=True, timeout=30)
        line = [l for l in listed.stdout.splitlines() if name in l]
        assert line and "gone" in line[0], listed.stdout
        assert subprocess.run([cli, "rm", name], capture_output=True, timeout=30).returncode == 0
        assert not os.path.exists("/dev/shm/" + name)
    finally:
        procsafe.Segment.remove(name)


def test_drop_in_segment_removed_at_normal_exit_not_by_forked_child():
    code = ("import os, procsafe\nv = procsafe.Value('i', 1)\nprint(v.segment.name, flush=True)\n"
            "pid = os.fork()\nif pid == 0:\n    v.add(1)\n    raise SystemExit(0)\n"  # a child exits normally: atexit runs there
            "os.waitpid(pid, 0)\nassert os.path.exists('/dev/shm/' + v.segment.name)\nassert v.value == 2\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert not os.path.exists("/dev/shm/" + out.stdout.strip())


@pytest.mark.parametrize("make", [procsafe.Lock, procsafe.RLock])
def test_a_child_forked_while_its_thread_holds_a_lock_waits_for_it(make):
    # The forking thread's identity goes on in the child: the child must see
    # the lock as its parent's (held by another process: a wait that times
    # out), never as its own (which would refuse to wait).
    lock = make()
    with lock:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = 0 if lock.acquire(block=False) is False and lock.acquire(timeout=0.2) is False else 2
            except BaseException:
                code = 3
            os._exit(code)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert lock.acquire(timeout=1)  # released by the with block, not by the child
    lock.release()


@pytest.mark.parametrize("make", [procsafe.Lock, procsafe.RLock])
def test_a_lock_shared_by_threads_a_waiter_timed_out_or_interrupted_leaves_the_holder_alone(make):
    lock = make()
    held, done = threading.Event(), threading.Event()
    result = {}

    def holder():
        lock.acquire()
        held.set()
        done.wait(30)
        try:
            lock.release()
            result["released"] = True
        except Exception as e:  # noqa: BLE001 - reported below
            result["released"] = e

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(10)
        assert lock.acquire(block=False) is False
        assert lock.acquire(timeout=0.2) is False  # held by the other thread: not taken
        # Interrupted while waiting: the holder's hold stays.
        main = threading.get_native_id()

        def interrupt():
            asleep(os.getpid(), task=main)
            os.kill(os.getpid(), signal.SIGINT)

        k = threading.Thread(target=interrupt)
        k.start()
        with pytest.raises(KeyboardInterrupt):
            lock.acquire(timeout=30)
        k.join(10)
    finally:
        done.set()
        t.join(30)
    assert result["released"] is True
    assert lock.acquire(timeout=1) is True  # free again
    lock.release()


def test_opening_a_segment_its_creator_never_set_up_is_interrupted_by_sigint_at_once(name):
    path = "/dev/shm/" + name
    with open(path, "wb") as f:
        f.write(b"\0" * 4096)  # a creator killed inside create(): never initialized
    calling = threading.Event()
    main = threading.get_native_id()

    def interrupt():
        calling.wait(10)
        asleep(os.getpid(), task=main)  # in open's wait
        os.kill(os.getpid(), signal.SIGINT)

    k = threading.Thread(target=interrupt)
    k.start()
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            calling.set()
            procsafe.Segment.open(name, timeout=5)
        assert time.monotonic() - start < 2  # not when the timeout expires
    finally:
        k.join(10)
        os.unlink(path)
