"""`nfsp status`: a real cluster (iod processes and nfspd) in a private network
namespace, asked through nfspd's admin socket by the real command."""

import json
import os
import pwd
import shutil
import signal
import socket
import stat
import sys
import tempfile
import urllib.error
import urllib.request

import pytest
import trio

from common import nfs3
from common.runtime import purgejournal
from nfspd import admin
from nfspd.fs.journal import directory_fsync_commits_all_at
from tools import status as status_tool
from tools.dev import daemon_python, loopfs
from tools.dev.cluster import Cluster
from tools.dev.netns import wait_until
from tools.dev.nfs4client import Nfs4Client

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_status(c, *args, state_dir=None):
    """(exit status, stdout, stderr) of `nfsp status` run inside the namespace."""
    argv = [sys.executable, "-m", "tools.status",
            "--state-dir", state_dir or c.nfspd.state] + list(args)
    r = c.ns.run(argv, timeout=30, env=dict(os.environ, PYTHONPATH=REPO), cwd="/")
    return r.returncode, r.stdout, r.stderr


def probe_as(user, path):
    """What an unprivileged user gets from the admin socket: a forked child
    drops to ``user`` and tries (the interpreter itself may not be executable
    by that user, so no exec): EACCES, CLOSED (no answer) or ANSWERED."""
    pw = pwd.getpwnam(user)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        result = b"ERROR"
        try:
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            try:
                s.connect(path)
            except PermissionError:
                result = b"EACCES"
            else:
                try:
                    s.sendall(b'{"command": "status"}\n')
                    result = b"ANSWERED" if s.recv(100) else b"CLOSED"
                except (ConnectionResetError, BrokenPipeError):
                    result = b"CLOSED"
        except BaseException as e:
            result = repr(e).encode()
        finally:
            os.write(w, result)
            os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as f:
            return f.read().decode()
    finally:
        os.waitpid(pid, 0)


def status_json(c, **kw):
    code, out, err = run_status(c, "--json", **kw)
    assert code in (0, 2), f"nfsp status failed ({code}): {err}"
    return code, json.loads(out)


def test_status_reports_iods_and_a_killed_one_down(cluster):
    c = cluster(n_iods=3)
    seen = {}

    def all_up():  # the links connect right after nfspd answers: wait for that state
        seen["code"], seen["st"] = status_json(c)
        return seen["code"] == 0
    wait_until(all_up, 15, interval=0.2, what="every iod reported up")
    code, st = seen["code"], seen["st"]
    assert code == 0
    assert [i["address"] for i in st["iods"]] == [f"127.0.0.1:{iod.port}" for iod in c.iods]
    assert all(i["up"] and i["state"] == "up" for i in st["iods"]), st["iods"]
    # Each iod's data store id (common/runtime/datastore.py), none refused (common/runtime/iodstores.py).
    stores = [i["store"] for i in st["iods"]]
    assert all(len(bytes.fromhex(s)) == 16 for s in stores) and len(set(stores)) == 3
    assert all(i["wrong_store"] is None for i in st["iods"])
    # pNFS on by default, each iod's data server on its port + 1000.
    assert st["pnfs"] and [i["ds_port"] for i in st["iods"]] == [iod.port + 1000
                                                                for iod in c.iods]
    for i in st["iods"]:
        assert i["total"] > 0 and 0 <= i["free"] <= i["total"]
    assert st["exports"] == [os.path.abspath(c.export)]
    assert st["python"]["executable"] == daemon_python()
    assert st["purges"]["mode"] == "journal"
    # One commit for removals and records only with the journal on the
    # export's ext3/ext4 with a journal (nfspd/fs/commit.py).
    journal = st["purges"]["journal"]
    assert st["purges"]["with_removals"] is (
        directory_fsync_commits_all_at(journal)
        and os.stat(journal).st_dev == os.stat(c.export).st_dev)
    assert st["uptime"] >= 0 and st["version"]

    client, root = c.connect(vers=3, transport="tcp")
    client.write(client.create(root, b"doomed"), 0, b"x")  # (a file with data: purged)
    os.kill(c.iods[1].pid, signal.SIGKILL)
    last = {}

    def iod1_down():
        last["code"], last["st"] = status_json(c)
        return not last["st"]["iods"][1]["up"]
    wait_until(iod1_down, 10, interval=0.2, what="iod 1 reported down")
    st = last["st"]
    assert st["iods"][1]["state"] == "down"
    assert [i["up"] for i in st["iods"]] == [True, False, True]
    assert last["code"] == 2   # scripts can tell from the exit status alone
    # A purge journaled while iod 1 is down waits for it: pending, not lost.
    client.ok(nfs3.NFSPROC3.REMOVE, nfs3.REMOVE3args(nfs3.diropargs3(root, b"doomed")))
    _, st = status_json(c)
    assert st["purges"]["appended"] == 1
    assert st["purges"]["iods"][f"127.0.0.1:{c.iods[1].port}"]["pending"] == 1
    assert st["purges"]["pending"] == 1
    code, out, _ = run_status(c)
    assert code == 2 and "2/3 up" in out and "down" in out


def test_nfspd_commits_purge_records_with_removals_where_its_state_shares_the_exports_ext4(
        tmp_path, request):
    # nfspd's state directory (the purge journal) and its export on one ext4
    # with its journal: the journal is appended to (nfspd/purgequeue.py),
    # status says so, and REMOVEs still journal their purges.
    with loopfs.ext4(str(tmp_path), size="128M") as mnt:
        ns = request.getfixturevalue("ns")  # after the mount: its mount table is a copy
        c = Cluster(ns, os.path.join(mnt, "c"), n_iods=1)
        try:
            c.start()
            _, st = status_json(c)
            assert st["purges"]["with_removals"] is True
            client, root = c.connect(vers=3, transport="tcp")
            for i in range(3):
                client.write(client.create(root, b"f%d" % i), 0, b"x")  # (data: purged)
                client.ok(nfs3.NFSPROC3.REMOVE, nfs3.REMOVE3args(nfs3.diropargs3(root, b"f%d" % i)))
            _, st = status_json(c)
            assert st["purges"]["appended"] == 3
            (_, segment), = purgejournal.list_segments(st["purges"]["journal"])
            assert os.path.getsize(segment) == 3 * purgejournal.RECORD.size  # grown, not made full
            code, out, _ = run_status(c)
            assert "(journal, one commit with the removals, 3 appended" in out
        finally:
            c.stop()


def test_status_shows_mounts_rtt_and_cache_counters(cluster):
    c = cluster(n_iods=2)
    client, root = c.connect(vers=3, transport="tcp")
    fh = client.create(root, b"f")
    client.write(fh, 0, b"x" * 100000)
    assert client.read(fh, 0, 100000)[0] == b"x" * 100000
    for _ in range(5):
        client.getattr(fh)
    # A listing read three times: from the second on, from lookups kept
    # (the first read of the directory after its change moves its atime).
    for _ in range(3):
        client.ok(nfs3.NFSPROC3.READDIRPLUS, nfs3.READDIRPLUS3args(root, 0, bytes(8), 4096, 32768))
    # A heartbeat has measured each link by now: the cluster is up and the
    # first PONG brought each iod up.
    code, st = status_json(c)
    assert any(cl["ip"] == "127.0.0.1" and cl["path"] == os.path.abspath(c.export)
               for cl in st["clients"]), st["clients"]
    assert all(i["rtt_ms"] is not None and i["rtt_ms"] >= 0 for i in st["iods"])
    assert st["counters"]["nfs"]["calls"] >= 7
    assert st["counters"]["mount"]["calls"] >= 1
    assert st["metafile_cache"]["lookups"] > 0
    assert st["metafile_cache"]["hits"] > 0
    # ".", ".." and f each time; the last time (at least) all three kept.
    assert st["listing_cache"]["lookups"] == 9 and st["listing_cache"]["hits"] >= 3
    assert st["drc"]["lookups"] >= 1          # CREATE is non-idempotent
    # The export is sync: the CREATE's reply waited for a flush.
    gc = st["group_commit"]
    assert gc["flushes"] >= 1 and gc["waits"] >= 1 and gc["seconds"] > 0
    # The event loop's thread answered all that: time on a core since start;
    # shares of its last seconds (a few milliseconds of calls may round to 0).
    loop = st["loop"]
    assert loop["on_cpu_s"] > 0 and loop["waiting_s"] >= 0
    assert 0 < loop["recent_s"] <= 30  # (its last LOOP_WINDOW seconds at most, and a late wake-up)
    assert 0 <= loop["recent"]["on_cpu"] <= 1.05 and 0 <= loop["recent"]["waiting_for_cpu"] <= 1.05
    # Requests and bytes each iod served, counted at the metaserver's links:
    # the 100000 bytes went out in 64 KiB stripes over both iods, and back.
    iods = st["iods"]
    assert sum(i["written_bytes"] for i in iods) == 100000
    assert sum(i["read_bytes"] for i in iods) == 100000
    assert all(i["requests"] >= 2 and i["bytes_out"] > i["written_bytes"] and
               i["bytes_in"] > 0 for i in iods), iods
    code, out, _ = run_status(c)
    assert "clients: " in out and os.path.abspath(c.export) in out
    assert "REQUESTS  READ" in out and "WRITTEN" in out
    assert "group commit (sync exports): " in out
    assert "event loop (last " in out and "(it answers every call)" in out


def test_status_shows_nfsv4_clients_with_their_state(cluster):
    c = cluster(n_iods=1)
    v4 = c.ns.inside(Nfs4Client, "127.0.0.1").mount()
    dirfh = v4.lookup_path(c.export)
    v4.open(dirfh, b"held")
    _, st = status_json(c)
    [mine] = st["v4_clients"]
    assert mine["confirmed"] and mine["sessions"] == 1 and mine["states"] == 1
    assert mine["addresses"] == ["127.0.0.1"] and mine["principal"] == "sys:0"
    assert 0 < mine["lease_left"] <= 90
    _, out, _ = run_status(c)
    assert "NFSv4.1 clients: 1" in out and mine["clientid"] in out


@pytest.fixture
def open_state_dir():
    """A state directory every user may traverse, so that only the socket's own
    mode and nfspd's peer check stand between a non-root user and the socket."""
    d = tempfile.mkdtemp(prefix="nfsp-status-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_admin_socket_is_root_only(cluster, open_state_dir):
    state = os.path.join(open_state_dir, "state")
    # click keeps the last --state-dir: the cluster's own comes first.
    c = cluster(n_iods=1, nfspd_args=["--state-dir", state])
    os.chmod(state, 0o755)
    sock = os.path.join(state, "admin.sock")
    st = os.stat(sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    code, _, _ = run_status(c, "--json", state_dir=state)
    assert code == 0

    assert probe_as("nobody", sock) == "EACCES"

    # With the mode loosened by hand, nfspd still answers nobody but root.
    os.chmod(sock, 0o666)
    assert probe_as("nobody", sock) == "CLOSED"
    assert f"refused a connection from uid {pwd.getpwnam('nobody').pw_uid}" in c.nfspd_log()


def test_render_is_a_compact_table():
    st = {"version": "0.1.0", "pid": 1, "uptime": 3723.5, "layout_gen": 1, "exports": ["/e"],
          "iods": [{"index": 0, "address": "10.0.0.1:2050", "state": "up", "up": True,
                    "rtt_ms": 0.25, "free": 3 << 30, "total": 4 << 30, "restarts": 0,
                    "timeouts": 0, "purge_queued": 0, "requests": 1234,
                    "read_bytes": 5 << 20, "written_bytes": 1536, "bytes_out": 9,
                    "bytes_in": 9, "clock_offset": 0.001,
                    "store": "0123456789abcdef0123456789abcdef", "wrong_store": None},
                   {"index": 1, "address": "10.0.0.2:2050", "state": "down", "up": False,
                    "rtt_ms": None, "free": None, "total": None, "restarts": 1,
                    "timeouts": 2, "purge_queued": 0, "requests": 0, "read_bytes": 0,
                    "written_bytes": 0, "bytes_out": 0, "bytes_in": 0,
                    "clock_offset": None}],  # from an nfspd before store ids: no such fields
          "purges": {"mode": "journal", "appended": 7, "kept": 7, "pending": 3,
                     "iods": {"10.0.0.1:2050": {"pending": 0},
                              "10.0.0.2:2050": {"pending": 3}}},
          "drc": {"hits": 1, "lookups": 4, "rate": 0.25, "entries": 4},
          "metafile_cache": {"hits": 0, "lookups": 0, "rate": None},
          "clients": [{"host": "n1", "ip": "10.0.1.1", "path": "/e"}],
          "v4_clients": [{"clientid": "5f00000100000002", "owner": "Linux NFSv4.1 n2",
                          "principal": "sys:0", "confirmed": True, "addresses": ["10.0.1.2"],
                          "sessions": 1, "states": 3, "layouts": 2, "idle": 1.5,
                          "lease_left": 88.5}],
          "counters": {"nfs": {"calls": 9, "dropped": 0, "garbage_args": 0, "auth_errors": 0,
                               "system_err": 0},
                       "mount": {"calls": 1, "dropped": 0, "garbage_args": 0,
                                 "auth_errors": 0, "system_err": 0},
                       "data": {}}}
    out = status_tool.render(st)
    assert "up 01:02:03" in out and "iods: 1/2 up" in out
    assert "Python" not in out  # an nfspd from before it says nothing of its interpreter
    on = status_tool.render(dict(st, python={"version": "3.11.2", "executable": "/usr/bin/python3"}))
    assert "(pid 1, Python 3.11.2 at /usr/bin/python3), up 01:02:03" in on
    assert "group commit" not in out  # an nfspd from before it says nothing of it
    assert "event loop" not in out   # nor of its event loop
    looped = status_tool.render(dict(st, loop={"on_cpu_s": 12.5, "waiting_s": 3.0,
                                               "recent_s": 10.2, "recent": {
                                                   "on_cpu": 0.701, "waiting_for_cpu": 0.208}}))
    assert ("event loop (last 10 s): on a core 70%, waiting for one 21% (it answers every "
            "call)") in looped
    out = status_tool.render(dict(st, group_commit={"flushes": 40, "waits": 110,
                                                    "seconds": 0.05}))
    assert "group commit (sync exports): 40 flushes answered 110 calls, 2.8 per flush, " \
        "1.25 ms each" in out
    assert "10.0.0.2:2050  down   -" in out
    assert "3.0 GiB / 4.0 GiB" in out
    assert "1234      5.0 MiB  1.5 KiB" in out
    assert "purges pending: 3" in out and "10.0.0.2:2050 3" in out and "25.0% of 4" in out
    assert "removals" not in out  # an nfspd from before it says nothing of it
    for shared, said in ((True, "(journal, one commit with the removals, 7 appended"),
                         (False, "(journal, flushed after the removals, 7 appended")):
        assert said in status_tool.render(
            dict(st, purges=dict(st["purges"], with_removals=shared)))
    assert "n1 (10.0.1.1) /e" in out
    assert "NFSv4.1 clients: 1" in out
    assert "5f00000100000002  10.0.1.2  Linux NFSv4.1 n2  1         3            2" in out
    assert "01234567" in out and "wrong store" not in out
    assert "pNFS" not in out        # an nfspd from before pNFS says nothing of it
    out = status_tool.render(dict(st, pnfs=True, iods=[dict(st["iods"][0], ds_port=3050),
                                                       st["iods"][1]]))
    assert "DS PORT" in out and "01234567  3050" in out
    assert "pNFS: on: NFSv4.1 clients read and write the iods' data servers" in out
    refused = dict(st["iods"][1], state="wrong store", store="ffff" * 8,
                   wrong_store="serves data store ffff... where it had store 0123...")
    out = status_tool.render(dict(st, iods=[st["iods"][0], refused]))
    assert "10.0.0.2:2050  wrong store" in out
    assert ("iod 10.0.0.2:2050: wrong store: serves data store ffff... where it had store "
            "0123...; restart it on its own disk, or `nfsp accept-iod-store 10.0.0.2:2050`") in out


def test_admin_protocol_bounds_and_errors(tmp_path):
    """The admin server itself: a deep state directory (longer than
    sockaddr_un allows), bad requests answered with one clear line."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = str(deep / admin.SOCKET_NAME)

    def raw(data, expect_close=False):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, admin._short(path) as p:
            s.settimeout(10)
            s.connect(p)
            s.sendall(data)
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
            # b"" once the server closed the connection
            rest = None
            if expect_close:
                try:
                    rest = s.recv(10)
                except ConnectionResetError:   # closed with our excess unread
                    rest = b""
            return json.loads(buf), rest

    results = {}

    async def main():
        async with trio.open_nursery() as n:
            await n.start(admin.AdminServer(path, {"status": lambda req: {"n": 1}}).run)
            results["ok"] = await trio.to_thread.run_sync(admin.request, path)
            results["unknown"] = await trio.to_thread.run_sync(admin.request, path, "nope")
            results["garbage"] = await trio.to_thread.run_sync(raw, b"{not json\n")
            results["long"] = await trio.to_thread.run_sync(
                raw, b"x" * (admin.MAX_REQUEST + 10), True)
            n.cancel_scope.cancel()
    trio.run(main)
    assert results["ok"] == {"ok": True, "status": {"n": 1}}
    assert results["unknown"]["ok"] is False and "unknown command" in results["unknown"]["error"]
    assert results["garbage"][0]["ok"] is False and "not JSON" in results["garbage"][0]["error"]
    reply, rest = results["long"]
    assert reply["ok"] is False and "longer than" in reply["error"] and rest == b""
    assert not os.path.exists(path)   # removed at exit


def test_metrics_endpoint_serves_the_same_counters(cluster):
    c = cluster(n_iods=2, nfspd_args=["--metrics", "127.0.0.1:9109"])

    def get(path):
        # No proxy from the environment: traffic stays on the namespace's loopback.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:9109{path}", timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    status, ctype, text = c.ns.inside(get, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    for iod in c.iods:
        assert f'nfsp_iod_up{{iod="127.0.0.1:{iod.port}"}} 1' in text
    assert "# TYPE nfsp_rpc_total counter" in text
    assert 'nfsp_rpc_total{program="nfs",event="calls"}' in text
    with pytest.raises(urllib.error.HTTPError) as e:
        c.ns.inside(get, "/other")
    assert e.value.code == 404
    _, st = status_json(c)
    assert f'nfsp_iod_free_bytes{{iod="127.0.0.1:{c.iods[0].port}"}} ' in text
    for name in ("requests", "read_bytes", "written_bytes"):
        assert f'nfsp_iod_{name}_total{{iod="127.0.0.1:{c.iods[0].port}"}} ' in text
    assert f'nfsp_iod_frame_bytes_total{{iod="127.0.0.1:{c.iods[1].port}",direction="in"}} ' \
        in text
    assert st["iods"][0]["total"] > 0
    # Each iod's data store (common/runtime/iodstores.py): none refused.
    for iod in c.iods:
        assert f'nfsp_iod_wrong_store{{iod="127.0.0.1:{iod.port}"}} 0' in text
    assert "# TYPE nfsp_iod_store_info gauge" in text
    assert "# TYPE nfsp_group_commit_flushes_total counter" in text
    assert 'nfsp_group_commit_seconds_total{process="nfspd"} ' in text
    assert 'process="workers"' not in text  # none without --workers
    assert "# TYPE nfsp_event_loop_cpu_seconds_total counter" in text
    assert "\nnfsp_event_loop_waiting_seconds_total " in text
