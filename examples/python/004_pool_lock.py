# Seed 004 (SuperFastPython, "use a lock in the process pool"): 10 tasks on
# a Pool of 4 workers, each holding a shared lock while it sleeps for a
# random time, so that they run one at a time.
#   error    the lock passed as a task argument, starmap_async with an error
#            callback: multiprocessing's Lock refuses to be pickled ("Lock
#            objects should only be shared between processes through
#            inheritance") and no task runs
#   apply    the same with one apply_async per task, each result awaited
#   manager  the tutorial's fix: a Manager's Lock (a proxy to a lock in a
#            server process)
# The sleeps are scaled by the second argument (the tutorial: 1; run.py:
# 0.05). Each task also returns when it held the lock, so the program can
# say whether two tasks ever held it at once.
#   /usr/bin/python3 004_pool_lock.py error 0.05
# run.py runs `error` and `apply` again with the import below changed to
# `from procsafe import Lock`: procsafe's Lock pickles as a name.
import sys
import time
from random import random
from time import sleep
from multiprocessing import Manager
from multiprocessing.pool import Pool
from multiprocessing import Lock


def custom_error_callback(error):
    print(error, flush=True)


# task executed in a worker process
def task(identifier, lock, scale):
    with lock:
        start = time.monotonic()  # one clock for every process (Linux)
        value = random()
        sleep(value * scale)
        print(f'Task {identifier} completed with {value}', flush=True)
        return start, time.monotonic()


def report(spans):
    spans = sorted(spans)
    overlaps = sum(1 for a, b in zip(spans, spans[1:]) if b[0] < a[1])
    print(f'{len(spans)} tasks completed, {overlaps} held the lock at once with another')


if __name__ == '__main__':
    variant = sys.argv[1]
    scale = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    with Manager() as manager:
        lock = manager.Lock() if variant == 'manager' else Lock()
        with Pool(4) as pool:
            if variant == 'apply':
                results = [pool.apply_async(task, (i, lock, scale)) for i in range(10)]
                spans, errors = [], set()
                for result in results:
                    try:
                        spans.append(result.get())
                    except Exception as e:  # re-raised from the task
                        errors.add(f'{type(e).__name__}: {e}')
                for error in sorted(errors):
                    print(error, flush=True)
                report(spans)
            else:
                items = [(i, lock, scale) for i in range(10)]
                result = pool.starmap_async(task, items, error_callback=custom_error_callback)
                result.wait()
                report(result.get() if result.successful() else [])
