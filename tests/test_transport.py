"""The UDP and TCP transports on real loopback sockets: calls that need no waiting
are answered in the receive loop, in order, the others run as tasks within the
in-flight bound; garbage in a batch costs only itself."""

import socket

import trio
import trio.testing

from common import rpc, xdr
from common.rpc import accept_stat
from nfspd.dispatch import Dispatcher, Procedure, Program
from nfspd.drc import DuplicateRequestCache
from nfspd.transport import UDP_BATCH, Limits, bind_tcp, bind_udp, serve_tcp, serve_udp

PROG = 100003


class Service:
    def __init__(self):
        self.running = 0
        self.most = 0
        self.release = trio.Semaphore(0)
        self.removes = 0
        self.order = []

    def echo(self, ctx, args):
        self.order.append(args)
        return args

    def big(self, ctx, args):
        return b"x" * 60000

    def remove(self, ctx, args):
        self.removes += 1
        return self.removes

    async def wait(self, ctx, args):
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.acquire()
        finally:
            self.running -= 1
        return args


class BuggyType:
    """An argument decoder with a bug (raises something else than XdrError)."""

    @staticmethod
    def unpack(u):
        raise RuntimeError("decoder bug")


def dispatcher(svc):
    procs = {1: Procedure("ECHO", xdr.UInt32, xdr.UInt32, svc.echo),
             3: Procedure("BUGGY", BuggyType, xdr.Void, svc.echo),
             2: Procedure("WAIT", xdr.UInt32, xdr.UInt32, svc.wait),
             4: Procedure("BIG", xdr.Void, xdr.Opaque(), svc.big),
             12: Procedure("REMOVE", xdr.Void, xdr.UInt32, svc.remove, idempotent=False)}
    return Dispatcher([Program(PROG, "nfs", {3: procs})], DuplicateRequestCache())


def call(xid, proc, value=None):
    args = b"" if value is None else xdr.encode(xdr.UInt32, value)
    return rpc.encode_call(xid, PROG, 3, proc, args)


def value_of(reply):
    r = rpc.decode_reply(reply)
    assert r.stat == accept_stat.SUCCESS
    return r.xid, xdr.decode(xdr.UInt32, r.body)


async def udp_server(nursery, svc, **limits):
    sock = await bind_udp("127.0.0.1", 0)
    await nursery.start(serve_udp, sock, dispatcher(svc), Limits(**limits))
    client = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await client.connect(sock.getsockname())
    return client


def test_a_burst_is_answered_in_order_with_garbage_and_retransmissions_inside():
    svc = Service()
    n = UDP_BATCH * 2 + 5  # more than one batch

    async def main():
        async with trio.open_nursery() as nursery:
            client = await udp_server(nursery, svc)
            sent = []
            for i in range(n):
                await client.send(call(i, 1, i))
                sent.append(i)
                if i % 17 == 0:
                    await client.send(b"\x00" * 7)  # dropped
                    await client.send(call(10_000 + i, 1))  # no argument: GARBAGE_ARGS
                if i % 50 == 0:
                    await client.send(call(20_000 + i, 12))
                    await client.send(call(20_000 + i, 12))  # a retransmission
            echoed, garbage, removes = [], [], []
            # Every call is answered but for the 7-byte datagrams.
            expected = n + len(range(0, n, 17)) + 2 * len(range(0, n, 50))
            for _ in range(expected):
                r = rpc.decode_reply(await client.recv(65536))
                if r.xid >= 20_000:
                    removes.append((r.xid, xdr.decode(xdr.UInt32, r.body)))
                elif r.xid >= 10_000:
                    garbage.append(r.stat)
                else:
                    echoed.append(xdr.decode(xdr.UInt32, r.body))
            nursery.cancel_scope.cancel()
        assert echoed == sent == svc.order  # in arrival order
        assert garbage == [accept_stat.GARBAGE_ARGS] * len(range(0, n, 17))
        # Each REMOVE ran once; its retransmission got the same answer.
        assert svc.removes == len(range(0, n, 50))
        assert removes[0::2] == removes[1::2]
    trio.run(main)


def test_a_dispatcher_bug_costs_one_message_not_the_server(caplog):
    svc = Service()

    async def main():
        async with trio.open_nursery() as nursery:
            sock = await bind_udp("127.0.0.1", 0)
            d = dispatcher(svc)
            await nursery.start(serve_udp, sock, d, Limits())
            listener = await bind_tcp("127.0.0.1", 0)
            await nursery.start(serve_tcp, listener, d, Limits())
            client = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            await client.connect(sock.getsockname())
            await client.send(call(1, 3))
            await client.send(call(2, 1, 2))
            assert value_of(await client.recv(65536)) == (2, 2)
            stream = await trio.open_tcp_stream(*listener.getsockname()[:2])
            await stream.send_all(rpc.encode_record(call(3, 3)) + rpc.encode_record(call(4, 1, 4)))
            reader = rpc.RecordReader(1 << 20)
            got = []
            while not got:
                got = reader.feed(await stream.receive_some(65536))
            assert [value_of(r) for r in got] == [(4, 4)]
            await stream.aclose()
            nursery.cancel_scope.cancel()
            return d.counters.dropped
    assert trio.run(main) == 2
    assert "the dispatcher failed" in caplog.text and "decoder bug" in caplog.text


def test_deferred_calls_are_bounded_and_the_rest_is_answered_meanwhile():
    svc = Service()

    async def main():
        async with trio.open_nursery() as nursery:
            client = await udp_server(nursery, svc, udp_inflight=2)
            for i in range(3):
                await client.send(call(i, 2, i))  # three calls that wait
            await trio.testing.wait_all_tasks_blocked()
            # Two run; the third waits for a slot, and with it the receive loop.
            assert (svc.running, svc.most) == (2, 2)
            await client.send(call(7, 1, 7))
            await trio.testing.wait_all_tasks_blocked()
            assert svc.order == []
            svc.release.release()
            got = [value_of(await client.recv(65536))]
            await trio.testing.wait_all_tasks_blocked()
            assert svc.running == 2 and svc.order == [7]  # the third started, ECHO answered
            got.append(value_of(await client.recv(65536)))
            svc.release.release()
            svc.release.release()
            got += [value_of(await client.recv(65536)) for _ in range(2)]
            nursery.cancel_scope.cancel()
        assert sorted(got) == [(0, 0), (1, 1), (2, 2), (7, 7)] and svc.most == 2
    trio.run(main)


def test_tcp_pipelined_calls_are_all_answered():
    svc = Service()

    async def main():
        async with trio.open_nursery() as nursery:
            listener = await bind_tcp("127.0.0.1", 0)
            await nursery.start(serve_tcp, listener, dispatcher(svc), Limits())
            stream = await trio.open_tcp_stream(*listener.getsockname()[:2])
            records = [call(i, 1, i) for i in range(20)] + [call(100, 2, 100)] + \
                [call(i, 1, i) for i in range(20, 40)]
            await stream.send_all(b"".join(rpc.encode_record(r) for r in records))
            reader = rpc.RecordReader(1 << 20)
            got = []
            while len(got) < 40:
                got += [value_of(r) for r in reader.feed(await stream.receive_some(65536))]
            svc.release.release()
            while len(got) < 41:
                got += [value_of(r) for r in reader.feed(await stream.receive_some(65536))]
            await stream.aclose()
            nursery.cancel_scope.cancel()
        assert got[:40] == [(i, i) for i in range(40)] and got[40] == (100, 100)
    trio.run(main)


async def tcp_server(nursery, svc, **limits):
    listener = await bind_tcp("127.0.0.1", 0)
    await nursery.start(serve_tcp, listener, dispatcher(svc), Limits(**limits))
    return await trio.open_tcp_stream(*listener.getsockname()[:2])


async def replies(stream, reader, n):
    got = []
    while len(got) < n:
        data = await stream.receive_some(1 << 20)
        assert data, "the server closed the connection"
        got += reader.feed(data)
    return got


def test_thousands_of_small_calls_pipelined_in_one_write_are_all_answered():
    # More replies to one read than a sendmsg takes buffers (IOV_MAX, 1024).
    svc = Service()

    async def main():
        async with trio.open_nursery() as nursery:
            stream = await tcp_server(nursery, svc)
            nursery.cancel_scope.deadline = trio.current_time() + 60  # a hang fails, not blocks
            await stream.send_all(b"".join(rpc.encode_record(call(i, 1, i)) for i in range(3000)))
            got = [value_of(r) for r in await replies(stream, rpc.RecordReader(1 << 20), 3000)]
            nursery.cancel_scope.cancel()
        assert got == [(i, i) for i in range(3000)]
    trio.run(main)


def test_a_tcp_connection_at_its_bound_of_calls_in_flight_waits_alone_and_answers_all():
    """One task reads every connection (nfspd/transport.py _Poller); a
    connection whose calls in flight reach their bound waits for one to end
    in a task of its own, while the others are still answered."""
    svc = Service()

    async def main():
        async with trio.open_nursery() as nursery:
            busy = await tcp_server(nursery, svc, tcp_inflight_per_conn=2)
            other = await trio.open_tcp_stream(*busy.socket.getpeername()[:2])
            nursery.cancel_scope.deadline = trio.current_time() + 60  # a hang fails, not blocks
            await busy.send_all(b"".join(rpc.encode_record(r) for r in
                                         [call(0, 2, 0), call(1, 2, 1), call(2, 2, 2),
                                          call(7, 1, 7)]))
            await trio.testing.wait_all_tasks_blocked()
            assert (svc.running, svc.order) == (2, [])  # the third WAIT, and ECHO after it, wait
            await other.send_all(rpc.encode_record(call(9, 1, 9)))
            assert [value_of(r) for r in await replies(other, rpc.RecordReader(1 << 20), 1)] \
                == [(9, 9)]
            reader = rpc.RecordReader(1 << 20)
            svc.release.release()
            got = [value_of(r) for r in await replies(busy, reader, 2)]  # a WAIT, then ECHO
            await trio.testing.wait_all_tasks_blocked()
            assert svc.order == [9, 7] and svc.running == 2  # the third WAIT in its place
            svc.release.release()
            svc.release.release()
            got += [value_of(r) for r in await replies(busy, reader, 2)]
            # The connection still answers what it sends next.
            await busy.send_all(rpc.encode_record(call(8, 1, 8)))
            got += [value_of(r) for r in await replies(busy, reader, 1)]
            nursery.cancel_scope.cancel()
        assert sorted(got) == [(0, 0), (1, 1), (2, 2), (7, 7), (8, 8)] and svc.most == 2
    trio.run(main)


def test_an_idle_tcp_connection_is_closed_and_a_busy_one_is_not():
    svc = Service()

    async def main():
        async with trio.open_nursery() as nursery:
            stream = await tcp_server(nursery, svc, idle_timeout=100)
            reader = rpc.RecordReader(1 << 20)
            start = trio.current_time()
            for i in range(30):  # 30 calls, 60 s apart: busy for 1800 s
                await stream.send_all(rpc.encode_record(call(i, 1, i)))
                assert [value_of(r) for r in await replies(stream, reader, 1)] == [(i, i)]
                await trio.sleep(60)
            with trio.fail_after(1000):
                assert await stream.receive_some(100) == b""  # closed once idle
            idle = trio.current_time() - start - 30 * 60
            nursery.cancel_scope.cancel()
        assert 100 - 60 <= idle <= 100 + 100 / 16 + 1
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_client_that_takes_no_replies_is_cut_off_after_the_send_timeout():
    svc = Service()

    async def main():
        async with trio.open_nursery() as nursery:
            stream = await tcp_server(nursery, svc, send_timeout=30, idle_timeout=10**6)
            calls = b"".join(rpc.encode_record(call(i, 4)) for i in range(400))  # 24 MB of replies
            await stream.send_all(calls)
            await trio.sleep(1000)  # taking no replies meanwhile
            total = 0
            with trio.fail_after(1000):
                while True:  # what was sent before the cut, then the end
                    data = await stream.receive_some(1 << 20)
                    if not data:
                        break
                    total += len(data)
            nursery.cancel_scope.cancel()
            return total
    total = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert 0 < total < 400 * 60000
