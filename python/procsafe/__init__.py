"""procsafe: process-safe shared counters, from Python and C++ alike.

Segments of shared memory hold named objects (atomic, mutex and sharded
counters, counter arrays, histograms, live gauges, latches, barriers); every
process that maps a segment sees the same objects, and a C++ program using
procsafe's headers sees the very same ones::

    import procsafe
    with procsafe.Segment.create("web", 1 << 20) as seg:
        hits = seg.atomic_counter("hits")
        hits.increment()          # one atomic instruction; returns the new value

Drop-ins for multiprocessing's shared values, exact under every start method
and picklable into pools::

    from procsafe import Value, Lock      # instead of: from multiprocessing import ...
    counter = Value("i", 0)
    counter.add(1)                        # atomic, no lock needed
    with counter.get_lock():
        counter.value += 1                # as with multiprocessing

Objects pickle as a reference (segment name, object name, kind, type): the
receiving process maps the segment once and finds the object there.
"""

import atexit
import os
import secrets
import threading
import weakref
from multiprocessing import util as _mp_util

from . import _procsafe
from ._procsafe import (  # noqa: F401  (re-exported)
    AtomicCounter,
    BadMagic,
    Barrier,
    CounterArray,
    Error,
    Histogram,
    HistogramSnapshot,
    IncompatibleLayout,
    InvalidArgument,
    InvalidName,
    Latch,
    LiveGauge,
    Locked,
    MutexCounter,
    ObjectExists,
    ObjectNotFound,
    OutOfRange,
    OutOfSpace,
    OwnerDied,
    PermissionDenied,
    Segment,
    SegmentExists,
    SegmentNotFound,
    ShardedCounter,
    SharedLock,
    SystemFailure,
    TimedOut,
    TypeMismatch,
    Unsupported,
)

__version__ = "%d.%d.%d" % (_procsafe.VERSION_MAJOR, _procsafe.VERSION_MINOR, _procsafe.VERSION_PATCH)

__all__ = [
    "Segment", "Value", "RawValue", "Lock", "RLock",
    "AtomicCounter", "MutexCounter", "ShardedCounter", "CounterArray", "Histogram", "HistogramSnapshot",
    "LiveGauge", "Latch", "Barrier", "Locked", "SharedLock",
    "Error", "SegmentNotFound", "SegmentExists", "ObjectNotFound", "ObjectExists", "TypeMismatch", "BadMagic",
    "IncompatibleLayout", "InvalidName", "OutOfSpace", "PermissionDenied", "TimedOut", "OwnerDied",
    "InvalidArgument", "OutOfRange", "Unsupported", "SystemFailure",
]

# ---------------------------------------------------------------- segments by name, per process

_lock = threading.RLock()
_opened = {}  # name -> Segment opened here to find pickled objects (kept mapped)


def _after_fork_in_child():
    # Another thread may have held _lock when this process forked: that
    # thread does not exist here, so the child starts with a lock of its own.
    global _lock
    _lock = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _segment(name):
    """The segment `name` as this process maps it: opened once, then kept
    (mapped again when the name is another segment now: removed and made
    again since)."""
    with _lock:
        seg = _opened.get(name)
        if seg is not None and seg.is_stale():
            del _opened[name]
            seg = None
        if seg is None:
            seg = _defaults.find(name)
        if seg is None:
            seg = Segment.open(name)
            _opened[name] = seg
        return seg


def _attach_segment(name):
    return _segment(name)


def _attach(segment, kind, name, type):
    seg = _segment(segment)
    try:
        return seg._find(kind, name, type or None)
    except ObjectNotFound:
        if segment in _opened and seg.is_stale():  # removed and made again since: map the new one
            with _lock:
                _opened.pop(segment, None)
            return _segment(segment)._find(kind, name, type or None)
        raise


def _attach_element(array, index):
    return array[index]


def _attach_lock(segment, name, recursive):
    return _segment(segment)._lock(name, recursive, False)


def _attach_value(segment, name, typecode, lock):
    return _segment(segment)._value(name, typecode, None, lock, False)


# ---------------------------------------------------------------- the drop-ins' default segment


class _DefaultSegments:
    """The segments Value, RawValue, Lock and RLock live in: made on first use
    (named after the process), another one, twice as large, when one is full;
    removed when the process that made them exits normally (atexit, and
    multiprocessing's exit of its child processes, which leave by os._exit).
    A forked child places its objects in the segments it inherited, which it
    never removes, so that nothing it makes outlives its parent's segments;
    a process started by spawn or forkserver makes its own. After a SIGKILL,
    or a signal whose default action ends the process (SIGTERM), they stay:
    `procsafe list` shows them with their creator gone, `procsafe rm`
    removes them."""

    first_size = 1 << 20

    def __init__(self):
        self.segments = []  # (segment, pid of the process that made it); new objects go to the last
        self.by_name = weakref.WeakValueDictionary()
        self.serial = 0
        self.tag = None  # drawn by each process: object names never clash between processes
        self.tag_pid = None
        self.registered_pid = None

    def find(self, name):
        return self.by_name.get(name)

    def _new_segment(self):
        pid = os.getpid()
        size = self.first_size << len(self.segments)
        name = "procsafe-py-%d-%s-%d" % (pid, secrets.token_hex(4), len(self.segments))
        seg = Segment.create(name, size)
        self.segments.append((seg, pid))
        self.by_name[name] = seg
        if self.registered_pid != pid:
            atexit.register(self.close)
            _mp_util.Finalize(None, self.close, exitpriority=0)
            self.registered_pid = pid
        return seg

    def place(self, make, prefix):
        """make(segment, object_name) in the current default segment; in a new one if full."""
        with _lock:
            pid = os.getpid()
            if self.tag_pid != pid:
                self.tag, self.tag_pid, self.serial = secrets.token_hex(4), pid, 0
            self.serial += 1
            name = "%s.%s.%d" % (prefix, self.tag, self.serial)
            seg = self.segments[-1][0] if self.segments else self._new_segment()
            try:
                return make(seg, name)
            except OutOfSpace:
                return make(self._new_segment(), name)

    def close(self):
        """Removes the segments this process made (never its parent's)."""
        pid = os.getpid()
        mine = [seg for seg, owner in self.segments if owner == pid]
        self.segments = [(seg, owner) for seg, owner in self.segments if owner != pid]
        for seg in mine:
            try:
                seg.close()
            except Error:
                pass


_defaults = _DefaultSegments()

_TYPECODES = "bBhHiIlLqQfd"


def _typecode(typecode_or_type):
    code = getattr(typecode_or_type, "_type_", typecode_or_type)  # a ctypes type: c_int._type_ == "i"
    if not isinstance(code, str) or len(code) != 1 or code not in _TYPECODES:
        raise InvalidArgument(
            "procsafe: typecode must be one of %s (as multiprocessing.Value's), not %r" % (" ".join(_TYPECODES), typecode_or_type))
    return code


def _initial(signature, args):
    """The initial value of Value/RawValue(typecode, *args): 0 when none is given."""
    if len(args) > 1:
        raise TypeError("%s takes at most one initial value" % signature)
    if args and args[0] is None:
        raise TypeError("procsafe: %s: the initial value is a number, not None (as ctypes')" % signature)
    return args[0] if args else 0


def Lock():
    """A robust process-shared lock (multiprocessing.Lock's interface:
    acquire(block=True, timeout=None), release(), a context manager).

    A holder killed with the lock held stalls nobody: the next locker
    recovers it. It is released by the thread that took it. It pickles by
    reference, so it can be passed to Pool and ProcessPoolExecutor tasks."""
    return _defaults.place(lambda seg, name: seg._lock(name, False, True), "lock")


def RLock():
    """As Lock(), reentrant: its owner thread may take it again (multiprocessing.RLock)."""
    return _defaults.place(lambda seg, name: seg._lock(name, True, True), "rlock")


def RawValue(typecode_or_type, *args):
    """A shared value without a lock (multiprocessing.RawValue): `.value`
    reads and writes it, `add(n)` and `increment()` change it atomically."""
    code = _typecode(typecode_or_type)
    initial = _initial("RawValue(typecode_or_type, initial=0)", args)
    return _defaults.place(lambda seg, name: seg._value(name, code, initial, None, True), "value")


def Value(typecode_or_type, *args, lock=True):
    """A shared value with a lock (multiprocessing.Value): `.value` is read
    and written under the lock, `get_lock()` gives it for compound updates,
    and `add(n)` / `increment()` change the value atomically without it.

    lock: True (a new RLock), False (a RawValue), or a procsafe Lock/RLock."""
    code = _typecode(typecode_or_type)
    initial = _initial("Value(typecode_or_type, initial=0, *, lock=True)", args)
    if lock is False:
        return RawValue(code, initial)
    if lock is True:
        lock = RLock()
    elif not isinstance(lock, SharedLock):
        raise TypeError("procsafe: lock is True, False, or a procsafe Lock/RLock, not %r" % (lock,))
    return _defaults.place(lambda seg, name: seg._value(name, code, initial, lock, True), "value")
