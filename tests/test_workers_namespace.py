"""`nfspd --workers N`: NFSv3 namespace changes over UDP go from the kernel
straight to the workers (nfspd/steering.py), which answer them as nfspd
would, retransmissions included, and hand back to nfspd what needs its state
(nfspd/workers.py). Real sockets, real daemons in a private namespace."""

import os
import random
import select
import signal
import socket
import struct
import threading

import pytest
import trio

from common import metafile, nfs3, rpc
from common.nfs3 import NFSPROC3, nfsstat3
from common.runtime import metarecord
from common.xdr import Unpacker, encode
from nfspd import admin, metrics, steering
from nfspd.server import load_or_create_key
from nfspd.transport import udp_socket
from nfspd.workers import Pool
from tests.test_workers import start, workers_of
from tools import status
from tools.dev import nfsclient
from tools.dev.netns import wait_until

UNCHANGED = nfs3.sattr3.unchanged()
_GETATTR = rpc.encode_call(1, 100003, 3, NFSPROC3.GETATTR, b"\0\0\0\0")


def connect(ns, d):
    return ns.inside(nfsclient.connect, "127.0.0.1", d.export, transport="udp")


def nfspd_calls(d):
    """The NFS calls nfspd itself has decoded (not its workers)."""
    return admin.request(admin.socket_path(d.state))["status"]["counters"]["nfs"]["calls"]


def call(c, xid, proc, args_type, args):
    """(raw call, raw reply) of one call with our own xid."""
    msg = rpc.encode_call(xid, 100003, 3, proc, encode(args_type, args), c.rpc.cred)
    return msg, c.rpc.call_raw(msg, xid)


def status_of(raw, res_type):
    return res_type.unpack(Unpacker(rpc.decode_reply(raw).body)).disc


def test_the_kernel_steers_each_datagram_to_the_socket_worker_of_names(ns):
    def run():
        socks = steering.open_group(udp_socket, "127.0.0.1", 0, 3)
        port = socks[0].getsockname()[1]
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rng = random.Random(15)
        seen = set()
        try:
            for _ in range(300):
                head = struct.pack(">IIIIII", rng.getrandbits(32), rng.choice((0, 0, 0, 1)), 2,
                                   rng.choice((100003, 100003, 100005)), rng.choice((2, 3, 3, 4)),
                                   rng.choice(list(steering.STEERED) * 3 + list(range(22))))
                datagram = head[:rng.choice((4, 12, 23, 24, 24, 24))] + b"\0" * rng.randrange(8)
                client.sendto(datagram, ("127.0.0.1", port))
                ready, _, _ = select.select(socks, [], [], 5)
                assert len(ready) == 1
                assert ready[0].recv(100) == datagram
                got = socks.index(ready[0])
                assert got == steering.worker_of(datagram, 3), datagram.hex()
                seen.add(got)
        finally:
            client.close()
            for s in socks:
                s.close()
        return seen
    assert ns.inside(run) == {0, 1, 2, 3}  # nfspd and every worker got some


def test_a_client_numbering_its_calls_in_turn_spreads_its_changes_over_every_worker():
    # A client alternating CREATE and REMOVE (xids one after another): its
    # CREATEs, every other xid, reach every worker about equally.
    for workers in (2, 3, 4):
        for stride in (1, 2, 3, 4):
            got = [steering.worker_of(struct.pack(">IIIIII", xid, 0, 2, 100003, 3,
                                                  NFSPROC3.CREATE), workers)
                   for xid in range(5000, 5000 + 600 * stride, stride)]
            counts = [got.count(i + 1) for i in range(workers)]
            assert min(counts) > 600 / workers * 0.7, (workers, stride, counts)


def test_namespace_changes_over_udp_are_answered_by_the_workers_not_nfspd(ns, nfspd):
    d = start(nfspd, 2)
    c, root = connect(ns, d)
    f = c.create(root, b"file")
    before = nfspd_calls(d)
    for i in range(8):  # xids reach both workers
        sub = c.ok(NFSPROC3.MKDIR, nfs3.MKDIR3args(nfs3.diropargs3(root, b"d%d" % i),
                                                   UNCHANGED)).obj
        c.ok(NFSPROC3.SYMLINK, nfs3.SYMLINK3args(nfs3.diropargs3(sub, b"s"),
                                                 nfs3.symlinkdata3(UNCHANGED, b"../file")))
        c.ok(NFSPROC3.LINK, nfs3.LINK3args(f, nfs3.diropargs3(sub, b"hard")))
        c.ok(NFSPROC3.RENAME, nfs3.RENAME3args(nfs3.diropargs3(sub, b"s"),
                                               nfs3.diropargs3(sub, b"t")))
        c.create(sub, b"new")
    assert nfspd_calls(d) == before
    assert sorted(os.listdir(os.path.join(d.export, "d3"))) == ["hard", "new", "t"]
    assert os.readlink(os.path.join(d.export, "d3", "t")) == "../file"
    assert os.stat(os.path.join(d.export, "file")).st_nlink == 9
    # The handles they gave are nfspd's: it answers on them.
    assert c.getattr(c.lookup(root, b"d5")).type == nfs3.ftype3.NF3DIR
    assert nfspd_calls(d) == before + 2


def test_what_needs_nfspd_is_handed_back_to_it_and_done_there(ns, nfspd):
    d = start(nfspd, 2)
    c, root = connect(ns, d)
    kept = c.create(root, b"kept")
    c.write_all(kept, b"old data")
    c.create(root, b"victim")
    c.create(root, b"mover")
    before, handed = nfspd_calls(d), workers_of(d)["handed_back"]
    # A RENAME onto an existing name takes that name's file: nfspd's to do.
    c.ok(NFSPROC3.RENAME, nfs3.RENAME3args(nfs3.diropargs3(root, b"mover"),
                                           nfs3.diropargs3(root, b"victim")))
    # A CREATE that sets a size truncates an existing file: nfspd's too.
    how = nfs3.createhow3(nfs3.createmode3.UNCHECKED, UNCHANGED.replace(size=0))
    assert c.ok(NFSPROC3.CREATE, nfs3.CREATE3args(nfs3.diropargs3(root, b"kept"), how)).obj == kept
    assert workers_of(d)["handed_back"] == handed + 2
    assert nfspd_calls(d) == before + 2
    assert sorted(os.listdir(d.export)) == ["kept", "victim"]
    assert c.read_all(kept) == b""


@pytest.mark.parametrize("handed_back", [False, True])
def test_every_retransmitted_change_gets_its_first_reply_from_whoever_ran_it(
        ns, nfspd, handed_back):
    d = start(nfspd, 2)
    c, root = connect(ns, d)
    f = c.create(root, b"file")
    c.create(root, b"taken")
    c.write_all(f, b"data")
    size = 0 if handed_back else None
    calls = [
        (NFSPROC3.MKDIR, nfs3.MKDIR3args, nfs3.MKDIR3args(nfs3.diropargs3(root, b"dir"), UNCHANGED),
         nfs3.MKDIR3res),
        (NFSPROC3.SYMLINK, nfs3.SYMLINK3args, nfs3.SYMLINK3args(
            nfs3.diropargs3(root, b"sym"), nfs3.symlinkdata3(UNCHANGED, b"file")),
         nfs3.SYMLINK3res),
        (NFSPROC3.LINK, nfs3.LINK3args, nfs3.LINK3args(f, nfs3.diropargs3(root, b"hard")),
         nfs3.LINK3res),
        (NFSPROC3.CREATE, nfs3.CREATE3args, nfs3.CREATE3args(nfs3.diropargs3(root, b"file"),
                                                             nfs3.createhow3(
            nfs3.createmode3.GUARDED if size is None else nfs3.createmode3.UNCHECKED,
            UNCHANGED.replace(size=size))), nfs3.CREATE3res),
        (NFSPROC3.RENAME, nfs3.RENAME3args, nfs3.RENAME3args(
            nfs3.diropargs3(root, b"sym"), nfs3.diropargs3(root, b"taken" if handed_back
                                                           else b"sym2")), nfs3.RENAME3res),
        (NFSPROC3.RMDIR, nfs3.RMDIR3args, nfs3.RMDIR3args(nfs3.diropargs3(root, b"dir")),
         nfs3.RMDIR3res),
    ]
    handed = workers_of(d)["handed_back"]
    for i, (proc, args_type, args, res_type) in enumerate(calls):
        xid = 7000 + i  # both workers
        msg, first = call(c, xid, proc, args_type, args)
        want = nfsstat3.NFS3ERR_EXIST if proc == NFSPROC3.CREATE and not handed_back \
            else nfsstat3.NFS3_OK
        assert status_of(first, res_type) == want, proc.name
        c.getattr(root)  # something else in between
        assert c.rpc.call_raw(msg, xid) == first, proc.name  # the cached reply, byte for byte
    # The handed-back CREATE and RENAME went back again, to nfspd's cache.
    assert workers_of(d)["handed_back"] == handed + (4 if handed_back else 0)
    assert sorted(os.listdir(d.export)) == \
        (["file", "hard", "taken"] if handed_back else ["file", "hard", "sym2", "taken"])


def test_a_killed_worker_comes_back_with_its_socket_and_nothing_is_lost(ns, nfspd):
    d = start(nfspd, 1)
    c, root = connect(ns, d)
    old = workers_of(d)["pids"][0]
    os.kill(old, 9)
    wait_until(lambda: workers_of(d)["pids"][0] not in (None, old), 20, what="a new worker")
    # Its socket is the same one: MKDIRs still reach a worker, not nfspd.
    before = nfspd_calls(d)
    for i in range(4):
        c.ok(NFSPROC3.MKDIR, nfs3.MKDIR3args(nfs3.diropargs3(root, b"d%d" % i), UNCHANGED))
    assert nfspd_calls(d) == before
    assert sorted(os.listdir(d.export)) == ["d0", "d1", "d2", "d3"]


def test_concurrent_clients_through_workers_never_see_a_torn_namespace(ns, cluster):
    """Four clients creating (with data), renaming, linking and removing on
    shared names in two directories, their calls spread over nfspd and two
    workers: afterwards every name leads to a live file, each new file has
    one name, and the iods hold exactly the live files' data."""
    c0 = cluster(n_iods=2, nfspd_args=["--workers", "2"])
    wait_until(lambda: None not in workers_of(c0.nfspd)["pids"], 60, what="workers ready")
    c, root = c0.connect()
    dirs = [c.ok(NFSPROC3.MKDIR, nfs3.MKDIR3args(nfs3.diropargs3(root, b"d%d" % i),
                                                 UNCHANGED)).obj for i in range(2)]
    errors, done = [], []

    def client(cl, seed):
        try:
            work(cl, seed)
        except BaseException as e:  # a thread's failure is the test's
            errors.append(e)

    def work(cl, seed):
        rng = random.Random(seed)
        allowed = (nfsstat3.NFS3_OK, nfsstat3.NFS3ERR_EXIST, nfsstat3.NFS3ERR_NOENT)
        for _ in range(40):
            here, there = rng.choice(dirs), rng.choice(dirs)
            name, other = b"n%d" % rng.randrange(5), b"n%d" % rng.randrange(5)
            roll = rng.random()
            if roll < 0.4:
                how = nfs3.createhow3(nfs3.createmode3.GUARDED, UNCHANGED)
                res = cl.call(NFSPROC3.CREATE, nfs3.CREATE3args(nfs3.diropargs3(here, name), how))
                if res.disc == nfsstat3.NFS3_OK:
                    try:
                        cl.write_all(res.body.obj, b"x" * rng.randrange(1, 200000))
                    except nfsclient.NfsError as e:  # removed meanwhile by another client
                        if e.status != nfsstat3.NFS3ERR_STALE:
                            raise
            elif roll < 0.7:
                res = cl.call(NFSPROC3.RENAME, nfs3.RENAME3args(nfs3.diropargs3(here, name),
                                                                nfs3.diropargs3(there, other)))
            else:
                res = cl.call(NFSPROC3.REMOVE, nfs3.REMOVE3args(nfs3.diropargs3(here, name)))
            if res.disc not in allowed:
                errors.append(res.disc)
            elif res.disc == nfsstat3.NFS3_OK:
                done.append(roll < 0.4 and "create" or roll < 0.7 and "rename" or "remove")

    # Each client's socket is made in the namespace; its thread need not be.
    threads = [threading.Thread(target=client, args=(c0.connect()[0], s)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert {"create", "rename", "remove"} <= set(done), done
    layout_gen = admin.request(admin.socket_path(c0.nfspd.state))["status"]["layout_gen"]
    live = set()
    for i, d in enumerate(dirs):
        for name in os.listdir(os.path.join(c0.export, "d%d" % i)):
            fh = c.lookup(d, os.fsencode(name))                 # no name pointing at nothing
            attr = c.getattr(fh)
            assert attr.nlink == 1                              # one name per file
            meta = metarecord.of_path(os.path.join(c0.export, "d%d" % i, name))
            # Laid out as nfspd lays out files, whoever created it.
            assert (meta.stripe_unit, meta.layout_gen) == (c0.stripe_unit, layout_gen) != \
                (metafile.DEFAULT_STRIPE_UNIT, 0)
            live.add((attr.fileid, meta.seed))
    # Every removed or replaced file's data purged (unlinkd), no live one's.
    wait_until(lambda: {f for held in c0.datafiles().values() for f in held} <= live, 60,
               what="the purges drained")
    held = {f for held in c0.datafiles().values() for f in held}
    assert held <= live


def test_nfsp_status_counts_what_the_workers_answered(ns, nfspd):
    d = start(nfspd, 2)
    c, root = connect(ns, d)
    for i in range(6):
        c.ok(NFSPROC3.MKDIR, nfs3.MKDIR3args(nfs3.diropargs3(root, b"d%d" % i), UNCHANGED))
    c.create(root, b"a")
    c.create(root, b"b")
    c.ok(NFSPROC3.RENAME, nfs3.RENAME3args(nfs3.diropargs3(root, b"a"),
                                           nfs3.diropargs3(root, b"b")))  # handed back
    # Each worker reports its count within a second of a change.
    wait_until(lambda: sum(workers_of(d)["steered"]) == 9, 20, what="the workers' reports")
    st = admin.request(admin.socket_path(d.state))["status"]
    line, = [l for l in status.render(st).splitlines() if l.startswith("workers:")]
    assert line.startswith("workers: 2/2 running; took 9 NFSv3 namespace changes over UDP "
                           "(handed back to nfspd: 1)")
    page = metrics.render(st)
    steered = [f'nfsp_worker_calls_total{{worker="{i}",kind="steered"}} {n}'
               for i, n in enumerate(st["workers"]["steered"])]
    assert all(line in page for line in steered)
    assert 'nfsp_worker_calls_total{kind="handed_back"} 1' in page
    # The export is sync: the MKDIRs and CREATEs waited for the workers' own
    # flushes, the handed-back RENAME for nfspd's (reported with the counts).
    gc = st["workers"]["group_commit"]
    assert gc["flushes"] >= 1 and gc["waits"] >= 8 and gc["seconds"] > 0
    assert st["group_commit"]["waits"] >= 1
    line, = [l for l in status.render(st).splitlines() if l.startswith("group commit")]
    assert f"; workers: {gc['flushes']} flushes answered {gc['waits']} calls" in line
    assert f'nfsp_group_commit_waits_total{{process="workers"}} {gc["waits"]}' in page


def test_without_steering_a_worker_takes_nothing_from_nfspds_socket(ns, tmp_path):
    """Where the kernel refuses the steering program, the workers answer on
    a copy of nfspd's own socket (its file description shared): they must
    send on it, never receive from it, or they would take nfspd's calls."""
    export, state = tmp_path / "export", tmp_path / "state"
    export.mkdir()
    state.mkdir()
    (tmp_path / "exports").write_text(f"{export} 127.0.0.0/8(rw,no_root_squash,insecure)\n")
    load_or_create_key(str(state / "handle.key"))

    def run():
        async def main():
            udp = udp_socket()
            udp.bind(("127.0.0.1", 0))
            pool = Pool(1, str(tmp_path / "exports"), str(state), str(tmp_path / "data"))
            pool.answer_udp_on(udp)
            async with trio.open_nursery() as nursery:
                await nursery.start(pool.run)
                with trio.fail_after(30):
                    while not pool.workers[0].ready:
                        await trio.sleep(0.05)
                client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                mkdir = rpc.encode_call(9, 100003, 3, NFSPROC3.MKDIR, encode(
                    nfs3.MKDIR3args, nfs3.MKDIR3args(nfs3.diropargs3(b"\0" * 8, b"d"), UNCHANGED)),
                    rpc.AuthSys(0, b"t", 0, 0, []))
                with trio.fail_after(10):
                    for _ in range(20):
                        client.sendto(mkdir, udp.getsockname())
                        await trio.lowlevel.wait_readable(udp)
                        assert udp.recv(65536) == mkdir  # nfspd's, every time
                client.close()
                nursery.cancel_scope.cancel()
            udp.close()
        trio.run(main)
    ns.inside(run)


def test_an_export_added_by_a_reload_takes_namespace_changes_in_the_workers(ns, nfspd):
    d = start(nfspd, 2)
    other = os.path.join(d.workdir, "other")
    os.makedirs(other)
    with open(d.exports, "w") as f:
        f.write(f"{d.export} 127.0.0.0/8(rw,no_root_squash,insecure)\n"
                f"{other} 127.0.0.0/8(rw,no_root_squash,insecure)\n")
    n = d.log_text().count("exports reloaded")
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: d.log_text().count("exports reloaded") > n, 10, what="reload")
    c, root = ns.inside(nfsclient.connect, "127.0.0.1", other, transport="udp")
    before = nfspd_calls(d)
    for i in range(4):  # both workers
        c.ok(NFSPROC3.MKDIR, nfs3.MKDIR3args(nfs3.diropargs3(root, b"d%d" % i), UNCHANGED))
    assert nfspd_calls(d) == before
    assert sorted(os.listdir(other)) == ["d0", "d1", "d2", "d3"]


def test_a_worker_that_cannot_start_leaves_its_steered_calls_to_nfspd(ns, tmp_path):
    """Between a worker's death and the next one's start, nfspd serves its
    socket: a worker that dies at every start must not leave its share of
    the namespace changes unanswered."""
    def run():
        async def main():
            socks = steering.open_group(udp_socket, "127.0.0.1", 0, 1)
            seen = []

            async def stand_in(sock):
                while True:
                    await trio.lowlevel.wait_readable(sock)
                    seen.append(sock.recv(65536))
            # No state directory (no handle key): every worker exits at once.
            pool = Pool(1, str(tmp_path / "exports"), str(tmp_path / "none"), str(tmp_path / "d"))
            pool.answer_udp_on(socks[0], socks[1:], None, stand_in)
            client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            calls = [rpc.encode_call(xid, 100003, 3, NFSPROC3.MKDIR, encode(
                nfs3.MKDIR3args, nfs3.MKDIR3args(nfs3.diropargs3(b"\0" * 8, b"d"), UNCHANGED)),
                rpc.AuthSys(0, b"t", 0, 0, [])) for xid in range(3)]
            async with trio.open_nursery() as nursery:
                await nursery.start(pool.run)
                for call in calls:
                    client.sendto(call, socks[0].getsockname())
                with trio.fail_after(30):
                    while len(seen) < len(calls):
                        await trio.sleep(0.05)
                assert sorted(seen) == sorted(calls)
                assert pool.counters["restarts"] >= 1 and not pool.workers[0].ready
                nursery.cancel_scope.cancel()
            client.close()
            for s in socks:
                s.close()
        trio.run(main)
    ns.inside(run)
