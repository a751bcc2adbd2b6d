# gunicorn's config for test_gunicorn.py: the master runs it once, before it
# forks the workers. This is the whole set-up procsafe.prometheus needs.
import os

if os.environ["PROM_BACKEND"] == "procsafe":
    import procsafe.prometheus
    procsafe.prometheus.enable(os.environ["PROM_SEGMENT"], 16 << 20)
# (multiprocess: PROMETHEUS_MULTIPROC_DIR is set, an empty directory; no
# child_exit hook calling mark_process_dead, as the comparison is without it)
