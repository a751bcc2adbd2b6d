# Seed 002 (SuperFastPython, "thread-safe counter"): the same story with 10
# threads in one process, each incrementing N times (the tutorial: 100,000).
#   unsafe  `self._counter += 1` with no lock: a read, an add and a write
#           that a thread switch can split (the tutorial saw ~720,000 of
#           1,000,000; CPython 3.10+ switches threads only at a few points,
#           and a run may lose nothing)
#   safe    the same under a threading.Lock: exact
#   /usr/bin/python3 002_thread_counter.py unsafe 100000
# run.py also runs `safe` with the import below changed to
# `from procsafe import Lock`: procsafe's Lock is a lock for threads too.
import sys
from threading import Thread
from threading import Lock


class ThreadUnsafeCounter():
    def __init__(self):
        self._counter = 0

    def increment(self):
        self._counter += 1

    def value(self):
        return self._counter


class ThreadSafeCounter():
    def __init__(self):
        self._counter = 0
        self._lock = Lock()

    def increment(self):
        with self._lock:
            self._counter += 1

    def value(self):
        with self._lock:
            return self._counter


# task executed by threads
def task(counter, increments):
    for _ in range(increments):
        counter.increment()


if __name__ == '__main__':
    variant = sys.argv[1]
    increments = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
    counter = {'unsafe': ThreadUnsafeCounter, 'safe': ThreadSafeCounter}[variant]()
    threads = [Thread(target=task, args=(counter, increments)) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(counter.value())
