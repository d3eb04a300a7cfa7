"""Calls that wait only for the group commit are parked by the receive loop
that took them and answered at the end of its batch, one flush for them all
(nfspd/parked.py): the same replies as when each ran as a task, the same
failures, the same duplicate request cache, over UDP and TCP alike."""

import concurrent.futures
import errno
import fcntl
import socket
import struct
import termios
import time

import pytest
import trio

from common import nfs3, nfs4, rpc, xdr
from common.nfs3 import NFSPROC3, PROCEDURES, createhow3, createmode3, diropargs3, nfsstat3
from common.xdr import decode, encode
from nfspd import nfs3proc, transport
from nfspd.dispatch import CallContext, Dispatcher, Procedure, Program
from nfspd.drc import DuplicateRequestCache
from nfspd.durable import when_stable
from nfspd.fs import commit as commit_module
from nfspd.fs.commit import GroupCommit
from nfspd.fs.metafs import MetaFS
from nfspd.fs.types import Caller
from nfspd.nfsservice import NfsService
from nfspd.transport import Limits, bind_tcp, bind_udp, serve_tcp, serve_udp
from tests.test_nfs3_service import NO_FORWARDING, ROOT, Resolver, S

NFS = nfs3.NFS_PROGRAM


@pytest.fixture
def no_tasks(monkeypatch):
    """Fails a test in which a call waiting for the group commit became a task."""
    spawned = []

    async def answer_udp(sock, deferred, *rest):
        spawned.append(deferred)
        raise AssertionError("a call became a task")
    monkeypatch.setattr(transport, "_answer_udp", answer_udp)
    monkeypatch.setattr(transport, "_answer_tcp", answer_udp)
    yield spawned
    assert spawned == []


class Export:
    """A real MetaFS with the group commit, behind NFSv3 and a reply cache."""

    def __init__(self, tmp_path):
        from nfspd.datapath import LocalDataPath
        root, data = tmp_path / "export", tmp_path / "data"
        root.mkdir()
        data.mkdir()
        self.commit = GroupCommit()
        self.fs = MetaFS(str(root), 7, b"k" * 32, LocalDataPath(str(data)), commit=self.commit)
        self.root = root
        program = Program(NFS, "nfs", {3: nfs3proc.PROCEDURES},
                          NfsService(Resolver(self.fs), NO_FORWARDING))
        self.dispatcher = Dispatcher([program], DuplicateRequestCache())

    def create(self, xid, name, how=createmode3.GUARDED):
        args = nfs3.CREATE3args(diropargs3(self.fs.root_fh, name), createhow3(how, S))
        return rpc.encode_call(xid, NFS, 3, NFSPROC3.CREATE, encode(PROCEDURES[NFSPROC3.CREATE][1],
                                                                     args), cred=ROOT)


@pytest.fixture
def export(tmp_path):
    e = Export(tmp_path)
    yield e
    e.fs.close()
    e.commit.close()


def status_of(reply):
    r = rpc.decode_reply(reply)
    assert r.accepted and r.stat == rpc.accept_stat.SUCCESS
    return decode(PROCEDURES[NFSPROC3.CREATE][2], r.body).disc


async def udp_client(nursery, dispatcher):
    sock = await bind_udp("127.0.0.1", 0)
    await nursery.start(serve_udp, sock, dispatcher, Limits())
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    plain.connect(sock.getsockname()[:2])
    # Sent with the plain socket (no checkpoint between datagrams, so they
    # make one batch), received with trio's.
    return plain, trio.socket.from_stdlib_socket(plain)


async def tcp_client(nursery, dispatcher):
    listener = await bind_tcp("127.0.0.1", 0)
    await nursery.start(serve_tcp, listener, dispatcher, Limits())
    plain = socket.create_connection(listener.getsockname()[:2])
    return plain, trio.socket.from_stdlib_socket(plain)


def delivered(sock, timeout=10):
    """Wait until what ``sock`` sent is acknowledged, i.e. in the peer's
    receive queue (loopback delivers at once unless the softirq is deferred
    to ksoftirqd, as it may be on a busy machine)."""
    deadline = time.monotonic() + timeout
    while struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, bytes(4)))[0]:
        assert time.monotonic() < deadline, "the peer never took what was sent"
        time.sleep(0.001)


async def tcp_replies(sock, n):
    reader = rpc.RecordReader(1 << 20)
    got = []
    while len(got) < n:
        got += reader.feed(await sock.recv(65536))
    return got


# --- the same reply as a task's ----------------------------------------------------------


class StandIn:
    """A file system whose changes are purges noted in a real group commit."""

    def __init__(self):
        self.commit = GroupCommit()
        self.purged = []

    def stable_ticket(self):
        return self.commit.ticket()

    async def stable(self, ticket):
        await self.commit.stable(ticket)


def test_a_parked_calls_reply_is_the_task_paths_byte_for_byte(no_tasks):
    fs = StandIn()

    def change(ctx, args):
        fs.commit.purge(lambda ino, seed: fs.purged.append(ino), args, 0)
        return when_stable(fs, Caller(0, 0), args * 3)

    def dispatcher():
        procs = {9: Procedure("CHANGE", xdr.UInt32, xdr.UInt32, change, idempotent=False)}
        return Dispatcher([Program(NFS, "nfs", {3: procs})], DuplicateRequestCache())

    calls = [rpc.encode_call(100 + i, NFS, 3, 9, xdr.encode(xdr.UInt32, i)) for i in range(8)]

    async def main():
        # The task path: Dispatcher.handle runs the Deferred.
        d = dispatcher()
        ctx = CallContext(("127.0.0.1", 1), ("127.0.0.1", 2049), "udp")
        tasks = [await d.handle(c, ctx) for c in calls]
        batches = fs.commit.batches
        async with trio.open_nursery() as nursery:
            plain, sock = await udp_client(nursery, dispatcher())
            for c in calls:
                plain.send(c)
            parked = [await sock.recv(65536) for _ in calls]
            nursery.cancel_scope.cancel()
        return tasks, parked, fs.commit.batches - batches
    tasks, parked, flushes = trio.run(main)
    assert parked == tasks  # in arrival order, byte for byte
    assert flushes == 1 and fs.purged == list(range(8)) * 2


# --- through NFSv3 on a real export ------------------------------------------------------


def test_a_burst_of_creates_is_answered_in_order_after_one_flush(export, no_tasks):
    async def main():
        async with trio.open_nursery() as nursery:
            plain, sock = await udp_client(nursery, export.dispatcher)
            for i in range(10):
                plain.send(export.create(i, b"f%d" % i))
            replies = [rpc.decode_reply(await sock.recv(65536)) for _ in range(10)]
            nursery.cancel_scope.cancel()
        return replies
    replies = trio.run(main)
    assert [r.xid for r in replies] == list(range(10))
    assert {decode(PROCEDURES[NFSPROC3.CREATE][2], r.body).disc for r in replies} == {
        nfsstat3.NFS3_OK}
    assert export.commit.batches == 1 and export.fs.stable_ticket() is None
    assert sorted(p.name for p in export.root.iterdir()) == sorted(f"f{i}" for i in range(10))


def test_a_failed_flush_fails_the_parked_calls_of_its_batch_as_it_fails_a_task(
        export, no_tasks, monkeypatch):
    disk = {"broken": False}
    sync = commit_module._sync

    def flaky(*batch):
        if disk["broken"]:
            raise OSError(errno.EIO, "disk gone")
        sync(*batch)
    monkeypatch.setattr(commit_module, "_sync", flaky)

    async def main():
        async with trio.open_nursery() as nursery:
            plain, sock = await udp_client(nursery, export.dispatcher)
            disk["broken"] = True
            for i in range(3):
                plain.send(export.create(i, b"f%d" % i))
            failed = [status_of(await sock.recv(65536)) for _ in range(3)]
            disk["broken"] = False
            plain.send(export.create(3, b"g"))  # the next batch flushes again
            after = status_of(await sock.recv(65536))
            nursery.cancel_scope.cancel()
        # Today's task path, for the same failure.
        disk["broken"] = True
        ctx = CallContext(("127.0.0.1", 1), ("127.0.0.1", 2049), "udp")
        task = status_of(await export.dispatcher.handle(export.create(50, b"h"), ctx))
        return failed, after, task
    failed, after, task = trio.run(main)
    assert failed == [nfsstat3.NFS3ERR_IO] * 3 == [task] * 3
    assert after == nfsstat3.NFS3_OK


def test_a_retransmission_of_a_parked_create_is_answered_once_then_from_the_cache(
        export, no_tasks):
    async def main():
        async with trio.open_nursery() as nursery:
            plain, sock = await udp_client(nursery, export.dispatcher)
            first = export.create(1, b"once")
            plain.send(first)
            plain.send(first)  # while the first is parked: dropped
            plain.send(export.create(2, b"other"))
            got = [await sock.recv(65536) for _ in range(2)]
            plain.send(first)  # after: the cached reply
            again = await sock.recv(65536)
            nursery.cancel_scope.cancel()
        return got, again
    got, again = trio.run(main)
    assert [rpc.decode_reply(r).xid for r in got] == [1, 2]
    assert status_of(got[0]) == nfsstat3.NFS3_OK  # GUARDED: a second run would say EXIST
    assert again == got[0]
    c = export.dispatcher.counters
    assert (c.drc_in_progress, c.drc_hits) == (1, 1)


def test_udp_and_tcp_callers_share_one_flush(export, no_tasks):
    async def main():
        async with trio.open_nursery() as nursery:
            uplain, usock = await udp_client(nursery, export.dispatcher)
            tplain, tsock = await tcp_client(nursery, export.dispatcher)
            tplain.sendall(rpc.encode_record(export.create(1, b"warm")))
            await tcp_replies(tsock, 1)  # the connection is being served
            before = export.commit.batches
            # Both sockets readable before the server runs again.
            tplain.sendall(b"".join(rpc.encode_record(export.create(10 + i, b"t%d" % i))
                                    for i in range(4)))
            for i in range(4):
                uplain.send(export.create(20 + i, b"u%d" % i))
            tcp = await tcp_replies(tsock, 4)
            udp = [await usock.recv(65536) for _ in range(4)]
            nursery.cancel_scope.cancel()
        return tcp, udp, export.commit.batches - before
    tcp, udp, flushes = trio.run(main)
    # TCP records of one connection are answered in order too.
    assert [rpc.decode_reply(r).xid for r in tcp] == [10, 11, 12, 13]
    assert [rpc.decode_reply(r).xid for r in udp] == [20, 21, 22, 23]
    assert {status_of(r) for r in tcp + udp} == {nfsstat3.NFS3_OK}
    assert flushes == 1


def test_calls_that_reach_other_connections_while_a_batch_runs_join_its_flush(
        export, no_tasks, monkeypatch):
    # As serve_udp drains its socket before settling, the TCP poller takes
    # what came meanwhile on its other connections before the flush.
    async def main():
        async with trio.open_nursery() as nursery:
            listener = await bind_tcp("127.0.0.1", 0)
            await nursery.start(serve_tcp, listener, export.dispatcher, Limits())
            a, b = (socket.create_connection(listener.getsockname()[:2]) for _ in range(2))
            ta, tb = (trio.socket.from_stdlib_socket(s) for s in (a, b))
            for i, (plain, sock) in enumerate(((a, ta), (b, tb))):
                plain.sendall(rpc.encode_record(export.create(1 + i, b"warm%d" % i)))
                await tcp_replies(sock, 1)  # each connection served by the poller
            handle_now = export.dispatcher.handle_now

            def handling(data, ctx):
                reply = handle_now(data, ctx)
                if rpc.decode_call(data).xid == 10:  # while a's call runs, b sends
                    b.sendall(rpc.encode_record(export.create(20, b"b")))
                    delivered(b)
                return reply
            monkeypatch.setattr(export.dispatcher, "handle_now", handling)
            before = export.commit.batches
            a.sendall(rpc.encode_record(export.create(10, b"a")))
            replies = await tcp_replies(ta, 1) + await tcp_replies(tb, 1)
            nursery.cancel_scope.cancel()
        return replies, export.commit.batches - before
    replies, flushes = trio.run(main)
    assert [rpc.decode_reply(r).xid for r in replies] == [10, 20]
    assert {status_of(r) for r in replies} == {nfsstat3.NFS3_OK}
    assert flushes == 1


def test_a_connection_that_leaves_the_poller_after_parking_a_call_still_gets_its_reply(
        export, monkeypatch):
    # Its task settles what it parked; the poller, which took the
    # connection's first records, must not take that reply and drop it.
    left = []
    readable = transport._Poller._readable

    def leaving(self, fd, st, settling):
        if left == ["due"]:
            left[0] = "gone"
            self._leave(fd)  # as when a call needs a task and none is left
            return
        readable(self, fd, st, settling)
    monkeypatch.setattr(transport._Poller, "_readable", leaving)

    async def main():
        async with trio.open_nursery() as nursery:
            plain, sock = await tcp_client(nursery, export.dispatcher)
            # (Nagle would hold the second call until the first is answered.)
            plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            plain.sendall(rpc.encode_record(export.create(1, b"warm")))
            await tcp_replies(sock, 1)
            handle_now = export.dispatcher.handle_now

            def handling(data, ctx):
                reply = handle_now(data, ctx)
                if rpc.decode_call(data).xid == 10:  # more comes while it runs
                    left.append("due")
                    plain.sendall(rpc.encode_record(export.create(11, b"g")))
                    delivered(plain)
                return reply
            monkeypatch.setattr(export.dispatcher, "handle_now", handling)
            plain.sendall(rpc.encode_record(export.create(10, b"f")))
            with trio.fail_after(10):
                replies = await tcp_replies(sock, 2)
            nursery.cancel_scope.cancel()
        return replies
    replies = trio.run(main)
    assert left == ["gone"]
    assert sorted(rpc.decode_reply(r).xid for r in replies) == [10, 11]
    assert {status_of(r) for r in replies} == {nfsstat3.NFS3_OK}


def test_calls_beyond_the_bound_run_as_tasks_and_all_are_answered(export):
    async def main():
        async with trio.open_nursery() as nursery:
            sock = await bind_udp("127.0.0.1", 0)
            await nursery.start(serve_udp, sock, export.dispatcher, Limits(udp_inflight=2))
            plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            plain.connect(sock.getsockname()[:2])
            client = trio.socket.from_stdlib_socket(plain)
            for i in range(6):
                plain.send(export.create(i, b"f%d" % i))
            got = sorted([rpc.decode_reply(await client.recv(65536)).xid for _ in range(6)])
            nursery.cancel_scope.cancel()
        return got
    assert trio.run(main) == list(range(6))
    assert sorted(p.name for p in export.root.iterdir()) == sorted(f"f{i}" for i in range(6))


def test_parked_calls_given_up_are_forgotten_by_the_reply_cache(export):
    from nfspd.parked import Parked
    d = export.dispatcher
    ctx = CallContext(("127.0.0.1", 1), ("127.0.0.1", 2049), "udp")
    deferred = d.handle_now(export.create(1, b"f"), ctx)
    parked = Parked(4)
    assert parked.park(deferred)
    assert d.handle_now(export.create(1, b"f"), ctx) is None  # in progress
    parked.abandon()  # the loop ended (cancelled)
    assert not parked
    # A retransmission runs again (the file exists now: GUARDED says so).
    again = d.handle_now(export.create(1, b"f"), ctx)
    assert status_of(again) == nfsstat3.NFS3ERR_EXIST


# --- NFSv4.1: a COMPOUND whose reply waits only for the flush ----------------------------


class Metaserver:
    """nfspd's own NFS dispatcher (NFSv3 and NFSv4.1) over a sync export,
    served in the test's trio loop; an NFSv4.1 client drives it from a thread."""

    def __init__(self, tmp_path):
        from nfspd.server import Config
        from nfspd.server import Metaserver as Assembled
        self.export = tmp_path / "export"
        self.export.mkdir()
        exports = tmp_path / "exports"
        exports.write_text(f"{self.export} *(rw,sync,no_root_squash,insecure)\n")
        self.ms = Assembled(Config(str(exports), str(tmp_path / "state"), v4_grace=0,
                                   pnfs=False, unlinkd="off"))

    async def serve(self, nursery):
        listener = await bind_tcp("127.0.0.1", 0)
        await nursery.start(serve_tcp, listener, self.ms.nfs, Limits())
        return listener.getsockname()[1]

    def client(self, port):
        from tools.dev.nfs4client import Nfs4Client
        c = Nfs4Client("127.0.0.1", port, reserved_port=False).mount()
        return c, c.lookup_path(str(self.export))


async def in_a_thread_here(fn, *args):
    """fn(*args) in a new thread of the test's own network namespace. Not in
    one of trio's cached worker threads: a thread is in the namespace of the
    thread that started it, and an earlier test's trio.run inside another
    namespace (Namespace.inside) leaves such threads in trio's cache for a
    while; a client there connected to nothing (ECONNREFUSED)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(fn, *args)
        return await trio.to_thread.run_sync(future.result)


@pytest.fixture
def metaserver(tmp_path):
    m = Metaserver(tmp_path)
    yield m
    m.ms.group_commit.close()


def open_create(c, dir_fh, name):
    from tools.dev.nfs4client import op
    how = nfs4.openflag4(nfs4.opentype4.OPEN4_CREATE, nfs4.createhow4(
        nfs4.createmode4.UNCHECKED4, nfs4.encode_attrs({nfs4.FATTR4_MODE: 0o644})))
    args = nfs4.OPEN4args(0, 3, 0, nfs4.open_owner4(c.clientid, b"o"), how,
                          nfs4.open_claim4(nfs4.open_claim_type4.CLAIM_NULL, name))
    return [c.sequence_op(), op(nfs4.nfs_opnum4.OP_PUTFH, nfs4.PUTFH4args(dir_fh)),
            op(nfs4.nfs_opnum4.OP_OPEN, args)]


def test_nfsv4_creates_are_answered_after_the_flush_without_a_task_each(metaserver, no_tasks):
    def creates(port):
        c, root = metaserver.client(port)
        flushes = metaserver.ms.group_commit.batches
        for i in range(3):
            res = c.compound(open_create(c, root, b"f%d" % i))
            assert res.status == nfs4.nfsstat4.NFS4_OK
        return metaserver.ms.group_commit.batches - flushes

    async def main():
        async with trio.open_nursery() as nursery:
            port = await metaserver.serve(nursery)
            flushes = await in_a_thread_here(creates, port)
            nursery.cancel_scope.cancel()
        return flushes
    assert trio.run(main) == 3   # each reply came after its flush
    assert sorted(p.name for p in metaserver.export.iterdir()) == ["f0", "f1", "f2"]


def test_a_parked_nfsv4_compound_given_up_frees_its_session_slot(metaserver):
    from nfspd.parked import Parked

    async def main():
        async with trio.open_nursery() as nursery:
            port = await metaserver.serve(nursery)
            c, root = await in_a_thread_here(metaserver.client, port)
            nursery.cancel_scope.cancel()
        call = rpc.encode_call(7, NFS, 4, 1, nfs4.encode_compound(nfs4.COMPOUND4args(
            b"", 1, open_create(c, root, b"f"))), cred=c.rpc.cred)
        ctx = CallContext(("127.0.0.1", 1), ("127.0.0.1", 2049), "tcp", raw=call)
        d = metaserver.ms.nfs
        parked = Parked(4)
        assert parked.park(d.handle_now(call, ctx))
        assert first_status(d.handle_now(call, ctx)) == nfs4.nfsstat4.NFS4ERR_DELAY  # in progress
        parked.abandon()   # its connection went
        return first_status(d.handle_now(call, ctx))
    # Not DELAY for ever: the slot is free, and holds no reply to give.
    assert trio.run(main) == nfs4.nfsstat4.NFS4ERR_RETRY_UNCACHED_REP


def first_status(reply):
    r = rpc.decode_reply(reply)
    return nfs4.decode_compound_res(r.body).status
