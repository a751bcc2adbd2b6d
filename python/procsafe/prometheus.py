"""prometheus_client's metrics kept in a procsafe segment.

One call at start-up, before the application makes its metrics, and
prometheus_client's Counter, Gauge, Histogram and Summary keep their values
in one shared-memory segment that every worker maps (prometheus_client 0.16
picks each value's storage through ``prometheus_client.values.ValueClass``,
the seam its own multiprocess mode uses)::

    # gunicorn.conf.py (the master runs it once, before it forks the workers)
    import procsafe.prometheus
    procsafe.prometheus.enable("myapp-metrics")

    # the app: metrics as before; /metrics from a registry of its own
    from prometheus_client import CollectorRegistry, make_wsgi_app
    registry = CollectorRegistry()
    procsafe.prometheus.ProcsafeCollector(registry)
    metrics_app = make_wsgi_app(registry)

What each kind becomes (one object per series, never one per process, so the
segment and the scrape do not grow as workers come and go):

- a Counter: an atomic float64 counter; a worker's counts stay when it dies;
- a Histogram: a procsafe histogram (striped per CPU); a Summary: a procsafe
  histogram without bounds (its _count and _sum);
- a Gauge, by its ``multiprocess_mode``: ``sum`` an atomic float64 that each
  process adds its changes to (a dead process's last value stays, as in
  prometheus_client); every other mode a live_gauge of float64 with a slot
  per process (pid and start time): ``live*`` modes count live processes
  only, SIGKILL included, without mark_process_dead; ``all``, ``min`` and
  ``max`` also count a dead process until a new process takes its slot.

``procsafe export`` / ``procsafe serve`` read the same segment and print the
same series (plus a ``segment`` label); ProcsafeCollector is that very
exposition, parsed for prometheus_client's registry.
"""

import atexit
import logging
import os
import threading
import weakref

from prometheus_client import values as _values
from prometheus_client.parser import text_string_to_metric_families

from . import _procsafe
from ._procsafe import Error, InvalidArgument, Segment, TypeMismatch

__all__ = ["enable", "disable", "enabled", "ProcsafeCollector", "Enabled", "series_name", "MODES"]

MODES = ("all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum")

_log = logging.getLogger("procsafe.prometheus")
_lock = threading.Lock()
_store = None  # the enabled _Store (inherited by forked workers)


def series_name(family, labelnames, labelvalues):
    """The object name of a series, as procsafe's families name their children:
    family{name="value",...}, values escaped (backslash, double quote, newline, tab)."""
    if not labelnames:
        return family
    parts = []
    for n, v in zip(labelnames, labelvalues):
        v = v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        parts.append('%s="%s"' % (n, v))
    return "%s{%s}" % (family, ",".join(parts))


def _help(text):
    # A segment's help text is one printable line of at most 1,024 bytes.
    text = "".join(" " if (ord(c) < 0x20 or ord(c) == 0x7F) else c for c in (text or ""))
    data = text.encode("utf-8", "replace")
    if len(data) > 1024:
        text = data[:1024].decode("utf-8", "ignore")
    return text


class Enabled:
    """What enable() did: the segment's name, and whether it was made fresh
    (``fresh``), or an existing one was carried on (``carried_on``)."""

    def __init__(self, segment, fresh, carried_on, size):
        self.segment, self.fresh, self.carried_on, self.size = segment, fresh, carried_on, size

    def __repr__(self):
        return "Enabled(segment=%r, fresh=%r, carried_on=%r, size=%r)" % (self.segment, self.fresh, self.carried_on, self.size)


# ---------------------------------------------------------------- the values


class _Plain:
    """A counter, or a gauge of another value class's: inc/get/set are the C
    object's own methods (no Python frame between Counter.inc and the atomic add)."""

    __slots__ = ("obj", "inc", "get", "set", "_reset")

    def __init__(self, obj, get, set_, reset):
        self.obj = obj
        self.inc = obj.add
        self.get = get
        self.set = set_
        self._reset = reset

    def set_exemplar(self, exemplar):
        return None

    def get_exemplar(self):
        return None


class _SumGauge:
    """A gauge of mode "sum": one shared float64 that each process adds its
    changes to, so that it holds the sum of every process's value, a dead
    one's last value included (prometheus_client's "sum"), in one object."""

    __slots__ = ("obj", "_mine", "_pid", "_lock")

    def __init__(self, obj):
        self.obj, self._mine, self._pid, self._lock = obj, 0.0, os.getpid(), threading.Lock()

    def _fork_check(self):
        if self._pid != os.getpid():  # a forked child starts with a value of its own: 0
            self._pid, self._mine, self._lock = os.getpid(), 0.0, threading.Lock()

    def inc(self, amount):
        self._fork_check()
        with self._lock:
            self.obj.add(float(amount))
            self._mine += amount

    def set(self, value):
        self._fork_check()
        with self._lock:
            self.obj.add(float(value) - self._mine)
            self._mine = float(value)

    def get(self):
        self._fork_check()
        return self._mine

    def _reset(self):
        self.set(0.0)

    def set_exemplar(self, exemplar):
        return None

    def get_exemplar(self):
        return None


_live_values = weakref.WeakSet()  # every _LiveGauge of this process: re-armed in a forked child
_overflow_warned = [0]  # the pid that warned of the overflow slot (once per process)


class _LiveGauge:
    """A gauge of a mode other than "sum": a live_gauge with a slot per
    process. A process takes its slot at its first inc() or set(), never at
    get() (which reads the slots, 0 for a process that has none). The first
    write checks whether the process got a slot of its own or the overflow
    slot (warned once per process), then inc/set/get are the C object's own
    methods."""

    __slots__ = ("obj", "series", "slots", "inc", "set", "get", "_claimed_pid", "__weakref__")

    def __init__(self, obj, series, slots):
        self.obj, self.series, self.slots = obj, series, slots
        self._arm()
        _live_values.add(self)

    def _arm(self):
        self._claimed_pid = 0
        self.inc, self.set, self.get = self._first_inc, self._first_set, self._get_without_a_slot

    def _first_inc(self, amount):
        self.obj.add(amount)
        self._claimed()

    def _first_set(self, value):
        self.obj.set(value)
        self._claimed()

    def _claimed(self):
        obj, me = self.obj, os.getpid()
        self.inc, self.set, self.get, self._claimed_pid = obj.add, obj.set, obj.contribution, me
        if _overflow_warned[0] != me and not any(pid == me and alive for pid, _, alive in obj.processes()):
            _overflow_warned[0] = me
            _log.warning("procsafe.prometheus: gauge %s: all its %d slots (enable(gauge_slots=%d)) are held by other live "
                         "processes: process %d shares the overflow slot with any other beyond them (set() there is "
                         "last-writer-wins among them; min, max, all and liveall leave it out; its livesum contribution "
                         "stays after it dies). enable(gauge_slots=...) gives more slots. (Warned once per process.)",
                         self.series, self.slots, self.slots, me)

    def _get_without_a_slot(self):
        me = os.getpid()
        for pid, value, alive in self.obj.processes():
            if pid == me and alive:
                return value
        return 0.0

    def _reset(self):
        if self._claimed_pid == os.getpid():  # a process without a slot has no value to zero
            self.obj.set(0.0)

    def set_exemplar(self, exemplar):
        return None

    def get_exemplar(self):
        return None


def _rearm_after_fork():
    for v in list(_live_values):
        v._arm()


os.register_at_fork(after_in_child=_rearm_after_fork)


class _HistPart:
    """One of a Histogram's or Summary's values: the _sum (its inc observes
    into the procsafe histogram: bucket, sum and count in one call), a bucket
    or the _count (their inc is a no-op: the observation is already counted)."""

    __slots__ = ("hist", "what", "inc")

    def __init__(self, what):
        self.hist, self.what = None, what
        self.inc = self._nothing

    def _nothing(self, amount):
        return None

    def bind(self, hist):
        self.hist = hist
        if self.what == "sum":
            self.inc = hist.observe

    def get(self):
        snap = self.hist.read()
        if self.what == "sum":
            return snap.sum
        if self.what == "count":
            return float(snap.count)
        return float(snap.counts[self.what])

    def set(self, value):
        raise TypeError("procsafe.prometheus: a histogram's or summary's values are only observed")

    def _reset(self):
        self.hist.reset()

    def set_exemplar(self, exemplar):
        return None

    def get_exemplar(self):
        return None


class _Store:
    def __init__(self, segment, info, gauge_slots):
        self.segment, self.info, self.gauge_slots = segment, info, gauge_slots
        self.pending = {}  # (metric name, label values) -> [parts, bounds]: a histogram or summary being made
        self.lock = threading.Lock()

    def value(self, typ, metric_name, name, labelnames, labelvalues, help_text, multiprocess_mode="", **kwargs):
        labelnames, labelvalues = tuple(labelnames), tuple(labelvalues)
        for n, v in zip(labelnames, labelvalues):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as e:
                raise InvalidArgument("procsafe.prometheus: %s: the value of label %s, %r, is not UTF-8 text (%s): a "
                                      "segment keeps label values as UTF-8" % (metric_name, n, v, e.reason)) from None
        seg, help_text = self.segment, _help(help_text)
        if typ == "counter":
            series = series_name(metric_name, labelnames, labelvalues)
            c = seg.atomic_counter(series, "float64", help=help_text, kind="counter", labels=self._labels(labelnames, labelvalues))
            return _Plain(c, c.value, lambda v, c=c: c.store(float(v)), lambda c=c: c.store(0.0))
        if typ == "gauge":
            mode = multiprocess_mode or "all"
            if mode not in MODES:
                raise InvalidArgument("procsafe.prometheus: multiprocess_mode is one of %s, not %r" % (", ".join(MODES), mode))
            if mode in ("all", "liveall") and "pid" in labelnames:
                raise InvalidArgument("procsafe.prometheus: gauge %s: a gauge of mode %s gets a pid label per process: "
                                      "its own label names cannot have pid" % (metric_name, mode))
            series = series_name(metric_name, labelnames, labelvalues)
            labels = self._labels(labelnames, labelvalues)
            if mode == "sum":
                return _SumGauge(seg.atomic_counter(series, "float64", help=help_text, kind="gauge", labels=labels))
            g = seg.live_gauge(series, "float64", slots=self.gauge_slots, aggregation=mode, help=help_text, kind="gauge",
                               labels=labels)
            return _LiveGauge(g, series, self.gauge_slots)
        if typ in ("histogram", "summary"):
            return self._hist_part(typ, metric_name, name, labelnames, labelvalues, help_text)
        return _values.MutexValue(typ, metric_name, name, labelnames, labelvalues, help_text, **kwargs)

    @staticmethod
    def _labels(labelnames, labelvalues):
        return {",".join(labelnames): list(labelvalues)} if labelnames else None

    def _hist_part(self, typ, metric_name, name, labelnames, labelvalues, help_text):
        # prometheus_client 0.16 makes a Histogram's _sum, then one value per
        # bucket in order (the last +Inf), a Summary's _count, then _sum: the
        # procsafe histogram is made once the last one is.
        if typ == "histogram" and name.endswith("_bucket"):
            key = (metric_name, labelvalues[:-1])
        else:
            key = (metric_name, labelvalues)
        with self.lock:
            if typ == "histogram":
                if name.endswith("_sum"):
                    part = _HistPart("sum")
                    self.pending[key] = ([part], [])
                    return part
                parts, bounds = self.pending[key]
                part = _HistPart(len(bounds))
                parts.append(part)
                le = float(labelvalues[-1])
                bounds.append(le)
                if le != float("inf"):
                    return part
                del self.pending[key]
                want = bounds[:-1]
                labelnames = labelnames[:-1]
                labelvalues = labelvalues[:-1]
            else:
                if name.endswith("_count"):
                    part = _HistPart("count")
                    self.pending[key] = ([part], [])
                    return part
                parts, _ = self.pending.pop(key)
                part = _HistPart("sum")
                parts.append(part)
                want = []
        series = series_name(metric_name, labelnames, labelvalues)
        h = self.segment.histogram(series, want, help=help_text, kind="histogram",
                                   labels=self._labels(labelnames, labelvalues))
        if list(h.read().bounds) != want:
            raise TypeMismatch("procsafe.prometheus: segment %r: %s is a histogram with the bounds %s, not %s (made by "
                               "another version of the application? enable(fresh=True) starts anew)"
                               % (self.segment.name, series, list(h.read().bounds), want))
        for p in parts:
            p.bind(h)
        return part


# ---------------------------------------------------------------- start-up


def enable(segment, size=64 << 20, *, fresh=True, gauge_slots=128, mode=0o600):
    """Makes prometheus_client keep the values of the metrics made from now
    on in the procsafe segment named `segment`. Call it once at start-up,
    before any metric is made: in gunicorn's config file (the master runs it
    before forking the workers) or the application's first import.

    fresh=True: the segment is made anew and removed when the process that
    made it exits; a restarted server starts from zero. One left by an
    earlier run whose creator is gone is replaced; one whose creator still
    runs (another server, an old gunicorn master during a USR2 re-exec) is
    never touched: SegmentExists naming the segment and the creator's pid.
    fresh=False: an existing segment is carried on (counters go on from
    their values), or made if there is none; it stays after exit, so that
    the next start carries on. (Carrying on a fresh=True server's segment:
    when that server exits it removes the segment's name, and what this
    process counts from then on is seen by no reader.) The result says
    which (Enabled.fresh, Enabled.carried_on), and so does the log
    (logger "procsafe.prometheus", INFO).

    size: bytes, reserved at once; what a series takes: a counter about 400
    bytes, a histogram a 256-byte row per CPU (default buckets), a gauge
    gauge_slots x 128 bytes.
    gauge_slots: slots per gauge (1..4096), the most processes a gauge tells
    apart (more share an overflow slot, counted by livesum only, where
    set() is last-writer-wins; a process landing there warns once).

    A second call with the same segment (a worker forked after the first, or
    the app's import after gunicorn's config) returns the first call's result;
    with another segment it raises ValueError.
    Raises: InvalidName (segment), InvalidArgument (size, gauge_slots),
    SegmentExists (fresh=True while the segment's creator still runs),
    PermissionDenied, OutOfSpace.
    """
    global _store
    with _lock:
        if _store is not None:
            if _store.info.segment == segment:
                return _store.info
            raise ValueError("procsafe.prometheus.enable(segment=%r): already enabled with segment %r"
                             % (segment, _store.info.segment))
        if not isinstance(segment, str) or not Segment.valid_name(segment):
            raise _procsafe.InvalidName("procsafe.prometheus.enable: segment must be a segment name (a letter, then "
                                        "letters, digits, '_', '-', '.'; at most 200), not %r" % (segment,))
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise InvalidArgument("procsafe.prometheus.enable: size must be a positive int of bytes, not %r" % (size,))
        if not isinstance(gauge_slots, int) or isinstance(gauge_slots, bool) or not 1 <= gauge_slots <= 4096:
            raise InvalidArgument("procsafe.prometheus.enable: gauge_slots must be an int from 1 to 4096, not %r" % (gauge_slots,))
        if fresh:
            seg, replaced = _create_fresh(segment, size, mode)
            info = Enabled(segment, True, False, seg.size)
            _log.info("procsafe.prometheus: segment %s made fresh%s", segment,
                      " (one left by a process that is gone replaced)" if replaced else "")
            atexit.register(_close_if_mine, seg, os.getpid())
        else:
            seg = Segment.open_or_create(segment, size, mode)
            carried = not seg.is_owner
            seg.disown()
            info = Enabled(segment, not carried, carried, seg.size)
            _log.info("procsafe.prometheus: segment %s %s", segment,
                      "carried on (its values go on)" if carried else "made (none was there); kept after exit")
        _store = _Store(seg, info, gauge_slots)
        _values.ValueClass = _store.value
        return info


def _create_fresh(segment, size, mode):
    """A new segment, replacing one whose creator is gone (C++
    create_mode::replace_orphan); never one whose creator still runs, unless
    that creator is this very process (an earlier enable(), disable()d)."""
    existed = _procsafe_exists(segment)
    try:
        return Segment.create(segment, size, mode, replace_orphan=True), existed
    except _procsafe.SegmentExists as e:
        try:
            info = Segment.info(segment)
        except Error:
            info = None
        if info is not None and info["creator_pid"] == os.getpid() and info["creator_alive"]:
            Segment.remove(segment)  # this process's own, from an earlier enable(): a fresh start
            return Segment.create(segment, size, mode), True
        raise _procsafe.SegmentExists(
            "procsafe.prometheus.enable(%r, fresh=True): %s. A running server's segment is never replaced (its counts "
            "would vanish): stop that process first, or pass fresh=False to share its segment (values carried on, "
            "not removed at exit)" % (segment, e)) from None


def _procsafe_exists(segment):
    return os.path.exists(os.path.join("/dev/shm", segment))


def _close_if_mine(seg, pid):
    if os.getpid() == pid:
        try:
            seg.close()
        except Error:
            pass


def enabled():
    """The Enabled of the enable() call in force, or None."""
    return _store.info if _store is not None else None


def disable():
    """Gives prometheus_client its own value class back (metrics made from
    now on are per process) and closes the segment (removing it when this
    process made it fresh). Metrics made before must not be used after it."""
    global _store
    with _lock:
        if _store is None:
            return
        _values.ValueClass = _values.get_value_class()
        seg, _store = _store.segment, None
        atexit.unregister(_close_if_mine)
        seg.close()


def _object_of(child):
    """The procsafe object a child of a metric keeps its values in, or None."""
    for attr in ("_value", "_sum", "_count"):
        v = getattr(child, attr, None)
        if v is None:
            continue
        o = getattr(v, "obj", None)
        if o is None:
            o = getattr(v, "hist", None)
        if o is not None:
            return o
    return None


def reset_removed(metric, labelvalues=None):
    """Removes the series that metric.remove(*labelvalues) (or clear(), with
    labelvalues None: every child this process holds; clear() first takes a
    child for every label set the segment shows, whichever process made it)
    drops, in the segment: resets it (counters,
    histograms and summaries to zero, a gauge's value of this process to
    zero), then takes it out of the exposition of every reader
    (ProcsafeCollector, `procsafe export`), for every process. The next
    labels() with these values, in any process, puts it back. remove() and
    clear() call it (enable() wraps them)."""
    with metric._lock:
        children = [metric._metrics[tuple(str(v) for v in labelvalues)]] if labelvalues is not None else list(metric._metrics.values())
    for child in children:
        for attr in ("_value", "_sum"):
            v = getattr(child, attr, None)
            if v is not None and hasattr(v, "_reset"):
                v._reset()
        # Reset first, hidden second: what another worker counts in between
        # goes to the hidden series (shown again by the next labels()), never
        # to a visible series that the reset then zeroes.
        o = _object_of(child)
        if o is not None:
            o.set_exported(False)


def _take_every_child(metric, labels):
    """Makes this process's child (prometheus_client's labels(), without
    showing it) for every label set of the metric that the segment shows,
    whichever process made it: clear() then resets and hides them all."""
    if not metric._labelnames or _store is None:
        return
    want = ",".join(metric._labelnames)
    for _, label_names, values, exported in _store.segment.series(metric._name):
        if label_names != want or not exported or len(values) != len(metric._labelnames):
            continue  # another metric's (same name, other labels), or hidden already
        with metric._lock:
            known = values in metric._metrics
        if not known:
            labels(metric, *values)


def _wrap_remove_and_clear():
    from prometheus_client.metrics import MetricWrapperBase

    if getattr(MetricWrapperBase, "_procsafe_wrapped", False):
        return
    labels, remove, clear = MetricWrapperBase.labels, MetricWrapperBase.remove, MetricWrapperBase.clear

    def procsafe_labels(self, *labelvalues, **labelkwargs):
        child = labels(self, *labelvalues, **labelkwargs)
        if _store is not None:
            o = _object_of(child)
            if o is not None:
                o.set_exported(True)  # a load when it is shown; a store when another worker removed it
        return child

    def procsafe_remove(self, *labelvalues):
        if _store is not None and self._labelnames and len(labelvalues) == len(self._labelnames):
            key = tuple(str(v) for v in labelvalues)
            if key in self._metrics:
                reset_removed(self, key)
        return remove(self, *labelvalues)

    def procsafe_clear(self):
        if _store is not None:
            _take_every_child(self, labels)
            reset_removed(self)
        return clear(self)

    procsafe_labels.__doc__ = labels.__doc__
    MetricWrapperBase.labels = procsafe_labels
    MetricWrapperBase.remove, MetricWrapperBase.clear = procsafe_remove, procsafe_clear
    MetricWrapperBase._procsafe_wrapped = True


_wrap_remove_and_clear()


# ---------------------------------------------------------------- reading


class ProcsafeCollector:
    """A collector for prometheus_client's registry: every series of the
    segment, whichever process made it, read through procsafe's exposition
    (the text `procsafe export` prints, without its segment label).

    Register it in a registry of its own (as MultiProcessCollector): the
    default REGISTRY also holds the metric objects, whose values are this
    process's view.

    segment: a segment name; None: the enabled one.
    """

    def __init__(self, registry=None, segment=None):
        if segment is None:
            if _store is None:
                raise ValueError("procsafe.prometheus.ProcsafeCollector: segment=None, but enable() was not called")
            segment = _store.info.segment
        if not isinstance(segment, str) or not Segment.valid_name(segment):
            raise _procsafe.InvalidName("procsafe.prometheus.ProcsafeCollector: segment must be a segment name, not %r" % (segment,))
        self.segment = segment
        self.warnings = []
        if registry is not None:
            registry.register(self)

    def describe(self):
        return []  # no names to check at registration (and no read of a segment not made yet)

    def text(self):
        """The exposition as procsafe's exporter writes it (segment label included)."""
        text, self.warnings = _procsafe.exposition([self.segment])
        for w in self.warnings:
            _log.debug("%s", w)
        return text

    def collect(self):
        for family in text_string_to_metric_families(self.text()):
            family.samples = [s._replace(labels={k: v for k, v in s.labels.items() if k != "segment"})
                              for s in family.samples]
            yield family
