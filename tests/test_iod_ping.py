"""tools/iod_ping against real iods in a private namespace."""

import os
import sys

import pytest

from tools.dev import REPO
from tools.dev.daemons import make_key

pytestmark = pytest.mark.netns


def iod_ping(ns, *args, key):
    return ns.run([sys.executable, "-m", "tools.iod_ping", "--key", key, *args],
                  env=dict(os.environ, PYTHONPATH=REPO), timeout=60)


def test_every_iod_answers(iods, ns, tmp_path):
    a, b = iods(), iods()
    conf = tmp_path / "iods.conf"
    conf.write_text(f"# the cluster\n127.0.0.1:{a.port}\n")
    r = iod_ping(ns, "--iods", str(conf), f"127.0.0.1:{b.port}", key=a.key_path)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]
    for line in lines:
        assert "rtt" in line and "version 0.1" in line and "free" in line


def test_exit_status_1_when_one_does_not_answer(iods, ns):
    a = iods()
    r = iod_ping(ns, f"127.0.0.1:{a.port}", "127.0.0.1:2999", "--timeout", "0.5", key=a.key_path)
    assert r.returncode == 1
    assert "127.0.0.1:2999  no answer within 0.5 s" in r.stdout
    assert f"127.0.0.1:{a.port}  rtt" in r.stdout


def test_a_ping_under_another_key_goes_unanswered(iods, ns, tmp_path):
    a = iods()
    other = str(tmp_path / "other.key")
    make_key(other)
    r = iod_ping(ns, f"127.0.0.1:{a.port}", "--timeout", "0.5", key=other)
    assert r.returncode == 1 and "no answer" in r.stdout
    # the stamped PING and the unstamped one
    assert a.counters_now(want={"dropped_bad_mac": 2})


def test_spoofed_pong_arrives_from_the_asked_source(iods, ns):
    a, b = iods(), iods()
    r = iod_ping(ns, f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}",
                 "--spoof-from", "127.0.0.9:2049", key=a.key_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("spoofed PONG from 127.0.0.9:2049: arrived") == 2


def test_spoof_that_cannot_be_done_fails(iods, ns):
    # 0.0.0.0 would be replaced by the kernel after the UDP checksum was
    # computed over it: the iod refuses, iod_ping says so and fails.
    a = iods()
    r = iod_ping(ns, f"127.0.0.1:{a.port}", "--spoof-from", "0.0.0.0", key=a.key_path)
    assert r.returncode == 1
    assert "spoofed PONG from 0.0.0.0:2049: refused (error 22" in r.stdout
    assert f"127.0.0.1:{a.port}  rtt" in r.stdout      # the plain PING was answered


def test_usage_errors(ns, tmp_path):
    key = str(tmp_path / "k")
    make_key(key)
    assert iod_ping(ns, key=key).returncode == 2
    bad = tmp_path / "iods.conf"
    bad.write_text("node1:99999\n")
    r = iod_ping(ns, "--iods", str(bad), key=key)
    assert r.returncode == 2 and "iods.conf:1" in r.stderr
    assert iod_ping(ns, "127.0.0.1", "--spoof-from", "nohost", key=key).returncode == 2
