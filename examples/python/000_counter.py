# Seed 000 (SuperFastPython, "process-safe counter"): a counter class shared
# by 10 processes that each increment it N times (the tutorial: 100,000).
#   unsafe  an ordinary object: each child increments its own copy; the
#           parent prints 0
#   racy    the count in a shared Value, `value += 1`: a read and a write,
#           each under Value's lock, nothing around the pair; updates are lost
#   safe    the read and the write under get_lock(): exact
# The classes are the tutorial's (its two UnsafeCounter classes are named
# apart here); only the variant and N come from the command line:
#   /usr/bin/python3 000_counter.py racy 100000
# run.py runs each variant as written, then with the import below changed
# to `from procsafe import Value`.
import sys
from multiprocessing import Process
from multiprocessing import Value


class UnsafeCounter():
    def __init__(self):
        self._counter = 0

    def increment(self):
        self._counter += 1

    def value(self):
        return self._counter


class RacyCounter():
    def __init__(self):
        self._counter = Value('i', 0)

    def increment(self):
        self._counter.value += 1

    def value(self):
        return self._counter.value


class SafeCounter():
    def __init__(self):
        self._counter = Value('i', 0)

    def increment(self):
        with self._counter.get_lock():
            self._counter.value += 1

    def value(self):
        with self._counter.get_lock():
            return self._counter.value


# task executed by processes
def task(counter, increments):
    for _ in range(increments):
        counter.increment()


if __name__ == '__main__':
    variant = sys.argv[1]
    increments = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
    counter = {'unsafe': UnsafeCounter, 'racy': RacyCounter, 'safe': SafeCounter}[variant]()
    processes = [Process(target=task, args=(counter, increments)) for _ in range(10)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    print(counter.value())
