"""Every decoder of untrusted input against what the fuzzers found (tests/fuzz).

- Each file of tests/fuzz/corpus/TARGET is replayed through its target: it
  must raise nothing but the codec's own error (the targets catch exactly that
  one), keep the target's properties, finish within the watchdog, and allocate
  at most the target's bound (tracemalloc peak <= a * len(input) + b). Each
  target is prepared first (imports, type tables, its seeds once), so what is
  measured is the input's own cost, not the first call's.
- Each reproducer in tests/fuzz/repro/TARGET is replayed the same way; those
  of bugs not fixed yet (tools/dev/fuzz/known.py) are strict expected failures.
  The dispatcher's run in a subprocess on a world of their own: a bug there may
  abort the process.

The fuzzers themselves run with ``python3 -m tools.dev.fuzz run``, never here; the
hypothesis tests of the same targets are in tests/test_fuzz_properties.py.
"""

import os
import subprocess
import sys

import pytest

from tools.dev.fuzz import catalog, known
from tools.dev.fuzz.replay import bounded

FUZZ_DIR = os.path.join(os.path.dirname(__file__), "fuzz")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _inputs(name, kind):
    directory = os.path.join(FUZZ_DIR, kind, name)
    if not os.path.isdir(directory):
        return []
    return sorted(f for f in os.listdir(directory) if not f.endswith(".txt"))


def _cases(kind):
    for name in catalog.names():
        for f in _inputs(name, kind):
            marks = []
            bug = known.lookup(name, f) if kind == "repro" else None
            if bug is not None:
                marks.append(pytest.mark.xfail(strict=True, reason=bug.what))
            yield pytest.param(name, os.path.join(FUZZ_DIR, kind, name, f),
                               id=f"{name}/{f[:16]}", marks=marks)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _needs_root():
    if os.geteuid() != 0:
        pytest.skip("the dispatch target's MetaFS needs root (open_by_handle_at)")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One dispatcher world for the whole dispatch corpus, as while fuzzing."""
    _needs_root()
    from tools.dev.fuzz import dispatch
    w = dispatch.World(str(tmp_path_factory.mktemp("fuzz-world")))
    yield w
    w.close()


@pytest.mark.parametrize("name,path", list(_cases("corpus")))
def test_corpus(name, path, request):
    target = catalog.get(name)
    if name == "dispatch":
        bounded(request.getfixturevalue("world").handle, _read(path), target.alloc)
    else:
        target.prepare()
        bounded(target.run, _read(path), target.alloc)


@pytest.mark.parametrize("name,path", list(_cases("repro")))
def test_reproducer(name, path):
    if name != "dispatch":
        target = catalog.get(name)
        target.prepare()
        bounded(target.run, _read(path), target.alloc)
        return
    _needs_root()
    p = subprocess.run([sys.executable, "-m", "tools.dev.fuzz.replay", name, path], cwd=REPO,
                       env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, errors="replace", timeout=120)
    assert p.returncode == 0, p.stdout[-3000:]


@pytest.mark.parametrize("name", catalog.names())
def test_every_target_has_a_corpus(name):
    assert _inputs(name, "corpus"), f"no corpus: run python3 -m tools.dev.fuzz run {name}"


def test_corpus_stays_small():
    """The repository must not grow by megabytes: tools/dev/fuzz caps each corpus."""
    total = sum(os.path.getsize(os.path.join(FUZZ_DIR, kind, name, f))
                for kind in ("corpus", "repro") for name in catalog.names()
                for f in _inputs(name, kind))
    assert total < 512 << 10, f"tests/fuzz holds {total} bytes of inputs"


def test_every_known_bug_has_its_reproducer():
    for bug in known.KNOWN:
        assert bug.target in catalog.names(), bug
        assert os.path.isfile(os.path.join(FUZZ_DIR, "repro", bug.target, bug.repro)), bug
