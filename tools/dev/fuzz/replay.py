"""Replay inputs through a target with the bounds checked:
``python3 -m tools.dev.fuzz.replay TARGET FILE...``.

Prints OK or the finding per file; exit status 1 if any input shows a bug.
tests/test_fuzz_corpus.py uses ``bounded`` in-process, and this command in a
subprocess for the dispatcher's reproducers (a bug there may abort the
process); tools/dev/fuzz uses it to describe what a crashing input does.
"""

import signal
import sys
import traceback
import tracemalloc

from tools.dev.fuzz import catalog, dispatch

WATCHDOG = 20  # seconds for one input: far beyond any decoder's, so only a loop reaches it


class Loop(AssertionError):
    pass


class Allocation(AssertionError):
    pass


def _alarm(signum, frame):
    raise Loop(f"no result after {WATCHDOG} s: a loop?")


def bounded(run, data, alloc):
    """run(data) under a watchdog and tracemalloc: raises Loop, or Allocation if
    the peak exceeds a * len(data) + b for alloc = (a, b)."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, WATCHDOG)
    tracemalloc.start()
    try:
        run(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    a, b = alloc
    if peak > a * len(data) + b:
        raise Allocation(f"{len(data)} bytes of input allocated {peak} bytes "
                         f"(bound {a} * {len(data)} + {b})")


def replay(name, data):
    """One input through target ``name`` the way the corpus replay does it
    (the dispatcher's on a world of its own)."""
    target = catalog.get(name)
    if name == "dispatch":
        world = dispatch.World()
        try:
            bounded(world.handle, data, target.alloc)
        finally:
            world.close()
    else:
        target.prepare()
        bounded(target.run, data, target.alloc)


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    name, files = argv[0], argv[1:]
    status = 0
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        try:
            replay(name, data)
        except Exception:
            status = 1
            print(f"{path}: FINDING", flush=True)
            traceback.print_exc(file=sys.stdout)
        else:
            print(f"{path}: OK", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
