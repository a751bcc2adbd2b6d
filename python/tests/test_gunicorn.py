"""A real server under real churn: Debian's gunicorn (--workers 4
--max-requests 100) runs prom_app.py on 127.0.0.1; a bounded load of
thousands of requests, workers SIGKILLed in the middle of a request, a real
Prometheus scraping /metrics. The same app on prometheus_client's own
multiprocess mode for comparison (its figures are printed; run pytest -s).

Checks (procsafe): the request counter equals the responses received plus
the requests in flight at each kill (each kill hits a held request, counted
before it holds); the livesum in-flight gauge is back to 0 without
mark_process_dead; the histogram's count equals its counter; Prometheus
scraped the same total."""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import procsafe  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REQUESTS = int(os.environ.get("PROCSAFE_GUNICORN_REQUESTS", "3000"))
THREADS = 4
KILLS = 3
WAIT = 60.0  # the most any step waits


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wait_until(what, predicate, limit=WAIT):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(0.05)  # a bounded poll of a condition
    raise AssertionError("timed out after %.0f s waiting for %s" % (limit, what))


def samples(text):
    out = {}
    for f in text_string_to_metric_families(text):
        for s in f.samples:
            key = (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("segment", "pid"))))
            out[key] = out.get(key, 0) + s.value if f.type == "gauge" and "pid" in s.labels else s.value
    return out


class Process:
    """A server this test started (self.proc, self.log): SIGTERM, then SIGKILL after 30 s."""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Server(Process):
    def __init__(self, backend, tmp_path, segment):
        self.port = free_port()
        self.hold_dir = tmp_path / ("held-" + backend)
        self.hold_dir.mkdir()
        env = dict(os.environ, PROM_BACKEND=backend, PROM_SEGMENT=segment, HOLD_DIR=str(self.hold_dir),
                   PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), HERE])))
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.pop("prometheus_multiproc_dir", None)
        if backend == "multiprocess":
            self.mp_dir = tmp_path / "multiproc"
            self.mp_dir.mkdir()
            env["PROMETHEUS_MULTIPROC_DIR"] = str(self.mp_dir)
        self.log = open(tmp_path / ("gunicorn-%s.log" % backend), "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--workers", "4", "--max-requests", "100", "--bind",
             "127.0.0.1:%d" % self.port, "--config", os.path.join(HERE, "prom_gunicorn_conf.py"), "--timeout", "90",
             "--graceful-timeout", "10", "--log-level", "warning", "prom_app:app"],
            cwd=str(tmp_path), env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until("gunicorn to answer", self._up)

    def _up(self):
        return answers(self, "gunicorn", self.port, "/ping")



def answers(server, what, port, path):
    """True once the server answers 200 at path; its log in the error if it exited."""
    if server.proc.poll() is not None:
        server.log.seek(0)
        raise AssertionError("%s exited: %s" % (what, server.log.read()))
    try:
        return get(port, path, timeout=2)[0] == 200
    except OSError:
        return False


class Prometheus(Process):
    def __init__(self, tmp_path, target_port):
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.skip("prometheus not installed (Debian's prometheus package)")
        self.port = free_port()
        d = tmp_path / "prometheus"
        d.mkdir()
        (d / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: ['127.0.0.1:%d']\n" % target_port)
        self.log = open(d / "log", "w+")
        self.proc = subprocess.Popen(
            [binary, "--config.file=%s" % (d / "prometheus.yml"), "--storage.tsdb.path=%s" % (d / "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port, "--web.console.templates=%s" % d,
             "--web.console.libraries=%s" % d, "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)

        wait_until("prometheus to be ready", lambda: answers(self, "prometheus", self.port, "/-/ready"))

    def query(self, promql):
        status, body = get(self.port, "/api/v1/query?query=" + urllib.parse.quote(promql), timeout=5)
        if status != 200:
            return None
        result = json.loads(body)["data"]["result"]
        return float(result[0]["value"][1]) if result else None



def load(server):
    """REQUESTS requests to /work from THREADS threads; at 1/4, 2/4 and 3/4 of
    them a /hold request, whose worker is SIGKILLed while it holds it."""
    ok, failed, lock = [0], [0], threading.Lock()
    counter = iter(range(REQUESTS))

    def client():
        for _ in counter:
            try:
                status, body = get(server.port, "/work")
                good = status == 200 and body.startswith(b"ok ")
            except OSError:
                good = False
            with lock:
                ok[0] += good
                failed[0] += not good

    threads = [threading.Thread(target=client) for _ in range(THREADS)]
    for t in threads:
        t.start()
    killed = []
    for k in range(KILLS):
        wait_until("load to reach %d/%d" % (k + 1, KILLS + 1),
                   lambda: ok[0] + failed[0] >= REQUESTS * (k + 1) // (KILLS + 1) or not any(t.is_alive() for t in threads))
        before = set(os.listdir(server.hold_dir))
        result = {}

        def hold():
            try:
                result["answer"] = get(server.port, "/hold", timeout=WAIT)
            except OSError as e:
                result["error"] = e
        h = threading.Thread(target=hold)
        h.start()
        held = wait_until("a worker to hold /hold", lambda: set(os.listdir(server.hold_dir)) - before)
        pid = int(held.pop())
        os.kill(pid, signal.SIGKILL)  # in the middle of a request: counted, in flight, never answered
        h.join(WAIT)
        assert "error" in result, "the held request was answered: %r" % (result,)
        killed.append(pid)
    for t in threads:
        t.join(WAIT * 5)
    return ok[0], failed[0], killed


@pytest.mark.parametrize("backend", ["procsafe", "multiprocess"])
def test_gunicorn_churn_and_kills(backend, tmp_path, name):
    import importlib.util
    if importlib.util.find_spec("gunicorn") is None:
        pytest.skip("gunicorn not installed (Debian's gunicorn; ./dev test installs it)")
    prom = None
    server = Server(backend, tmp_path, name)
    try:
        if backend == "procsafe":
            prom = Prometheus(tmp_path, server.port)
        started = time.monotonic()
        ok, failed, killed = load(server)
        seconds = time.monotonic() - started
        t0 = time.perf_counter()
        status, body = get(server.port, "/metrics")
        scrape_ms = (time.perf_counter() - t0) * 1000
        assert status == 200
        got = samples(body.decode())
        total = got[("app_requests_total", (("path", "/work"),))] + got.get(("app_requests_total", (("path", "/hold"),)), 0)
        inflight = got[("app_inflight", ())]
        count = got[("app_latency_seconds_count", ())]
        if backend == "multiprocess":
            stored = sum(f.stat().st_size for f in server.mp_dir.iterdir())
            where = "%d files, %d bytes in PROMETHEUS_MULTIPROC_DIR" % (len(list(server.mp_dir.iterdir())), stored)
        else:
            where = "segment %s, %d bytes in /dev/shm" % (name, os.stat("/dev/shm/" + name).st_size)
        print("\n%s: %d requests in %.1f s (%d ok, %d failed), %d workers SIGKILLed mid-request; counter %d, "
              "in-flight gauge %g, histogram count %d; /metrics %.1f ms, %d bytes; %s"
              % (backend, REQUESTS, seconds, ok, failed, len(killed), total, inflight, count, scrape_ms, len(body), where))
        assert len(killed) == KILLS
        assert failed == 0
        assert total == ok + len(killed)  # the held requests were counted before they were killed
        assert count == got[("app_requests_total", (("path", "/work"),))] == ok
        if backend == "procsafe":
            assert inflight == 0  # the killed workers' +1 dropped out by itself
            want = ok + len(killed)
            seen = wait_until("Prometheus to scrape the total",
                              lambda: prom.query("sum(app_requests_total)") == want and prom.query("app_inflight") == 0)
            assert seen
        else:
            assert inflight == len(killed)  # without mark_process_dead, each killed worker's +1 stays
    finally:
        if prom is not None:
            prom.stop()
        server.stop()
        if backend == "procsafe":
            assert not os.path.exists("/dev/shm/" + name), "the master removes its fresh segment when it exits"
            procsafe.Segment.remove(name)
