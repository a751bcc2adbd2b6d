"""A small WSGI app for test_gunicorn.py, instrumented with prometheus_client
as an application would be; PROM_BACKEND says where its values live:
"procsafe" (procsafe.prometheus, enabled by prom_gunicorn_conf.py in the
master) or "multiprocess" (prometheus_client's own, PROMETHEUS_MULTIPROC_DIR).

/work counts and answers; /hold counts, says so with a file HOLD_DIR/PID, then
waits to be SIGKILLed by the test (at most 60 s); /metrics is the exposition."""
import os
import threading
import time

import procsafe.prometheus  # noqa: F401  (enable() ran in the master: the values are procsafe's)
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BACKEND = os.environ["PROM_BACKEND"]
REQUESTS = Counter("app_requests", "Requests handled.", ["path"])
INFLIGHT = Gauge("app_inflight", "Requests in flight.", multiprocess_mode="livesum")
LATENCY = Histogram("app_latency_seconds", "Time to handle /work.", buckets=(0.0005, 0.001, 0.005, 0.05))


def metrics():
    registry = CollectorRegistry()
    if BACKEND == "procsafe":
        procsafe.prometheus.ProcsafeCollector(registry)
    else:
        from prometheus_client import multiprocess
        multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/metrics":
        body = metrics()
    elif path == "/work":
        start = time.perf_counter()
        with INFLIGHT.track_inprogress():
            REQUESTS.labels("/work").inc()
            body = b"ok %d\n" % os.getpid()
        LATENCY.observe(time.perf_counter() - start)
    elif path == "/hold":
        with INFLIGHT.track_inprogress():
            REQUESTS.labels("/hold").inc()
            with open(os.path.join(os.environ["HOLD_DIR"], str(os.getpid())), "w"):
                pass
            threading.Event().wait(60)  # the test kills this worker here
        body = b"not killed\n"
    else:
        body = b"ping\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
