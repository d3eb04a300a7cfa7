"""Fuzz targets for every decoder of untrusted input, their corpora, and the
reproducers of what fuzzing found.

Layout::

    tools/dev/fuzz/__main__.py  `python3 -m tools.dev.fuzz`: runs the fuzzers, keeps corpora small
    tools/dev/fuzz/targets.py   the codec targets (pure: bytes in, nothing out)
    tools/dev/fuzz/dispatch.py  the whole-dispatcher target (nfspd on a temp dir)
    tools/dev/fuzz/run.py       the atheris entry point (only the fuzzer needs atheris)
    tools/dev/fuzz/replay.py    one input through a target with the bounds checked
    tools/dev/fuzz/known.py     bugs found and not fixed yet, with the fix proposed
    tests/fuzz/corpus/NAME/     a small minimised corpus per target, replayed in CI
    tests/fuzz/repro/NAME/      one file per bug found (NAME.txt: what it did)

The corpora and reproducers are test data (tests/test_fuzz_corpus.py replays
them, CI never runs a fuzzer), so they live under tests/; the fuzzer writes
them there by path.

A target is a function of one bytes argument. It decodes the input the way the
daemons do, swallows exactly the codec's own error type, and checks properties
of what decoded (it re-encodes, a reply decodes, a buffer stays bounded); any
other exception is a finding. Allocation is bounded by a * len(input) + b per
target (Target.alloc): checked exactly with tracemalloc when replaying, and by
the growth of the peak RSS while fuzzing; loops by a watchdog and libFuzzer's
-timeout.

    python3 -m tools.dev.fuzz run all --minutes 10 -j 2   fuzz (see __main__.py)
    python3 -m pytest tests/test_fuzz_corpus.py           replay corpora and reproducers (CI)
    python3 -m tools.dev.fuzz.replay TARGET FILE          one input, with its traceback
"""
