"""The soak (tools/dev/soak.py) in short, for CI: 16 clients, UDP then TCP, a
few seconds each, against `nfsp up --iods 4` in a namespace of its own.

Asserted: every reply checked and none failed, the files intact, no data
leaked on the iods, no daemon restarted or logged an error, and no fd leak
in nfspd, the iods or unlinkd once the clients are gone. RSS is only checked
to be reported: a short run says nothing about memory staying flat (the
10-minute run does: `python3 -m tools.dev.soak --out DIR`)."""

import json
import os
import socket
import subprocess
import sys

import pytest

from tools.dev import netns
from tools.dev import REPO
from tools.dev import soak

DAEMONS = {"nfspd", "unlinkd", "iod0", "iod1", "iod2", "iod3"}
MIXED_CALLS = {"read", "write", "getattr", "lookup", "create", "remove", "readdirplus"}


# -- pure pieces -------------------------------------------------------------------


def test_fd_table_tells_sockets_pipes_and_deleted_files_apart(tmp_path):
    before = soak.fd_table(os.getpid())
    a, b = socket.socketpair()
    r, w = os.pipe()
    path = tmp_path / "gone"
    f = open(path, "wb")
    os.unlink(path)
    try:
        now = soak.fd_table(os.getpid())
        assert now["other"].get("socket/unix", 0) == before["other"].get("socket/unix", 0) + 2
        assert now["other"].get("pipe", 0) == before["other"].get("pipe", 0) + 2
        # (pytest's own capture files are deleted files too: O_TMPFILE)
        assert set(now["deleted"]) - set(before["deleted"]) == {f"{path} (deleted)"}
        me = {"x": before}
        leaks = soak.fd_leaks(me, {"x": now})["x"]
        assert "socket/unix" in leaks and "pipe" in leaks and "deleted" in leaks
        assert soak.fd_leaks(me, {}) == {"x": "not running"}
    finally:
        for s in (a, b):
            s.close()
        os.close(r)
        os.close(w)
        f.close()
    assert soak.fd_leaks({"x": before}, {"x": soak.fd_table(os.getpid())}) == {}


def test_cached_files_are_not_leaks_but_a_file_opened_twice_is(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    before = soak.fd_table(os.getpid())
    one = open(path, "rb")
    try:
        cached = soak.fd_table(os.getpid())
        assert soak.fd_leaks({"x": before}, {"x": cached}) == {}   # a new file: a cache may
        two = open(path, "rb")
        try:
            leaks = soak.fd_leaks({"x": cached}, {"x": soak.fd_table(os.getpid())})
            assert "files held twice" in leaks["x"]
        finally:
            two.close()
    finally:
        one.close()


def _samples(values_kib, step=5.0, pid=1):
    return [{"t": i * step, "procs": {"d": {"rss_kib": v, "pid": pid}}}
            for i, v in enumerate(values_kib)]


def test_rss_growth_is_judged_against_both_bounds():
    mib = 1024
    # 100 MiB growing by 2 MiB a sample: from the median of the first three
    # (102) to that of the last three (118), 16 MiB and 16%, over both bounds.
    grown = [100 * mib + 2 * i * mib for i in range(11)]
    f = soak.rss_figures(_samples(grown), 0, 50, ["d"], 8, 5)["d"]
    assert not f["ok"] and f["growth_mib"] == 16.0 and f["slope_mib_per_min"] == 24.0
    # 300 MiB growing by 9 MiB: over 8 MiB but under 5%.
    big = [300 * mib] * 5 + [309 * mib] * 5
    assert soak.rss_figures(_samples(big), 0, 45, ["d"], 8, 5)["d"]["ok"]
    # Outside [start, end] does not count; too few samples is a failure, said.
    few = soak.rss_figures(_samples(grown), 0, 10, ["d"], 8, 5)["d"]
    assert not few["ok"] and "3 samples" in few["why"]
    # A restarted process starts from scratch: only the last one is judged.
    restarted = _samples([500 * mib] * 6) + [
        dict(s, t=s["t"] + 30) for s in _samples([50 * mib] * 6, pid=2)]
    f = soak.rss_figures(restarted, 0, 60, ["d"], 8, 5)["d"]
    assert f["ok"] and f["first_mib"] == 50 and f["processes"] == 2


# -- the real soak, short -----------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if not netns.available():
        pytest.skip("needs root with unshare and nsenter (network namespaces)")
    out = tmp_path_factory.mktemp("soak") / "out"
    argv = [sys.executable, "-m", "tools.dev.soak", "--minutes", "0.2", "--warmup", "3",
            "--clients", "16", "--iods", "4", "--proto", "both", "--interval", "1",
            "--file-size", "1M", "--dir-entries", "200", "--out", str(out)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO,
                       env=dict(os.environ, PYTHONPATH=REPO))
    assert p.returncode in (0, 1), f"the soak could not run:\n{p.stdout}\n{p.stderr}"
    with open(out / "soak.json") as f:
        result = json.load(f)
    return p, result, (out / "soak.txt").read_text()


def verdict(result, name):
    failed = {r["proto"]: r["verdicts"][name]["detail"] for r in result["phases"]
              if not r["verdicts"][name]["ok"]}
    return failed


@pytest.mark.netns
def test_every_reply_is_checked_and_none_fails(run):
    _, result, text = run
    assert [r["proto"] for r in result["phases"]] == ["udp", "tcp"]
    assert verdict(result, "zero_errors") == {}, text
    for r in result["phases"]:
        load = r["load"]
        assert load["clients"] == 16 and load["error_count"] == 0, load["error_samples"]
        assert MIXED_CALLS <= set(load["per_op"]), load["per_op"]
        # Every call loadgen counts is one whose reply passed its checks.
        assert load["calls"] == sum(v["count"] for op, v in load["per_op"].items()
                                    if op != "create_remove") > 0
        assert load["bytes_read"] > 0 and load["bytes_written"] > 0
        assert r["warmup_round"]["error_count"] == 0


@pytest.mark.netns
def test_no_fd_leak_in_any_daemon_once_the_clients_are_gone(run):
    _, result, text = run
    assert verdict(result, "no_fd_leak") == {}, text
    for r in result["phases"]:
        assert set(r["fds_reference"]) == set(r["fds_after"]) == DAEMONS
        # The TCP clients' connections were there, and are gone.
        if r["proto"] == "tcp":
            assert r["fds_peak"]["nfspd"] >= r["fds_reference"]["nfspd"]["fds"] + 16
        for role, table in r["fds_after"].items():
            assert len(table["deleted"]) <= len(r["fds_reference"][role]["deleted"]), role


@pytest.mark.netns
def test_the_files_are_intact_and_no_data_leaked(run):
    _, result, text = run
    assert verdict(result, "data_intact") == {}, text
    assert verdict(result, "no_data_leak") == {}, text
    for r in result["phases"]:
        assert r["data"]["files"] == 17 and r["data"]["bytes"] >= 1 << 20


@pytest.mark.netns
def test_daemons_stay_up_log_no_error_and_stop_cleanly(run):
    _, result, text = run
    assert verdict(result, "daemons_healthy") == {}, text
    assert result["stop"] == {"status": 0, "ok": True}


@pytest.mark.netns
def test_rss_is_sampled_and_reported(run):
    _, result, text = run
    for r in result["phases"]:
        assert set(r["rss"]) == DAEMONS
        for role, f in r["rss"].items():
            if role == "unlinkd" and "restarted" in f.get("why", ""):
                continue   # its own failure, said by the daemons_healthy verdict
            assert "first_mib" in f, (role, f)
            assert f["first_mib"] > 5 and f["last_mib"] > 5, (role, f)
            assert len(f["curve_s_mib"]) >= 2
        assert "rss_flat" in r["verdicts"]     # judged, but not asserted on a short run
    assert text.count(" RSS ") >= 2 * len(DAEMONS)


@pytest.mark.netns
def test_exit_status_says_whether_every_criterion_passed(run):
    p, result, text = run
    assert p.returncode == (0 if result["ok"] else 1)
    assert text.strip().endswith("PASS" if result["ok"] else "FAIL")
    assert text in p.stdout
