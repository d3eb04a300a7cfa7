"""The metadata benchmark's load generators stand for clients on other
machines: they run under SCHED_BATCH, which keeps their share of the CPU but
never lets their wake-ups preempt the server they share 2 cores with. Each
nfspd row says how nfspd's event loop spent the row: on a core, waiting for
one, or waiting for calls; and a sync export's, what its flushes did."""

import os
import subprocess
import sys
import time

import pytest

from tools.dev.benchmarks import harness, links, metadata


def test_a_remote_client_runs_under_sched_batch():
    argv = harness.as_remote_client(
        [sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    assert int(out) == os.SCHED_BATCH


class _Started(Exception):
    pass


class _Server:
    server, export, pid, label, kind = "127.0.0.1", "/export", os.getpid(), "nfsp", "nfsp"

    def __init__(self):
        self.readings = 0

    def client_prefix(self):
        return lambda argv: argv

    def group_commit(self):
        """As nfspd's counters would grow: 500 flushes of 5 calls, 0.4 s, per reading."""
        self.readings += 1
        return {"flushes": 500 * self.readings, "waits": 2500 * self.readings,
                "seconds": 0.4 * self.readings}


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
    # As an ordinary user, as a build is run (a server switches to its
    # credentials for every change; as root it switches nothing).
    assert all(_option(argv, "--uid") == _option(argv, "--gid") == str(metadata.USER) != "0"
               for argv in started), started


def _option(argv, name):
    return argv[argv.index(name) + 1] if name in argv else None


@pytest.mark.skipif(os.geteuid() != 0, reason="gives the export's root to the user: needs root")
def test_the_tree_is_made_by_the_user_the_rows_act_as(monkeypatch, tmp_path):
    started = []

    def run_loadgens(specs, **_):
        started.extend(prefix(argv) for prefix, argv in specs)
        return [{}]

    monkeypatch.setattr(metadata, "run_loadgens", run_loadgens)
    server = _Server()
    server.export = str(tmp_path / "export")
    os.mkdir(server.export)
    metadata.prepare(harness.Context(str(tmp_path / "out"), harness.Params()), server, 100, "t")
    st = os.stat(server.export)
    assert (st.st_uid, st.st_gid) == (metadata.USER, metadata.USER)
    assert [(_option(a, "--uid"), _option(a, "--gid")) for a in started] == [
        (str(metadata.USER), str(metadata.USER))]


def test_a_threads_share_of_a_window_comes_from_its_schedstat_samples():
    samples = [(10.0, 0, 0), (11.0, 600_000_000, 100_000_000), (12.0, 900_000_000, 300_000_000),
               (13.0, 900_000_000, 300_000_000)]
    assert links.thread_share(samples, 10.0, 12.0) == {"on_cpu": 0.45, "waiting_for_cpu": 0.15}
    # A window between two samples takes the nearest ones around it.
    assert links.thread_share(samples, 12.2, 12.8) == {"on_cpu": 0.0, "waiting_for_cpu": 0.0}
    assert links.thread_share(samples[:1], 10.0, 12.0) is None


def _report(start, end):
    return {"start": start, "end": end, "bytes_read": 0, "bytes_written": 0, "errors": {},
            "ops": 10, "calls": 20, "error_samples": [], "retransmits": 0,
            "latency_ms": {"p50": 1.0, "p99": 2.0}, "cpu_util": 0.5, "MBps": 0.0, "entries": 0,
            "per_op": {"create": {"count": 10}, "remove": {"count": 10},
                       "create_remove": {"count": 10, "p50_ms": 1.0, "p99_ms": 2.0}}}


@pytest.mark.parametrize("kind", ["nfsp", "ganesha"])
def test_an_nfspd_row_says_how_its_event_loop_spent_the_row(monkeypatch, tmp_path, kind):
    def run_loadgens(specs, **_):
        start = time.time()
        time.sleep(0.3)  # (a sample or two of the sampler inside)
        return [_report(start, time.time()) for _ in specs]

    monkeypatch.setattr(metadata, "run_loadgens", run_loadgens)
    ctx = harness.Context(str(tmp_path), harness.Params())
    server = _Server()
    server.kind = kind
    row = metadata.measure(ctx, server, "create_remove", 8, 100, 1.0, "tcp")
    if kind == "ganesha":
        assert row["nfspd_loop"] is None and row["group_commit"] is None
        assert server.readings == 0
    else:
        # Read before and after the row: what the flushes did in between.
        assert server.readings == 2
        gc = row["group_commit"]
        assert (gc["flushes"], gc["calls_per_flush"], gc["ms_per_flush"]) == (500, 5.0, 0.8)
        assert 0.4 / 0.5 < gc["flushing"] <= 0.4 / 0.3  # of a row of about 0.3 s
        # This process's main thread stood in for nfspd's: mostly asleep.
        loop = row["nfspd_loop"]
        assert set(loop) == {"on_cpu", "waiting_for_cpu"}
        assert 0 <= loop["on_cpu"] < 0.9 and 0 <= loop["waiting_for_cpu"] <= 1


def _row(server, loop, gc=None):
    return {"server": server, "op": "create_remove", "clients": 8, "proto": "tcp",
            "ops_per_s": 100.0, "per_proc_per_s": {"create": 100.0, "remove": 100.0},
            "entries_per_s": 0.0, "server_cpu_us_per_call": 50.0, "nfspd_loop": loop,
            "group_commit": gc}


def test_a_rows_flushes_are_the_difference_of_two_readings():
    before = {"flushes": 100, "waits": 400, "seconds": 1.0}
    after = {"flushes": 3555, "waits": 19_750, "seconds": 4.0}
    assert metadata.flushes(before, after, 6.0) == {
        "flushes": 3455, "calls_per_flush": 5.6, "ms_per_flush": 0.868, "flushing": 0.5}
    # An async export's row, or one that changes nothing: no flush.
    assert metadata.flushes(before, before, 6.0) == {
        "flushes": 0, "calls_per_flush": None, "ms_per_flush": None, "flushing": 0.0}
    assert metadata.flushes(None, None, 6.0) is None


def test_the_report_gives_a_sync_exports_flushes():
    from tools.dev.benchmarks import report
    gc = {"flushes": 3455, "calls_per_flush": 5.59, "ms_per_flush": 0.861, "flushing": 0.472}
    none = {"flushes": 0, "calls_per_flush": None, "ms_per_flush": None, "flushing": 0.0}
    res = {"dir_entries": 100, "rows": [_row("nfsp", None, gc), _row("nfsp-async", None, none),
                                        _row("ganesha", None)]}
    text = report.metadata_section(res)
    # Only for the operations that flushed.
    line = [ln for ln in text.splitlines() if ln.startswith("| nfspd flush ")]
    assert line == ["| nfspd flush ms / calls per flush / % flushing, create+remove "
                    "| 0.86 / 5.6 / 47 | - | - |"], line
    assert "nfspd flush: what a sync export's replies waited for" in text
    # No sync export, or results from before it was measured: no such line.
    for r in res["rows"]:
        r["group_commit"] = none if r["server"] == "nfsp" else r.pop("group_commit")
    assert "nfspd flush" not in report.metadata_section(res)


def test_the_report_gives_nfspds_loop_beside_its_cpu_per_call():
    from tools.dev.benchmarks import report
    res = {"dir_entries": 100, "rows": [_row("nfsp", {"on_cpu": 0.712, "waiting_for_cpu": 0.15}),
                                        _row("ganesha", None)]}
    line = [ln for ln in report.metadata_section(res).splitlines()
            if ln.startswith("| nfspd loop % on a core / waiting, create+remove")]
    assert line == ["| nfspd loop % on a core / waiting, create+remove | 71 / 15 | - |"], line
    # Results from before it was measured: no such lines.
    for r in res["rows"]:
        del r["nfspd_loop"]
    assert "| nfspd loop" not in report.metadata_section(res)


def test_the_report_gives_how_busy_the_machine_was_for_every_server():
    from tools.dev.benchmarks import report
    rows = [_row("nfsp-async", {"on_cpu": 0.65, "waiting_for_cpu": 0.26}), _row("ganesha", None)]
    rows[0]["machine_busy"], rows[1]["machine_busy"] = 0.862, 0.998
    res = {"dir_entries": 100, "rows": rows}
    text = report.metadata_section(res)
    line = [ln for ln in text.splitlines() if ln.startswith("| machine's CPUs % busy, create+remove")]
    assert line == ["| machine's CPUs % busy, create+remove | 86 | 100 |"], line
    assert "what a server leaves idle while its calls wait is lost to it" in text
    # Results from before it was measured: no such lines.
    for r in rows:
        del r["machine_busy"]
    text = report.metadata_section(res)
    assert "| machine's CPUs" not in text and "what a server leaves idle" not in text


class _Up:
    """A server that notes when it is up and down, in a shared log."""

    def __init__(self, log):
        self.log = log

    def __enter__(self):
        self.log.append(("up", self))
        return self

    def __exit__(self, *exc):
        self.log.append(("down", self))


def _rows_measured(monkeypatch, tmp_path, runner, *extra, warmup=0.0, with_seconds=False):
    """What ``runner`` measures, 1 s a row: (server, op, clients, proto),
    and the seconds with ``with_seconds``; "up" and "down" where a server
    comes up and goes."""
    log = []
    monkeypatch.setattr(metadata, "prepare", lambda *a: None)

    def measure(ctx, srv, op, n, entries, seconds, proto):
        log.append((srv.label, op, n, proto) + ((seconds,) if with_seconds else ()))
        return {"errors": 0}
    monkeypatch.setattr(metadata, "measure", measure)
    ctx = harness.Context(str(tmp_path), harness.Params())
    setups = [(label, lambda: _Up(log)) for label in ("a", "b", "c")]
    runner(ctx, setups, lambda label: str(tmp_path / label), 10, 1.0, warmup, *extra)
    return log


def _warm_up_of(label, seconds):
    return [(label, op, 8, proto, seconds) for op in metadata.OPS for proto in metadata.PROTOS]


def test_every_server_gets_each_rows_load_unrecorded_before_any_row(monkeypatch, tmp_path):
    """nfspd on PyPy is measured warm, as it runs once it has served a while;
    every server alike (module docstring)."""
    log = _rows_measured(monkeypatch, tmp_path, metadata._in_turn, warmup=2.0,
                         with_seconds=True)
    measured = [e for e in log if e[0] in ("a", "b", "c")]
    warm = _warm_up_of("a", 2.0) + _warm_up_of("b", 2.0) + _warm_up_of("c", 2.0)
    assert measured[:len(warm)] == warm
    assert all(e[4] == 1.0 for e in measured[len(warm):])
    assert len(measured) == len(warm) + 3 * len(metadata._rows())


def test_with_no_warm_up_time_the_rows_come_first(monkeypatch, tmp_path):
    log = _rows_measured(monkeypatch, tmp_path, metadata._in_turn, with_seconds=True)
    assert all(e[4] == 1.0 for e in log if e[0] in ("a", "b", "c"))


def test_a_failing_warm_up_stops_the_run(monkeypatch, tmp_path):
    monkeypatch.setattr(metadata, "prepare", lambda *a: None)
    monkeypatch.setattr(metadata, "measure", lambda *a: {"errors": 3, "error_samples": ["x"]})
    ctx = harness.Context(str(tmp_path), harness.Params())
    with pytest.raises(RuntimeError, match="warming up a failed"):
        metadata._in_turn(ctx, [("a", lambda: _Up([]))], lambda label: str(tmp_path / label),
                          10, 1.0, 2.0)


def test_on_a_journalled_ground_each_row_is_measured_for_every_server_in_turn(
        monkeypatch, tmp_path):
    """Ratios compare measurements seconds apart, whatever the machine's
    speed does over the run; no server is always measured right after the
    same other one."""
    log = _rows_measured(monkeypatch, tmp_path, metadata._in_turn)
    ups = [i for i, e in enumerate(log) if e[0] == "up"]
    downs = [i for i, e in enumerate(log) if e[0] == "down"]
    measured = [e for e in log if e[0] in ("a", "b", "c")]
    assert len(ups) == len(downs) == 3 and max(ups) < min(
        i for i, e in enumerate(log) if e[0] in ("a", "b", "c")) and min(downs) == len(log) - 3
    expected = metadata._rows()
    assert len(measured) == 3 * len(expected)
    for i, row in enumerate(expected):
        turn = measured[3 * i:3 * i + 3]
        assert [m[1:] for m in turn] == [row] * 3
        assert sorted(m[0] for m in turn) == ["a", "b", "c"]
        assert turn[0][0] == "abc"[i % 3]


def test_without_a_journal_each_server_runs_alone_after_the_last_ones_removals_settle(
        monkeypatch, tmp_path):
    slept = []
    monkeypatch.setattr(metadata.time, "sleep", slept.append)
    log = _rows_measured(monkeypatch, tmp_path, metadata._one_server_after_another, 30.0)
    labels = [e[0] for e in log if e[0] in ("a", "b", "c")]
    n = len(metadata._rows())
    assert labels == ["a"] * n + ["b"] * n + ["c"] * n
    assert [e[0] for e in log if e[0] in ("up", "down")] == ["up", "down"] * 3
    assert len(slept) == 2 and all(0 < s <= 30.0 for s in slept)


def test_without_a_journal_a_server_warmed_up_waits_for_its_own_removals_too(
        monkeypatch, tmp_path):
    slept = []
    monkeypatch.setattr(metadata.time, "sleep", slept.append)
    log = _rows_measured(monkeypatch, tmp_path, metadata._one_server_after_another, 30.0,
                         warmup=2.0, with_seconds=True)
    a = [e for e in log if e[0] == "a"]
    assert a[:len(_warm_up_of("a", 2.0))] == _warm_up_of("a", 2.0)
    assert len(slept) == 3 and all(0 < s <= 30.0 for s in slept)


def test_the_report_says_the_servers_were_warmed_up_and_how_long():
    from tools.dev.benchmarks import report
    rows = [_row("nfsp-async", None), _row("ganesha", None)]
    said = "got 3 s of each row's load from 8 clients over UDP and TCP, unrecorded"
    assert said in report.metadata_section({"dir_entries": 100, "rows": rows, "warmup_s": 3.0})
    assert "unrecorded" not in report.metadata_section({"dir_entries": 100, "rows": rows})
