"""procsafe.prometheus: prometheus_client's Counter, Gauge, Histogram and
Summary kept in a procsafe segment, read by ProcsafeCollector and by the C++
`procsafe export`. Workers are forked processes driven through pipes (no
sleeps); every total is exact."""
import math
import os
import select
import shutil
import signal
import subprocess

import pytest

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import procsafe  # noqa: E402
import procsafe.prometheus as pp  # noqa: E402

WAIT = 30.0  # the most any step waits for a worker (bounded waits, never a sleep)


@pytest.fixture
def prom(name):
    info = pp.enable(name, 8 << 20)
    yield info
    pp.disable()


class Worker:
    """A forked process that runs fn(), says so, then waits for the parent's
    word: exit normally, or be SIGKILLed where it stands."""

    def __init__(self, fn):
        up_r, up_w = os.pipe()
        down_r, down_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            code = 0
            try:
                os.close(up_r)
                os.close(down_w)
                fn()
                os.write(up_w, b"k")
                os.read(down_r, 1)
            except BaseException:
                import traceback
                traceback.print_exc()
                code = 1
            os._exit(code)
        os.close(up_w)
        os.close(down_r)
        self.up, self.down = up_r, down_w
        ready, _, _ = select.select([self.up], [], [], WAIT)
        assert ready and os.read(self.up, 1) == b"k", "worker %d did not finish its part" % self.pid

    def exit(self):
        os.write(self.down, b"x")
        _, status = os.waitpid(self.pid, 0)
        self._close()
        assert os.waitstatus_to_exitcode(status) == 0

    def kill(self):
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        self._close()

    def _close(self):
        os.close(self.up)
        os.close(self.down)


def families(collector):
    return {f.name: f for f in collector.collect()}


def samples(collector):
    """{(sample name, sorted labels): value} of every sample the collector gives."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in collector.collect() for s in f.samples}


def test_counters_exact_across_processes_and_never_back_when_killed(prom):
    reg = CollectorRegistry()
    col = pp.ProcsafeCollector(reg)
    requests = Counter("requests", "Requests served.", ["method"], registry=None)

    def work(method, n):
        def fn():
            c = requests.labels(method)  # made in the worker: other processes find the same series
            for _ in range(n):
                c.inc()
            requests.labels("POST").inc(0.5)
        return fn

    workers = [Worker(work("GET", 1000)) for _ in range(3)]
    workers[0].kill()  # SIGKILLed after counting: what it counted stays
    workers[1].exit()
    got = samples(col)
    assert got[("requests_total", (("method", "GET"),))] == 3000
    assert got[("requests_total", (("method", "POST"),))] == 1.5
    workers[2].kill()
    assert samples(col)[("requests_total", (("method", "GET"),))] == 3000
    text = generate_latest(reg).decode()
    assert '# TYPE requests_total counter' in text and 'requests_total{method="GET"} 3000.0' in text
    assert "segment=" not in text


def test_histogram_and_summary_match_prometheus_client_own(prom):
    observations = [0.003, 0.02, 0.02, 0.4, 1.0, 7.5, 12.0, -0.0]
    lat = Histogram("latency_seconds", "Latency.", ["path"], buckets=(0.01, 0.1, 1.0, 10.0), registry=None)
    size = Summary("size_bytes", "Size.", registry=None)

    def fn():
        for v in observations:
            lat.labels("/").observe(v)
            size.observe(v * 100)

    for w in [Worker(fn), Worker(fn)]:
        w.exit()
    # the same observations, twice, on prometheus_client's own values in one process
    pp_reg, own = CollectorRegistry(), CollectorRegistry()
    pp.ProcsafeCollector(pp_reg)
    saved = prometheus_client.values.ValueClass
    prometheus_client.values.ValueClass = prometheus_client.values.MutexValue
    try:
        lat2 = Histogram("latency_seconds", "Latency.", ["path"], buckets=(0.01, 0.1, 1.0, 10.0), registry=own)
        size2 = Summary("size_bytes", "Size.", registry=own)
        for _ in range(2):
            for v in observations:
                lat2.labels("/").observe(v)
                size2.observe(v * 100)
    finally:
        prometheus_client.values.ValueClass = saved

    def series(reg):
        out = {}
        for f in text_string_to_metric_families(generate_latest(reg).decode()):
            for s in f.samples:
                if not s.name.endswith("_created"):
                    out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    mine, theirs = series(pp_reg), series(own)
    bucket_inf = ("size_bytes_bucket", (("le", "+Inf"),))  # a Summary is a histogram without bounds here
    assert mine.pop(bucket_inf) == 16
    assert mine == theirs
    assert mine[("latency_seconds_bucket", (("le", "1.0"), ("path", "/")))] == 12
    assert mine[("latency_seconds_count", (("path", "/"),))] == 16
    # what the application's own objects read back
    assert lat.labels("/")._sum.get() == pytest.approx(2 * sum(observations))
    assert size._count.get() == 16


# What each mode should read after: the parent sets 1, workers A (2), B (5, killed), C (-3) set theirs.
EXPECTED_MODES = {
    "livesum": [((), 0.0 + 1 + 2 - 3)],
    "sum": [((), 1 + 2 + 5 - 3)],
    "livemin": [((), -3.0)],
    "min": [((), -3.0)],
    "livemax": [((), 2.0)],
    "max": [((), 5.0)],
}


def test_every_gauge_mode_and_dead_processes(prom):
    reg = CollectorRegistry()
    col = pp.ProcsafeCollector(reg)
    gauges = {m: Gauge("g_" + m, "Gauge " + m + ".", multiprocess_mode=m, registry=None) for m in pp.MODES}

    def setter(v):
        def fn():
            for g in gauges.values():
                g.set(v)
        return fn

    for g in gauges.values():
        g.set(1)
    a, b, c = Worker(setter(2)), Worker(setter(5)), Worker(setter(-3))
    b.kill()  # no mark_process_dead: live* modes drop it by themselves
    got = samples(col)
    for mode, want in EXPECTED_MODES.items():
        assert [(labels, got[("g_" + mode, labels)]) for labels, _ in want] == want, mode
    pids = {os.getpid(): 1.0, a.pid: 2.0, b.pid: 5.0, c.pid: -3.0}
    live = {p: v for p, v in pids.items() if p != b.pid}
    assert {int(dict(k[1])["pid"]): v for k, v in got.items() if k[0] == "g_liveall"} == live
    assert {int(dict(k[1])["pid"]): v for k, v in got.items() if k[0] == "g_all"} == pids
    assert gauges["sum"]._value.get() == 1 and gauges["livesum"]._value.get() == 1  # this process's own
    # A new process takes the dead one's slot: all, min and max forget it; sum keeps its last value.
    d = Worker(setter(0))
    got = samples(col)
    assert {int(dict(k[1])["pid"]) for k in got if k[0] == "g_all"} == {os.getpid(), a.pid, c.pid, d.pid}
    assert got[("g_max", ())] == 2 and got[("g_sum", ())] == 5 and got[("g_livesum", ())] == 0
    for w in (a, c, d):
        w.exit()
    got = samples(col)
    assert got[("g_livesum", ())] == 1 and got[("g_sum", ())] == 5  # exited: live modes drop them
    assert {int(dict(k[1])["pid"]) for k in got if k[0] == "g_liveall"} == {os.getpid()}


def test_gauge_inc_dec_and_track_inprogress_in_a_worker_killed_mid_request(prom):
    col = pp.ProcsafeCollector()
    inflight = Gauge("inflight", "Requests in flight.", multiprocess_mode="livesum", registry=None)

    def fn():
        inflight.inc()  # enters a request and is killed there
        inflight.inc(2.5)
        inflight.dec(2.5)

    w = Worker(fn)
    with inflight.track_inprogress():
        assert samples(col)[("inflight", ())] == 2
    assert samples(col)[("inflight", ())] == 1
    w.kill()
    assert samples(col)[("inflight", ())] == 0


def export_samples(segment):
    """samples(), from `procsafe export` (the C++ reader) without its segment label; None without PROCSAFE_CLI."""
    cli = os.environ.get("PROCSAFE_CLI")
    if not cli:
        return None
    out = subprocess.run([cli, "export", segment], capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 0, out.stderr
    got = {}
    for f in text_string_to_metric_families(out.stdout):
        for s in f.samples:
            labels = dict(s.labels)
            labels.pop("segment")
            got[(s.name, tuple(sorted(labels.items())))] = s.value
    return got


def both_readers(col, segment):
    """What ProcsafeCollector reads, checked equal to what `procsafe export` prints."""
    got = samples(col)
    exported = export_samples(segment)
    if exported is not None:
        assert exported == got
    return got


def series_of(got, label):
    return {k for k in got if (("queue", label) in k[1])}


def test_remove_and_clear_drop_the_series_from_both_readers_and_labels_brings_it_back_from_zero(prom):
    col = pp.ProcsafeCollector()
    c = Counter("jobs", "Jobs.", ["queue"], registry=None)
    h = Histogram("job_seconds", "Job time.", ["queue"], buckets=(1.0,), registry=None)
    s = Summary("job_bytes", "Job size.", ["queue"], registry=None)
    g = Gauge("depth", "Depth.", ["queue"], multiprocess_mode="livemax", registry=None)
    gs = Gauge("depth_sum", "Depth.", ["queue"], multiprocess_mode="sum", registry=None)
    metrics = (c, h, s, g, gs)
    for q in ("a", "b"):
        c.labels(q).inc(3)
        h.labels(q).observe(0.5)
        s.labels(q).observe(5)
        g.labels(q).set(7)
        gs.labels(q).set(4)
    got = both_readers(col, prom.segment)
    for k in ("jobs_total", "job_seconds_count", "job_bytes_count", "depth", "depth_sum"):
        assert (k, (("queue", "a"),)) in got
    for m in metrics:
        m.remove("a")
    got = both_readers(col, prom.segment)
    assert series_of(got, "a") == set()  # gone from both readers, as prometheus_client's own remove()
    assert got[("jobs_total", (("queue", "b"),))] == 3 and got[("job_seconds_count", (("queue", "b"),))] == 1
    assert got[("depth", (("queue", "b"),))] == 7 and got[("job_bytes_sum", (("queue", "b"),))] == 5
    assert "queue=\"a\"" not in generate_latest(_registry(col)).decode()
    c.labels("a")  # labels() again: back, from zero
    h.labels("a")
    got = both_readers(col, prom.segment)
    assert got[("jobs_total", (("queue", "a"),))] == 0 and got[("job_seconds_count", (("queue", "a"),))] == 0
    assert got[("job_seconds_sum", (("queue", "a"),))] == 0
    assert ("depth", (("queue", "a"),)) not in got  # only what labels() was called for
    c.labels("a").inc()
    assert both_readers(col, prom.segment)[("jobs_total", (("queue", "a"),))] == 1
    for m in metrics:
        m.clear()
    got = both_readers(col, prom.segment)
    assert series_of(got, "a") == set() and series_of(got, "b") == set()
    assert c._metrics == {}
    gs.labels("b").set(1)
    s.labels("b")
    got = both_readers(col, prom.segment)
    assert got[("depth_sum", (("queue", "b"),))] == 1 and got[("job_bytes_count", (("queue", "b"),))] == 0


def _registry(col):
    reg = CollectorRegistry()
    reg.register(col)
    return reg


def test_remove_in_one_worker_hides_the_series_from_every_process_and_labels_in_another_brings_it_back(prom):
    col = pp.ProcsafeCollector()
    c = Counter("tasks", "Tasks.", ["queue"], registry=None)
    held = c.labels("a")  # this process's child, kept across the other worker's remove()
    held.inc(5)
    Worker(lambda: c.labels("a").inc(2)).exit()
    assert both_readers(col, prom.segment)[("tasks_total", (("queue", "a"),))] == 7
    Worker(lambda: c.remove("a")).exit()  # another process removes it: reset, then hidden for everyone
    assert series_of(both_readers(col, prom.segment), "a") == set()
    held.inc(1)  # through a child held across the remove(): counted in the hidden series
    assert series_of(both_readers(col, prom.segment), "a") == set()
    Worker(lambda: c.labels("a")).exit()  # labels() in a third process: back, with what the held child counted
    assert both_readers(col, prom.segment)[("tasks_total", (("queue", "a"),))] == 1
    Worker(lambda: c.remove("a")).exit()
    assert series_of(both_readers(col, prom.segment), "a") == set()
    c.labels("a").inc(4)  # this process's cached child: labels() shows it again
    assert both_readers(col, prom.segment)[("tasks_total", (("queue", "a"),))] == 4


def test_bad_arguments_name_what_is_wrong(name):
    with pytest.raises(procsafe.InvalidName, match="segment"):
        pp.enable("no/slash")
    with pytest.raises(procsafe.InvalidArgument, match="size"):
        pp.enable(name, size=0)
    with pytest.raises(procsafe.InvalidArgument, match="gauge_slots"):
        pp.enable(name, gauge_slots=0)
    with pytest.raises(ValueError, match="enable"):
        pp.ProcsafeCollector()
    pp.enable(name, 1 << 20)
    try:
        assert pp.enable(name).segment == name  # again: the same (a worker, the app's import)
        with pytest.raises(ValueError, match="already enabled"):
            pp.enable(name + "x")
        with pytest.raises(procsafe.InvalidArgument, match="pid"):
            Gauge("per_pid", "x", ["pid"], multiprocess_mode="liveall", registry=None).labels("1")
        with pytest.raises(procsafe.InvalidArgument, match="label"):
            Counter("c", "x", ["segment"], registry=None).labels("1")  # procsafe export's own label
    finally:
        pp.disable()


def test_fresh_or_carried_on_says_which(name):
    info = pp.enable(name, 1 << 20, fresh=False)
    assert (info.fresh, info.carried_on) == (True, False)
    Counter("restarts", "x", registry=None).inc(4)
    pp.disable()  # fresh=False: the segment stays for the next start
    try:
        info = pp.enable(name, 1 << 20, fresh=False)
        assert (info.fresh, info.carried_on) == (False, True)
        c = Counter("restarts", "x", registry=None)
        c.inc()
        assert c._value.get() == 5
        pp.disable()
        info = pp.enable(name, 1 << 20, fresh=True)  # a fresh start removes what was there
        assert (info.fresh, info.carried_on) == (True, False)
        assert Counter("restarts", "x", registry=None)._value.get() == 0
    finally:
        pp.disable()
        procsafe.Segment.remove(name)


def test_memory_and_scrape_bounded_by_live_processes_not_lifetimes(prom):
    """A worker lifetime: make the app's metrics, count, set gauges, exit
    (every third SIGKILLed). After 10 lifetimes and after 150 more, the
    segment has exactly as much free memory and the exposition as many lines."""
    col = pp.ProcsafeCollector()
    seg = procsafe.Segment.open(prom.segment)

    def lifetime(i):
        def fn():
            c = Counter("req", "x", ["code"], registry=None)
            c.labels("200").inc()
            for m in pp.MODES:
                Gauge("w_" + m, "x", multiprocess_mode=m, registry=None).set(i)
            Histogram("lat", "x", registry=None).observe(0.1)
        return fn

    def run(n, start):
        for i in range(start, start + n):
            w = Worker(lifetime(i))
            w.kill() if i % 3 == 0 else w.exit()

    run(10, 0)
    free, lines = seg.free_memory(), len(col.text().splitlines())
    run(150, 10)
    assert seg.free_memory() == free
    assert len(col.text().splitlines()) == lines
    assert samples(col)[("req_total", (("code", "200"),))] == 160
    seg.close()


def test_procsafe_export_prints_the_same_series_and_promtool_accepts_it(prom, tmp_path):
    cli = os.environ.get("PROCSAFE_CLI")
    if not cli:
        pytest.skip("PROCSAFE_CLI not set (the procsafe command is built by tools/)")
    c = Counter("http_requests", "Requests \"served\"\nby code.", ["code", "path"], registry=None)
    c.labels("200", 'a"b\\c').inc(2)
    h = Histogram("lat_seconds", "Latency.", buckets=(0.5, 2.5), registry=None)
    h.observe(1)
    Summary("sz", "Size.", registry=None).observe(3)
    for m in pp.MODES:
        Gauge("gm_" + m + "_now", "x", ["k"], multiprocess_mode=m, registry=None).labels("v").set(2.25)
    out = subprocess.run([cli, "export", prom.segment], capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 0, out.stderr
    exported = {}
    for f in text_string_to_metric_families(out.stdout):
        for s in f.samples:
            labels = dict(s.labels)
            assert labels.pop("segment") == prom.segment
            exported[(s.name, tuple(sorted(labels.items())))] = s.value
    col = pp.ProcsafeCollector()
    assert exported == samples(col)
    assert exported[("http_requests_total", (("code", "200"), ("path", 'a"b\\c')))] == 2
    assert exported[("gm_liveall_now", (("k", "v"), ("pid", str(os.getpid()))))] == 2.25
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian's prometheus)")
    check = subprocess.run([promtool, "check", "metrics"], input=out.stdout, capture_output=True, text=True, timeout=WAIT)
    assert check.returncode == 0, check.stdout + check.stderr


def test_collector_reads_a_segment_written_by_another_process_only(name):
    """A scraper that made no metric (gunicorn's master, a sidecar) reads them all."""
    def fn():
        pp.enable(name, 1 << 20, fresh=False)
        Counter("side", "x", registry=None).inc(3)
        Gauge("side_g", "x", multiprocess_mode="livesum", registry=None).set(math.pi)
    w = Worker(fn)
    try:
        col = pp.ProcsafeCollector(segment=name)
        got = samples(col)
        assert got[("side_total", ())] == 3 and got[("side_g", ())] == math.pi
    finally:
        w.exit()
        procsafe.Segment.remove(name)


def test_fresh_refuses_a_segment_whose_creator_still_runs_and_replaces_an_orphan(name):
    """enable(fresh=True) never removes a running server's segment (a gunicorn
    USR2 re-exec, a second server given the same name): it raises
    SegmentExists naming the creator's pid; once that creator is gone, the
    segment left behind is replaced."""
    def server():
        pp.enable(name, 1 << 20)  # fresh=True, in a process of its own (the running server)
        Counter("served", "x", registry=None).inc(5)

    w = Worker(server)
    try:
        try:
            with pytest.raises(procsafe.SegmentExists, match=r"%s.*pid %d.*still runs.*fresh=False" % (name, w.pid)):
                pp.enable(name, 1 << 20)
        finally:
            if pp.enabled() is not None:  # it did not raise: the running server's segment was replaced
                pp.disable()
        assert samples(pp.ProcsafeCollector(segment=name))[("served_total", ())] == 5  # the running server's counts are still there
    finally:
        w.kill()  # its segment stays behind, an orphan
    info = pp.enable(name, 1 << 20)
    try:
        assert (info.fresh, info.carried_on) == (True, False)
        assert Counter("served", "x", registry=None)._value.get() == 0  # replaced: a fresh start
    finally:
        pp.disable()
        procsafe.Segment.remove(name)


def test_clear_drops_every_label_set_of_the_metric_whoever_made_it(prom):
    col = pp.ProcsafeCollector()
    c = Counter("hits", "Hits.", ["path"], registry=None)
    h = Histogram("lat", "Latency.", ["path"], buckets=(1.0,), registry=None)
    g = Gauge("busy", "Busy.", ["path"], multiprocess_mode="livemax", registry=None)
    other = Counter("hits2", "Other family, same prefix.", ["path"], registry=None)

    def worker_b():
        c.labels("/b").inc(2)
        h.labels("/b").observe(0.5)
        g.labels("/b").set(3)
        other.labels("/b").inc()

    b = Worker(worker_b)
    try:
        c.labels("/a").inc()
        h.labels("/a").observe(2)
        got = both_readers(col, prom.segment)
        assert got[("hits_total", (("path", "/b"),))] == 2 and got[("hits_total", (("path", "/a"),))] == 1

        def worker_a():
            for m in (c, h, g):
                m.clear()  # worker A's clear(): every label set, worker B's /b included

        Worker(worker_a).exit()
        got = both_readers(col, prom.segment)
        assert not [k for k in got if k[0].startswith(("hits_total", "lat_", "busy"))], got
        assert got[("hits2_total", (("path", "/b"),))] == 1  # another metric: untouched
        assert [p[0] for p in g.labels("/b")._value.obj.processes()] == [b.pid]  # no slot taken by the clear()
        c.labels("/b").inc()  # shown again by labels(), from zero (reset)
        assert both_readers(col, prom.segment)[("hits_total", (("path", "/b"),))] == 1
    finally:
        b.exit()


def test_gauge_get_takes_no_slot_and_overflow_warns_once(name):
    import logging

    pp.enable(name, 8 << 20, gauge_slots=1)
    try:
        g = Gauge("temp", "x", multiprocess_mode="max", registry=None)
        g.set(4)  # this process takes the only slot
        lg = g._value.obj

        def reader():
            assert g._value.get() == 0.0  # get() in a process that never set it
            assert [p[0] for p in lg.processes()] == [os.getppid()]  # no slot taken

        Worker(reader).exit()

        def overflowing():
            records = []
            handler = logging.Handler()
            handler.emit = records.append
            logging.getLogger("procsafe.prometheus").addHandler(handler)
            g.set(9)  # no slot left: the overflow slot
            g.set(10)
            Gauge("temp2", "x", multiprocess_mode="livesum", registry=None).inc()
            warned = [r.getMessage() for r in records if r.levelno == logging.WARNING]
            assert len(warned) == 1 and "overflow" in warned[0] and "temp" in warned[0] and "gauge_slots=1" in warned[0], warned

        Worker(overflowing).exit()
    finally:
        pp.disable()


def test_a_lone_surrogate_in_a_label_value_is_invalid_argument_naming_metric_and_label(prom):
    c = Counter("paths", "x", ["path"], registry=None)
    with pytest.raises(procsafe.InvalidArgument, match=r"paths.*path"):
        c.labels("/\ud800")
