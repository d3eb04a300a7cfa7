"""The metadata benchmark's load generators stand for clients on other
machines: they run under SCHED_BATCH, which keeps their share of the CPU but
never lets their wake-ups preempt the server they share 2 cores with."""

import os
import subprocess
import sys

import pytest

from tools.dev.benchmarks import harness, metadata


def test_a_remote_client_runs_under_sched_batch():
    argv = harness.as_remote_client(
        [sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    assert int(out) == os.SCHED_BATCH


class _Started(Exception):
    pass


class _Server:
    server, export, pid, label = "127.0.0.1", "/export", os.getpid(), "nfsp"

    def client_prefix(self):
        return lambda argv: argv


@pytest.mark.parametrize("clients", [1, 8])
def test_the_metadata_rows_load_comes_from_remote_clients(monkeypatch, tmp_path, clients):
    started = []

    def run_loadgens(specs, **_):
        started.extend(prefix(argv) for prefix, argv in specs)
        raise _Started

    monkeypatch.setattr(metadata, "run_loadgens", run_loadgens)
    ctx = harness.Context(str(tmp_path), harness.Params())
    with pytest.raises(_Started):
        metadata.measure(ctx, _Server(), "create_remove", clients, 100, 1.0, "tcp")
    assert started and all(argv[:3] == ["chrt", "--batch", "0"] and "tools.dev.loadgen" in argv
                           for argv in started), started
