"""The benchmark's results say how an idle CPU waited during the run: with
one client a server waits between every two calls, and where an idle vCPU
halts at once (a VM's haltpoll with guest_halt_poll_ns 0, as here) each call
wakes it through the host, which about doubled both servers' CPU per call."""

import os
import platform
import sys

import pytest

from tools.dev import daemons
from tools.dev.benchmarks import harness, report


def test_the_environment_records_the_cpuidle_driver_and_its_halt_poll():
    if not os.path.exists(harness.CPUIDLE):
        assert harness.cpuidle() is None
        return
    with open(harness.CPUIDLE) as f:
        driver = f.read().strip()
    idle = harness.environment()["cpuidle"]
    assert idle["driver"] == driver
    if driver == "haltpoll":
        with open(harness.HALT_POLL) as f:
            assert idle["guest_halt_poll_ns"] == int(f.read())
    else:
        assert idle["guest_halt_poll_ns"] is None


def _results(cpuidle):
    env = {"when": "2026-12-05 20:00:00 +0000", "cpus": 2, "kernel": "6.18", "python": "3.11.7",
           "loadavg": [1.0, 1.0, 1.0], "ganesha": None}
    if cpuidle is not None:
        env["cpuidle"] = cpuidle
    return {"environment": env, "params": {}}


HALTS = "An idle vCPU halts at once here"


@pytest.mark.parametrize("poll, halts", [(0, True), (200000, False)])
def test_the_report_says_how_an_idle_cpu_waited(poll, halts):
    text = report.markdown(_results({"driver": "haltpoll", "guest_halt_poll_ns": poll}))
    assert f"Python 3.11.7, cpuidle haltpoll (guest_halt_poll_ns {poll}), no ganesha." in text
    assert (HALTS in text) is halts


def test_results_from_before_it_was_recorded_say_nothing_of_it():
    text = report.markdown(_results(None))
    assert "Python 3.11.7, no ganesha." in text
    assert "cpuidle" not in text and HALTS not in text
    text = report.markdown(_results({"driver": "intel_idle", "guest_halt_poll_ns": None}))
    assert "Python 3.11.7, cpuidle intel_idle, no ganesha." in text and HALTS not in text


def test_the_daemons_run_on_the_interpreter_nfsp_python_names(tmp_path, monkeypatch):
    """A benchmark against a C server a distribution built runs nfspd on that
    distribution's Python (NFSP_PYTHON), whatever runs the harness."""
    other = tmp_path / "python3"
    other.symlink_to(sys.executable)
    monkeypatch.setenv("NFSP_PYTHON", str(other))
    nfspd = daemons.Nfspd(None, str(tmp_path / "nfspd"))
    iod = daemons.Iod(None, str(tmp_path / "iod"), str(tmp_path / "key"))
    up = daemons.NfspUp(None, str(tmp_path / "up"), str(tmp_path / "up.log"))
    assert nfspd.argv()[:3] == [str(other), "-m", "nfspd.cli"]
    assert iod.argv()[:3] == [str(other), "-m", "iod.cli"]
    assert up.command == [str(other), "-m", "tools.nfsp"]
    env = harness.environment()
    assert env["daemons_python"] == {"path": str(other), "version": platform.python_version(),
                                     "implementation": platform.python_implementation()}
    header = report.markdown({"environment": env, "params": {}}).splitlines()[2]
    assert f"Python {platform.python_version()} (the daemons: " \
           f"{platform.python_implementation()} {platform.python_version()}, {other})" in header


def test_without_nfsp_python_the_daemons_run_on_the_harness_interpreter(tmp_path, monkeypatch):
    monkeypatch.delenv("NFSP_PYTHON", raising=False)
    assert daemons.Nfspd(None, str(tmp_path)).argv()[0] == sys.executable
    env = harness.environment()
    assert env["daemons_python"] is None
    assert "the daemons" not in report.markdown({"environment": env, "params": {}})
