# Seed 001 (Eli Bendersky, "Shared counter with Python's multiprocessing"),
# in Python 3: 10 processes each add 1 to a shared Value 50 times, sleeping
# 10 ms before each add.
#   wrong    `val.value += 1`: Value's lock covers the read and the write
#            separately, so two processes can both read 7 and both write 8
#   right    a separate Lock around `val.value += 1`: 500, every run
#   counter  the "bonus": a Counter class owning a RawValue (no lock of its
#            own) and the one coarse Lock
#   /usr/bin/python3 001_shared_counter.py wrong 50
# run.py runs each variant as written, then with the import below changed
# to `from procsafe import Value, RawValue, Lock`.
import sys
import time
from multiprocessing import Process
from multiprocessing import Value, RawValue, Lock


def func_wrong(val, increments):
    for i in range(increments):
        time.sleep(0.01)
        val.value += 1


def func_right(val, lock, increments):
    for i in range(increments):
        time.sleep(0.01)
        with lock:
            val.value += 1


class Counter(object):
    def __init__(self, initval=0):
        self.val = RawValue('i', initval)
        self.lock = Lock()

    def increment(self):
        with self.lock:
            self.val.value += 1

    def value(self):
        with self.lock:
            return self.val.value


def func_counter(counter, increments):
    for i in range(increments):
        time.sleep(0.01)
        counter.increment()


if __name__ == '__main__':
    variant = sys.argv[1]
    increments = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    if variant == 'counter':
        counter = Counter(0)
        procs = [Process(target=func_counter, args=(counter, increments)) for i in range(10)]
    else:
        v = Value('i', 0)
        lock = Lock()
        args = (v, increments) if variant == 'wrong' else (v, lock, increments)
        procs = [Process(target=func_wrong if variant == 'wrong' else func_right, args=args) for i in range(10)]
    for p in procs: p.start()
    for p in procs: p.join()
    print(counter.value() if variant == 'counter' else v.value)
