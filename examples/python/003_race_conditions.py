# Seed 003 (SuperFastPython, "race conditions between processes"): an adder
# process and a subtractor process, 1,000 times each; the balance should end
# at 0. Then a race of timing between two processes.
#   manager_racy  a counter object hosted by a Manager, read-copy-write with
#                 sleep(0) in between: the server's threads interleave
#   manager_safe  the same with a Lock inside the class
#   ctype_racy    a shared Value, `variable.value += 1` / `-= 1`
#   ctype_safe    the same under get_lock()
#   timing_race   the child waits on a Condition after the parent notified
#                 it: the notification is lost and the child waits forever
#                 (run.py stops it after a few seconds)
#   timing_event  the tutorial's fix: the child sets an Event once it waits,
#                 the parent notifies after the Event
#   timing_wait   procsafe's fix: the notification is a count, and the child
#                 waits until the count reaches 1; a count already reached is
#                 never missed, whoever comes first
#   /usr/bin/python3 003_race_conditions.py ctype_racy 1000
# The tutorial's delays (1 s, 0.5 s) are scaled by the second argument for
# the timing variants (run.py: 0.2).
import sys
from time import sleep
from multiprocessing import Process
from multiprocessing import Lock, Condition, Event
from multiprocessing.managers import BaseManager
from multiprocessing import Value


class UnsafeCounter():
    def __init__(self, count):
        self._value = count

    def get(self):
        return self._value

    def add(self, amount):  # the tutorial's increment() and decrement(), one method
        tmp = self._value
        sleep(0)  # allow a context switch
        tmp = tmp + amount
        sleep(0)
        self._value = tmp


class SafeCounter(UnsafeCounter):
    def __init__(self, count):
        super().__init__(count)
        self._lock = Lock()

    def add(self, amount):
        with self._lock:
            super().add(amount)


class CustomManager(BaseManager):
    pass


def manager_task(counter, amount, repeats):
    for i in range(repeats):
        counter.add(amount)


def ctype_racy(variable, amount, repeats):
    for _ in range(repeats):
        variable.value += amount


def ctype_safe(variable, amount, repeats):
    for _ in range(repeats):
        with variable.get_lock():
            variable.value += amount


def run_pair(target, shared, repeats):
    adder = Process(target=target, args=(shared, 1, repeats))
    subtractor = Process(target=target, args=(shared, -1, repeats))
    adder.start()
    subtractor.start()
    adder.join()
    subtractor.join()


def timing_task(condition, event, scale):
    sleep(1 * scale)  # a delay: the parent notifies during it
    print('Process: Waiting to be notified...', flush=True)
    with condition:
        if event is not None:
            print('Process: Ready', flush=True)
            event.set()
        condition.wait()
    print('Process: Notified', flush=True)


def timing_wait_task(notified, scale):
    sleep(1 * scale)
    print('Process: Waiting to be notified...', flush=True)
    notified.wait_at_least(1, timeout=60)  # at once when the count is already 1
    print('Process: Notified', flush=True)


if __name__ == '__main__':
    variant = sys.argv[1]
    number = float(sys.argv[2]) if len(sys.argv) > 2 else 1000
    if variant.startswith('manager'):
        CustomManager.register('Counter', UnsafeCounter if variant == 'manager_racy' else SafeCounter)
        with CustomManager() as manager:
            counter = manager.Counter(0)
            run_pair(manager_task, counter, int(number))
            print(f'Value: {counter.get()}')
    elif variant.startswith('ctype'):
        variable = Value('i', 0)
        run_pair(ctype_racy if variant == 'ctype_racy' else ctype_safe, variable, int(number))
        print(f'Value: {variable.value}')
    else:
        scale = number if len(sys.argv) > 2 else 1.0
        if variant == 'timing_wait':
            import procsafe
            segment = procsafe.Segment.anonymous(64 * 1024)  # inherited by the forked child
            notified = segment.atomic_counter('notified')
            process = Process(target=timing_wait_task, args=(notified, scale))
        else:
            condition = Condition()
            event = Event() if variant == 'timing_event' else None
            process = Process(target=timing_task, args=(condition, event, scale))
        process.start()
        if variant == 'timing_event':
            event.wait()  # the child is waiting on the condition now
        else:
            sleep(0.5 * scale)  # hope the child is waiting by now (it is not)
        print('Main: Notifying the process', flush=True)
        if variant == 'timing_wait':
            notified.increment()
        else:
            with condition:
                condition.notify()
        process.join()
        print('Main: Done')
