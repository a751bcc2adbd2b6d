"""Fixtures for procsafe's Python tests: unique segment names, and a check
that fails the test (and the session) that leaves a segment in /dev/shm."""
import os
import secrets

import pytest

import procsafe

SHM = "/dev/shm"
RUN = "pt%d%s" % (os.getpid(), secrets.token_hex(3))  # every segment this run makes starts so


def leftovers():
    """This run's segments in /dev/shm: named ones, and the drop-ins' default
    segments made by this process or a child it started."""
    if not os.path.isdir(SHM):
        return set()
    mine = "procsafe-py-%d-" % os.getpid()
    return {n for n in os.listdir(SHM) if n.startswith(RUN) or n.startswith(mine)}


@pytest.fixture(scope="session", autouse=True)
def no_segment_left_after_the_run():
    before = leftovers()
    yield
    procsafe._defaults.close()  # what atexit does at the end of this process
    left = leftovers() - before
    for name in left:
        procsafe.Segment.remove(name)
    assert not left, "segments left in /dev/shm by the run: %s" % sorted(left)


@pytest.fixture(autouse=True)
def no_segment_left_by_the_test():
    before = leftovers()
    yield
    left = {n for n in leftovers() - before if n.startswith(RUN)}
    for name in left:
        procsafe.Segment.remove(name)
    assert not left, "segments left in /dev/shm by the test: %s" % sorted(left)


@pytest.fixture
def name(request):
    """A segment name of this run, unique to the test."""
    return "%s-%s" % (RUN, secrets.token_hex(4))


@pytest.fixture
def seg(name):
    with procsafe.Segment.create(name, 1 << 20) as s:
        yield s
