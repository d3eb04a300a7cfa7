#!/usr/bin/env python3
"""The atheris entry point:
``python3 -m tools.dev.fuzz.run TARGET [libFuzzer options] [CORPUS_DIR...]``.

tools/dev/fuzz drives it (corpus directories, time budget, merging, crash
minimisation); this module only instruments the code under test, bounds
memory and hands one target to libFuzzer. libFuzzer's -merge and
-minimize_crash re-run this file with the same arguments minus the target
name, which therefore travels in the environment (NFSP_FUZZ_TARGET); hence the
file is executable.

What counts as a finding, besides any exception the target lets out:

- Allocation: an input that raises the process's peak RSS by more than the
  target's bound for its length (Target.alloc, plus RSS_SLACK for the
  coarseness of RSS) raises AllocationError. The peak only grows, so this
  catches an input the first time it allocates more than anything before it;
  tests/test_fuzz_corpus.py then measures it exactly with tracemalloc. The
  address space is also capped (NFSP_FUZZ_HEADROOM_MB, default 1024 above the
  size after start-up), so a runaway allocation fails fast with MemoryError.
- Time: libFuzzer's -timeout (tools/dev/fuzz sets it).

While fuzzing, a finding does not end the run: the first input per distinct
bug (exception type and the line that raised it) is written to
NFSP_FUZZ_FINDINGS/finding-SIGNATURE with its traceback in a .txt beside it,
and fuzzing goes on; known bugs (tools/dev/fuzz/known.py) are let through or not
run. So a 10-minute run keeps looking for new bugs instead of stopping at the
first. libFuzzer itself only sees what Python cannot catch (an abort, a
timeout). Under -merge and -minimize_crash (or NFSP_FUZZ_STRICT=1)
everything raises, so that no input showing a bug enters the corpus and a
crash can be minimised.
"""

import hashlib
import os
import resource
import sys
import traceback
import tracemalloc

import atheris

RSS_SLACK = 8 << 20


class AllocationError(AssertionError):
    """``where``: the line of the project's code under the largest allocation."""

    def __init__(self, message, where):
        super().__init__(f"{message} (mostly at {where})")
        self.where = where


def _allocation_site(run, data):
    """Run the input again under tracemalloc: the innermost project line of
    the biggest allocation's traceback."""
    tracemalloc.start(32)
    try:
        try:
            run(data)
        except Exception:
            pass
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    stats = snapshot.statistics("traceback")
    if not stats:
        return "?"
    for frame in reversed(stats[0].traceback):  # newest last: walk from the allocation up
        if _ours(frame.filename):
            return f"{os.path.basename(frame.filename)}:{frame.lineno}"
    return "?"


def _ours(filename):
    return any(d in filename for d in ("/common/", "/nfspd/", "/tools/dev/fuzz/"))


def _cap_address_space(headroom):
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm + headroom, hard))


def _peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def signature(exc):
    """Exception type and the innermost line of the project's code that raised
    (for the dispatcher's SYSTEM_ERR: of what the handler raised)."""
    exc = getattr(exc, "cause", None) or exc
    where = getattr(exc, "where", None)
    if where is None:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if _ours(f.filename)]
        where = f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else "?"
    return f"{type(exc).__name__}@{where}"


def _record(findings, exc, data):
    sig = signature(exc)
    name = "finding-" + hashlib.sha1(sig.encode()).hexdigest()[:12]
    path = os.path.join(findings, name)
    if os.path.exists(path):
        return
    with open(path, "wb") as f:
        f.write(data)
    with open(path + ".txt", "w") as f:
        f.write(f"{sig}\n\n")
        f.write("".join(traceback.format_exception(exc)))
    print(f"NFSP finding {sig}: {type(exc).__name__}: {exc!s:.200} (saved as {path})",
          file=sys.stderr, flush=True)


def main():
    if len(sys.argv) >= 2 and not sys.argv[1].startswith("-") and "/" not in sys.argv[1]:
        os.environ["NFSP_FUZZ_TARGET"] = sys.argv.pop(1)
    name = os.environ.get("NFSP_FUZZ_TARGET")
    if not name:
        raise SystemExit(__doc__)
    # libFuzzer re-runs this file for -minimize_crash without that option: the
    # environment says so then (tools/dev/fuzz sets it for merging and minimising).
    strict = (os.environ.get("NFSP_FUZZ_STRICT") == "1"
              or any(a.startswith(("-merge=", "-minimize_crash=")) for a in sys.argv))
    findings = os.environ.get("NFSP_FUZZ_FINDINGS")
    with atheris.instrument_imports(include=["common", "nfspd"]):
        from tools.dev.fuzz import catalog, known
        target = catalog.get(name)
        target.prepare()
    run = target.run
    a, b = target.alloc
    bugs = known.for_target(name)
    raises = [k for k in bugs if k.raises]
    avoid = [k for k in bugs if k.avoid]
    seen = set()

    def checked(data):
        for k in avoid:
            if k.avoid(data):
                if strict:
                    raise AssertionError(f"known bug {k.repro}")
                return
        try:
            before = _peak_rss()
            run(data)
            grown = _peak_rss() - before
            if grown > a * len(data) + b + RSS_SLACK:
                raise AllocationError(f"{len(data)} bytes of input raised the peak RSS by "
                                      f"{grown} bytes", _allocation_site(run, data))
        except Exception as e:
            hit = next((k for k in raises if k.raises(e)), None)
            if hit is None or strict:
                raise
            if hit.repro not in seen:  # say once that the fuzzer reached it too
                seen.add(hit.repro)
                print(f"NFSP known bug {hit.repro} reached: {type(e).__name__}: {e!s:.200} "
                      f"input {data[:64]!r}", file=sys.stderr, flush=True)

    def one_input(data):
        if strict or not findings:
            checked(data)
            return
        try:
            checked(data)
        except Exception as e:
            _record(findings, e, data)

    _cap_address_space(int(os.environ.get("NFSP_FUZZ_HEADROOM_MB", "1024")) << 20)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
