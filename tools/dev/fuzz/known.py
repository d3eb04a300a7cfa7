"""Bugs the fuzzers found that are not fixed yet (their fix belongs to a file
this harness does not own).

Each Known names its reproducer, tests/fuzz/repro/TARGET/REPRO, which
tests/test_fuzz_corpus.py replays as a strict expected failure: fixing the bug
makes that test fail until the entry is removed here (the reproducer then stays
as a regression guard).

While fuzzing, a known bug must not stop the run at the first input that
reaches it, so that ten minutes go to looking for other bugs:

- ``raises(exc)``: the exception this bug raises; let through (reported once).
- ``avoid(data)``: the input would kill the fuzzing process (os.abort, a
  segfault), which no exception handler sees; such inputs are not run at all.
"""

import dataclasses
import typing


@dataclasses.dataclass(frozen=True)
class Known:
    target: str
    repro: str
    what: str
    fix: str
    raises: typing.Optional[typing.Callable[[BaseException], bool]] = None
    avoid: typing.Optional[typing.Callable[[bytes], bool]] = None


KNOWN = []
# Fixed since they were found; their reproducers in tests/fuzz/repro now guard
# against a regression (each has a NAME.txt with the cause and the fix):
# record/empty-fragments (c3bcc17), rpc_reply/unknown-accept-stat (0b18679),
# iodsconf/superscript-port, dispatch/authsys-uid-high-bit and
# dispatch/mknod-rdev-overflow (37a2223), iod_frame/unsigned-ping-with-stamp and
# iod_body/nested-arrays (8ce176a), iod_body/pong-uptime-nan and
# iod_replay/readmitted-sender (62c9ccf), exports/id-5000-digits.


def for_target(target):
    return [k for k in KNOWN if k.target == target]


def lookup(target, repro):
    return next((k for k in KNOWN if (k.target, k.repro) == (target, repro)), None)
