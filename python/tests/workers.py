"""What the processes of the tests run (a module of its own, so that spawn
and forkserver children import it by name)."""
import procsafe

N = 20000  # increments per worker and kind


def count_everything(seg_name, value, locked, lock, raw, start):
    """Counts N times on every kind of object in the segment, after every
    worker arrived at the barrier `start` (no sleeps: exact totals)."""
    seg = procsafe.Segment.open(seg_name)
    atomic = seg.atomic_counter("atomic")
    mutex = seg.mutex_counter("mutex", "float64")
    sharded = seg.sharded_counter("sharded")
    array = seg.counter_array("array", 4, "uint32")
    marray = seg.counter_array("marray", 2, "int16", sync="mutex")
    hist = seg.histogram("hist", [1.0, 2.0])
    if not start.arrive_and_wait(timeout=30):
        return "start barrier timed out"
    for i in range(N):
        atomic.increment()
        if i % 2:
            mutex.add(1)
        else:
            with mutex.locked() as v:
                v.value += 1
        sharded.increment()
        array[i % 4].increment()
        marray[i % 2].add(1)
        hist.observe(i % 3)
        value.add(1)  # atomic: needs no lock
        with locked.get_lock():  # a compound update under the lock (not mixed with add(): see docs)
            locked.value += 1
        with lock:
            raw.value += 1  # a load and a store: exact only under the lock
    return "ok"


def pool_task(counter, value, lock, raw, n):
    for _ in range(n):
        counter.increment()
        value.increment()
        with lock:
            raw.value = raw.value + 1
    return n


def live_worker(seg_name, n, ready, release):
    seg = procsafe.Segment.open(seg_name)
    gauge = seg.live_gauge("busy")
    for _ in range(n):
        gauge.increment()
    ready.count_down()
    return release.wait(timeout=30)


def barrier_worker(seg_name, processes, phases):
    seg = procsafe.Segment.open(seg_name)
    step = seg.barrier("step", processes)
    progress = seg.atomic_counter("progress")
    for phase in range(phases):
        progress.increment()
        if not step.arrive_and_wait(timeout=30):
            return "phase %d timed out" % phase
        if progress.value() < (phase + 1) * processes:  # everyone finished the phase before anyone goes on
            return "phase %d: %d" % (phase, progress.value())
    return "ok"


def hold_and_die(seg_name, what):
    """Takes a lock, says so, then waits to be killed (SIGKILL) inside."""
    seg = procsafe.Segment.open(seg_name)
    inside = seg.latch("inside", 1)
    never = seg.latch("never", 1)
    if what == "counter":
        c = seg.mutex_counter("c")
        with c.locked() as v:
            v.value += 1000  # never committed: killed first
            inside.count_down()
            never.wait(timeout=60)
    else:
        lock = seg._lock("lock", False, False)
        with lock:
            inside.count_down()
            never.wait(timeout=60)
