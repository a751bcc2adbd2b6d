# The five tutorials procsafe was born from (retold in C++ by ../*.cpp), in
# Python: each program as the tutorial writes it, on multiprocessing, then the
# same program with its import line changed to procsafe (and, where the
# program's own `value += 1` is the race, that line changed too). The changes
# are made here, on the program's text, and printed as a diff: nothing else
# differs between the rows.
#
#   /usr/bin/python3 examples/python/run.py [--quick] [--show] [SEED ...]   (SEED: 000 .. 004)
#
# Prints, per tutorial, what each variant should give, what it got and how
# many updates were lost. A race may lose nothing on a given run: racy rows
# are reported, never checked. The rows marked "checked" must be exact, and
# the exit status is 1 when one is not, 77 when procsafe cannot be imported
# (its rows are then skipped), 0 otherwise.
import argparse
import difflib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Row:
    variant: str
    args: list
    changes: list = field(default_factory=list)  # names of the seed's edits, applied in order
    checked: bool = False  # must be exact
    procsafe: bool = False  # uses procsafe as written
    note: str = ''
    timeout: float = 120


@dataclass
class Seed:
    program: str
    title: str
    expected: int
    unit: str  # what is counted
    edits: dict  # name -> (old text, new text); the old text must occur once
    rows: list
    parse: object = None  # stdout -> got


def last_number(out):
    numbers = re.findall(r'-?\d+', out.strip().splitlines()[-1]) if out.strip() else []
    return int(numbers[-1]) if numbers else None


def tasks_alone(out):  # 004: tasks that completed without sharing the lock
    m = re.search(r'(\d+) tasks completed, (\d+) held the lock at once', out)
    return int(m.group(1)) - int(m.group(2)) if m else None


def notified(out):  # 003's timing variants: did the child see the notification?
    return int('Process: Notified' in out)


def seeds(quick):
    n000 = 5000 if quick else 20000
    n003 = 5000 if quick else 20000
    return {
        '000': Seed('000_counter.py', f'a process-safe counter class: 10 processes x {n000:,} increments',
                    10 * n000, 'increments',
                    {'import': ('from multiprocessing import Value', 'from procsafe import Value'),
                     'add': ('    def increment(self):\n        self._counter.value += 1',
                             '    def increment(self):\n        self._counter.add(1)')},
                    [Row('unsafe', [n000], note='each child counts in its own copy'),
                     Row('racy', [n000]),
                     Row('racy', [n000], ['import'], note='still a read, then a write'),
                     Row('racy', [n000], ['import', 'add'], checked=True),
                     Row('safe', [n000], checked=True),
                     Row('safe', [n000], ['import'], checked=True)]),
        '001': Seed('001_shared_counter.py', 'a shared counter: 10 processes x 50 increments, 10 ms apart',
                    500, 'increments',
                    {'import': ('from multiprocessing import Value, RawValue, Lock',
                                'from procsafe import Value, RawValue, Lock'),
                     'add': ('time.sleep(0.01)\n        val.value += 1', 'time.sleep(0.01)\n        val.add(1)')},
                    [Row('wrong', [50]),
                     Row('wrong', [50], ['import'], note='still a read, then a write'),
                     Row('wrong', [50], ['import', 'add'], checked=True),
                     Row('right', [50], checked=True),
                     Row('right', [50], ['import'], checked=True),
                     Row('counter', [50], checked=True),
                     Row('counter', [50], ['import'], checked=True)]),
        '002': Seed('002_thread_counter.py', f'a thread-safe counter: 10 threads x {n000:,} increments',
                    10 * n000, 'increments',
                    {'import': ('from threading import Lock', 'from procsafe import Lock')},
                    [Row('unsafe', [n000], note='threads of one process'),
                     Row('safe', [n000], checked=True),
                     Row('safe', [n000], ['import'], checked=True)]),
        '003': Seed('003_race_conditions.py',
                    f'race conditions: +1 and -1, {n003:,} times each (Manager: 1,000); a notification',
                    0, 'balance',
                    {'import': ('from multiprocessing import Value', 'from procsafe import Value'),
                     'add': ('    for _ in range(repeats):\n        variable.value += amount',
                             '    for _ in range(repeats):\n        variable.add(amount)')},
                    [Row('manager_racy', [1000], note='a Manager-hosted object'),
                     Row('manager_safe', [1000], checked=True),
                     Row('ctype_racy', [n003]),
                     Row('ctype_racy', [n003], ['import'], note='still a read, then a write'),
                     Row('ctype_racy', [n003], ['import', 'add'], checked=True),
                     Row('ctype_safe', [n003], checked=True),
                     Row('ctype_safe', [n003], ['import'], checked=True),
                     Row('timing_race', [0.2], timeout=2, note='notified before it waits: waits forever'),
                     Row('timing_event', [0.2], checked=True, note='an Event says when the child waits'),
                     Row('timing_wait', [0.2], checked=True, procsafe=True, note='procsafe: wait_at_least(1) on a count')]),
        '004': Seed('004_pool_lock.py', 'a lock for pool tasks: 10 tasks on 4 workers, one at a time',
                    10, 'tasks run alone',
                    {'import': ('from multiprocessing import Lock', 'from procsafe import Lock')},
                    [Row('error', [0.05], note='starmap_async: the Lock refuses to be pickled'),
                     Row('apply', [0.05], note='apply_async: the same, raised by get()'),
                     Row('manager', [0.05], checked=True, note="a Manager's Lock (a server process)"),
                     Row('error', [0.05], ['import'], checked=True, note='procsafe.Lock pickles by name'),
                     Row('apply', [0.05], ['import'], checked=True)],
                    tasks_alone),
    }


def expected_of(seed, row):
    return 1 if row.variant.startswith('timing') else seed.expected


def parse_of(seed, row):
    if row.variant.startswith('timing'):
        return notified
    return seed.parse or last_number


def run(path, row):
    """Runs one program; returns (stdout, stderr, seconds, status). A program
    that outlives its timeout is stopped with its children (its own session)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, path, row.variant, *map(str, row.args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=row.timeout)
        status = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        status = 'timeout'
    return out, err, time.perf_counter() - start, status


def edited(source, seed, names):
    for name in names:
        old, new = seed.edits[name]
        if source.count(old) != 1:
            raise SystemExit(f'run.py: edit {name!r} of {seed.program} matches {source.count(old)} times, not once')
        source = source.replace(old, new)
    return source


def diff(before, after):
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm='', n=0)
    return [line for line in lines if line[:1] in '+-' and line[:3] not in ('---', '+++')]


def main():
    parser = argparse.ArgumentParser(description='The five tutorials, on multiprocessing and on procsafe.')
    parser.add_argument('seeds', nargs='*', metavar='SEED', help='000 .. 004 (default: all)')
    parser.add_argument('--quick', action='store_true', help='smaller counts (ctest)')
    parser.add_argument('--show', action='store_true', help="print each program's own output too")
    options = parser.parse_args()
    table = seeds(options.quick)
    wanted = options.seeds or list(table)
    unknown = [a for a in wanted if a not in table]
    if unknown:
        parser.error(f'no seed {unknown[0]!r}; seeds: {" ".join(table)}')
    try:
        import procsafe  # noqa: F401
        have_procsafe, why = True, ''
    except ImportError as e:
        have_procsafe, why = False, str(e)
    cpus = len(os.sched_getaffinity(0))
    print(f'Python {sys.version.split()[0]} ({sys.executable}) on {cpus} CPUs'
          + ('' if have_procsafe else f'; procsafe rows skipped: {why}'))
    wrong = skipped = 0
    with tempfile.TemporaryDirectory(prefix='procsafe-examples-') as tmp:
        for key in wanted:
            seed = table[key]
            path = os.path.join(HERE, seed.program)
            with open(path) as f:
                source = f.read()
            print(f'\nseed {key}, {seed.program}: {seed.title}')
            for name, (old, new) in seed.edits.items():
                lines = diff(source, edited(source, seed, [name]))
                print(f'  [{name}] ' + f'\n  {" " * (len(name) + 3)}'.join(lines))
            print(f'  {"variant":<13} {"change":<11} {"expected":>9} {"got":>9} {"lost":>9} {"seconds":>8}  check')
            for row in seed.rows:
                change = '+'.join(row.changes) or 'as written'
                expected = expected_of(seed, row)
                if (row.changes or row.procsafe) and not have_procsafe:
                    skipped += 1
                    print(f'  {row.variant:<13} {change:<11} {expected:>9} {"-":>9} {"-":>9} {"-":>8}  skipped')
                    continue
                program = path
                if row.changes:
                    program = os.path.join(tmp, seed.program)
                    with open(program, 'w') as f:
                        f.write(edited(source, seed, row.changes))
                out, err, seconds, status = run(program, row)
                got = parse_of(seed, row)(out)
                if status == 'timeout':
                    note = f'stopped after {row.timeout:g} s: ' + row.note
                elif status != 0 or got is None:
                    note = f'exit status {status}: ' + (err.strip().splitlines() or ['no output'])[-1]
                    got = None
                else:
                    note = row.note
                exact = got == expected
                if row.checked:
                    check = 'exact' if exact else 'WRONG'
                    wrong += not exact
                else:
                    check = 'not checked'
                got_text = '-' if got is None else str(got)
                lost_text = '-' if got is None else str(abs(expected - got))  # 003: how far the balance is off
                print(f'  {row.variant:<13} {change:<11} {expected:>9} {got_text:>9} {lost_text:>9} {seconds:>8.2f}  '
                      f'{check}{"; " + note if note else ""}')
                if options.show:
                    print(''.join('      | ' + line + '\n' for line in (out + err).splitlines()), end='')
    print(f'\n{"every checked row exact" if not wrong else f"{wrong} checked rows NOT exact"}'
          + (f'; {skipped} rows skipped (no procsafe)' if skipped else ''))
    return 1 if wrong else 77 if skipped else 0


if __name__ == '__main__':
    sys.exit(main())
