"""tools/embedded.py: how the admin commands find the cluster `nfsp up` runs
(its record in /run/nfsp), and which cluster they pick."""

import json
import os
import subprocess

import click
import pytest

from tools import embedded


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """A /run/nfsp of our own, and a host without a system cluster."""
    monkeypatch.setattr(embedded, "RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(embedded, "SYSTEM", embedded.Layout(
        exports=str(tmp_path / "etc" / "exports"), iods_conf=str(tmp_path / "etc" / "iods.conf"),
        key=str(tmp_path / "etc" / "cluster.key"), state=str(tmp_path / "var")))
    return tmp_path / "run"


def test_a_running_cluster_is_found_until_it_is_forgotten(run_dir, tmp_path):
    name = embedded.record(str(tmp_path / "data"), "127.0.0.1", 2049)
    assert embedded.running() == [embedded.Running(str(tmp_path / "data"), os.getpid(),
                                                    "127.0.0.1", 2049)]
    embedded.forget(name)
    assert embedded.running() == []


def test_records_of_killed_clusters_are_stale(run_dir, tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    run_dir.mkdir()
    for pid, start in ((gone.pid, 1),
                       # our pid, but another start time: a later process given the same pid
                       (os.getpid(), embedded._start_time(os.getpid()) - 1)):
        (run_dir / f"up-{pid}.json").write_text(json.dumps(
            {"directory": str(tmp_path), "pid": pid, "start_time": start,
             "bind": "127.0.0.1", "port": 2049}))
    (run_dir / "up-1.json").write_text("{half written")
    assert embedded.running() == []


def test_the_cluster_picked_explicit_then_system_then_the_running_one(run_dir, tmp_path):
    assert embedded.choose(None) == (embedded.SYSTEM, None)   # nothing anywhere
    embedded.record(str(tmp_path / "a"), "127.0.0.1", 2049)
    cluster, note = embedded.choose(None)
    assert cluster.state == str(tmp_path / "a" / "state")
    assert note == f"using the cluster `nfsp up` runs in {tmp_path / 'a'} (pid {os.getpid()})"
    assert embedded.choose(str(tmp_path / "b"))[0].key == str(tmp_path / "b" / "cluster.key")
    os.makedirs(os.path.dirname(embedded.SYSTEM.exports))
    open(embedded.SYSTEM.exports, "w").close()
    assert embedded.choose(None) == (embedded.SYSTEM, None)
    assert embedded.choose(str(tmp_path / "b"))[0].path == str(tmp_path / "b")


def test_several_running_clusters_must_be_named(run_dir, tmp_path):
    first = embedded.record(str(tmp_path / "a"), "127.0.0.1", 2049)
    # A second `nfsp up` (another pid: the record is renamed to one).
    with open(first) as f:
        other = dict(json.load(f), directory=str(tmp_path / "b"))
    (run_dir / "up-other.json").write_text(json.dumps(other))
    with pytest.raises(click.UsageError, match="several `nfsp up` are running .*--dir DIR"):
        embedded.choose(None)
