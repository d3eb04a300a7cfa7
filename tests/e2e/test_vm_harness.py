"""The guest harness can fail: a failing step, a wrong value and a hung
command are all reported (and a hung guest is powered off, not waited on)."""

import time

import pytest

from tests.e2e import expect
from tests.support import vm as vmlib


@pytest.fixture(scope="module")
def scratch(guests):
    # A guest of its own: this module powers it off.
    label = "debian" if isinstance(vmlib.udp_kernel(), str) else "nfsudp"
    return guests.get(label, slot="harness")


def test_failing_step_is_reported_with_its_output(scratch):
    with pytest.raises(vmlib.VMError, match=r"(?s)exit status 1.*nope: not here"):
        scratch.check("echo 'nope: not here' >&2; false; echo never")
    assert scratch.results("R a 1 2; R b") == {"a": "1 2", "b": ""}


def test_a_wrong_value_is_a_difference():
    assert "got '1', expected '2'" in expect.diff({"k": "1"}, {"k": "2"})
    assert "got None" in expect.diff({}, {"k": "2"})


def test_hung_command_times_out_and_powers_the_guest_off(scratch):
    t = time.monotonic()
    with pytest.raises(vmlib.VMError, match="timed out after 2s"):
        scratch.check("sleep 60", timeout=2)
    assert time.monotonic() - t < 30
    with pytest.raises(vmlib.VMError, match="not running"):
        scratch.check("true")
