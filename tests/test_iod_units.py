"""The iod's building blocks without processes: the bounded work queue and
what the iod added to the DataStore (resumable listing, chown, access by
directory descriptor)."""

import gc
import os
import threading

import pytest

from common.runtime.datastore import DataStore
from iod.workqueue import WorkQueue


def test_queue_is_bounded_by_items():
    q = WorkQueue(max_items=2, max_bytes=1 << 20)
    assert q.put_nowait("a", 1) and q.put_nowait("b", 1)
    assert not q.put_nowait("c", 1)
    assert q.get() == "a"
    assert q.put_nowait("c", 1)
    assert [q.get(), q.get()] == ["b", "c"]


def test_queue_is_bounded_by_bytes_but_takes_one_large_item_alone():
    q = WorkQueue(max_items=100, max_bytes=1000)
    assert q.put_nowait("big", 5000)          # alone: accepted
    assert not q.put_nowait("small", 1)       # over the byte bound now
    assert q.get() == "big"
    assert q.put_nowait("x", 600)
    assert not q.put_nowait("y", 600)
    assert q.put_nowait("z", 400)


def test_put_waits_for_room_and_gives_up_at_its_bound():
    q = WorkQueue(max_items=1, max_bytes=100)
    assert q.put_nowait("a", 1)
    assert not q.put("b", 1, timeout=0.05)     # nobody takes: times out
    result = []
    t = threading.Thread(target=lambda: result.append(q.put("b", 1, timeout=30)))
    t.start()
    assert q.get() == "a"                      # makes room: the waiting put goes in
    t.join(30)
    assert result == [True]
    assert q.get() == "b"


def test_close_wakes_getters_and_refuses_puts():
    q = WorkQueue(max_items=4, max_bytes=100)
    got = []
    threads = [threading.Thread(target=lambda: got.append(q.get())) for _ in range(3)]
    for t in threads:
        t.start()
    q.close()
    for t in threads:
        t.join(30)
    assert got == [None, None, None]
    assert not q.put_nowait("x", 1)
    assert not q.put("x", 1, timeout=1)


@pytest.fixture
def store(tmp_path):
    s = DataStore(str(tmp_path / "store"))
    yield s
    s.close()


def test_list_resumes_after_any_pair(store):
    pairs = {(ino, seed) for ino in (1, 2, 255, 256, 257, 0x10001, 0xFFFF, 1 << 40)
             for seed in (0, 7, 1 << 63)}
    for ino, seed in pairs:
        store.write(ino, seed, 0, b"")
    full = list(store.list())
    assert set(full) == pairs and len(full) == len(pairs)
    for i, pair in enumerate(full):
        assert list(store.list(after=pair)) == full[i + 1:]
    # a cursor that is not (or no longer) stored still resumes in order
    store.purge(*full[5])
    assert list(store.list(after=full[5])) == full[6:]
    assert list(store.list(after=(0, 0))) == full[:5] + full[6:]


def test_list_ignores_foreign_entries(store):
    store.write(3, 4, 0, b"x")
    os.mkdir(os.path.join(store.directory, "lost+found"))
    os.mkdir(os.path.join(store.directory, "zz"))
    open(os.path.join(store.directory, "03", "00", "notes.txt"), "w").close()
    assert list(store.list()) == [(3, 4)]


def test_chown_gives_only_the_store_layout(store, tmp_path):
    store.write(0x102, 9, 0, b"x")
    foreign = os.path.join(store.directory, "lost+found")
    os.mkdir(foreign)
    assert store.chown(65534, 65534) == 4     # the directory, two levels, the datafile
    for path in (store.directory, os.path.join(store.directory, "02"),
                 os.path.join(store.directory, "02", "01"), store.path(0x102, 9)):
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (65534, 65534)
    assert os.stat(foreign).st_uid == 0
    assert store.chown(65534, 65534) == 0     # nothing left to change


def test_store_works_through_its_descriptor_under_a_private_parent(tmp_path):
    """What an iod needs after dropping root: the directory above its store
    is root's alone, the store is its own."""
    parent = tmp_path / "private"
    parent.mkdir(mode=0o700)
    s = DataStore(str(parent / "store"))
    s.chown(65534, 65534)
    result = {}

    def as_nobody():
        # A child process: dropping privileges is per process.
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setgroups([])
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)
                try:
                    os.listdir(str(parent))
                    code = 3                  # the parent must not be readable
                except PermissionError:
                    s.write(7, 1, 4096, b"data", sync=True)
                    assert s.read(7, 1, 4096, 4) == b"data"
                    assert list(s.list()) == [(7, 1)]
                    assert s.statvfs()[0] > 0
                    assert s.purge(7, 1)
                    code = 0
            finally:
                os._exit(code)
        result["status"] = os.waitpid(pid, 0)[1]
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    as_nobody()
    assert os.waitstatus_to_exitcode(result["status"]) == 0
    s.close()


@pytest.mark.netns
def test_route_mtu_follows_routes_and_links(ns):
    from iod.spoof import RouteMtu
    ns.run(["ip", "route", "add", "10.9.0.0/16", "dev", "lo", "mtu", "1400"], check=True)
    mtus = ns.inside(RouteMtu, max_age=3600)
    try:
        assert ns.inside(mtus.get, "127.0.0.1") == 65536       # loopback's link MTU
        assert ns.inside(mtus.get, "10.9.1.1") == 1400         # the route's own mtu
        ns.run(["ip", "link", "set", "lo", "mtu", "9000"], check=True)
        assert ns.inside(mtus.get, "127.0.0.1") == 65536       # cached...
        mtus.forget("127.0.0.1")
        assert ns.inside(mtus.get, "127.0.0.1") == 9000        # ...until forgotten
        with pytest.raises(OSError):
            ns.inside(mtus.get, "203.0.113.1")                 # no route at all
    finally:
        mtus.close()
    bounded = ns.inside(RouteMtu, max_entries=2)
    try:
        for last in range(2, 6):
            ns.inside(bounded.get, f"127.0.0.{last}")
        assert list(bounded._cache) == ["127.0.0.4", "127.0.0.5"]
    finally:
        bounded.close()


@pytest.mark.netns
def test_route_lookups_from_many_threads_share_one_netlink_socket(ns):
    # pyroute2 opens a socket per calling thread: the iod's I/O threads would
    # each have left one open (found by the soak's fd census).
    from iod.spoof import RouteMtu
    mtus = ns.inside(RouteMtu, max_age=3600)
    # Sockets earlier tests left to the garbage collector must not close
    # while this counts descriptors.
    gc.collect()
    gc.disable()
    try:
        before = len(os.listdir("/proc/self/fd"))
        threads = [threading.Thread(target=mtus.get, args=(f"127.0.1.{i}",)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(mtus._cache) == 9                       # 127.0.0.1 and the 8 new ones
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        gc.enable()
        mtus.close()


@pytest.mark.netns
def test_spoofer_sends_from_any_source_and_refuses_what_cannot_work(ns):
    import errno
    import socket

    from iod.ipv4 import MAX_UDP_PAYLOAD, IpIdSlot
    from iod.spoof import Spoofer

    def run():
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind(("127.0.0.1", 0))
        client.settimeout(10)
        spoofer = Spoofer(IpIdSlot(0, 1))
        try:
            port = client.getsockname()[1]
            assert spoofer.send("10.20.30.40", 2049, "127.0.0.1", port, b"whole") == 1
            assert client.recvfrom(100) == (b"whole", ("10.20.30.40", 2049))
            spoofer.send("10.20.30.40", 2049, "127.0.0.1", port, [b"in ", bytearray(b"parts")])
            assert client.recv(100) == b"in parts"
            with pytest.raises(ValueError):
                spoofer.send("0.0.0.0", 1, "127.0.0.1", port, b"x")
            with pytest.raises(ValueError):
                spoofer.send("10.0.0.1", 1, "localhost", port, b"x")
            with pytest.raises(OSError) as e:
                spoofer.send("10.0.0.1", 1, "127.0.0.1", port, bytes(MAX_UDP_PAYLOAD + 1))
            assert e.value.errno == errno.EMSGSIZE
        finally:
            spoofer.close()
            client.close()
    ns.inside(run)
