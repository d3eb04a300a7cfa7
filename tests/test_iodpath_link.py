"""The metaserver's side of an iod link, at the byte level: request frames
queued together leave in order, with their sequence numbers in order, in as
few system calls as the socket takes; answers are found in any fragmentation
of the stream, however large; a Gathering wakes its task once. And the table
of forwarded requests that may still be answered with an error.

The link runs on one end of a real socket pair; the test plays the iod on the
other end with the protocol's own codec (common/iodproto.py), so what is
checked is exactly what an iod receives and what it may send.
"""

import functools
import itertools
import os
import random
import socket

import pytest
import trio

from common import iodproto
from common.iodproto import Keys, Op
from nfspd.iodlink import Gathering, IodLink
from nfspd.iodpath import IodDataPath
from nfspd.layouts import Layouts

KEYS = Keys.single(os.urandom(32))


class FakeIod:
    """The far end of the socket pair, speaking iodproto."""

    def __init__(self, sock):
        self.sock = trio.socket.from_stdlib_socket(sock)
        self.reader = iodproto.FrameReader()
        self.frames = []
        self.receives = 0

    async def receive(self, n):
        """The next n request frames, decoded."""
        while len(self.frames) < n:
            data = await self.sock.recv(1 << 22)
            assert data, "link closed"
            self.receives += 1
            self.frames += self.reader.feed(data)
        got, self.frames = self.frames[:n], self.frames[n:]
        return [iodproto.decode(f, KEYS) for f in got]

    async def send_fragmented(self, data, rng):
        """``data`` in pieces of 1 byte to 300 KiB, with pauses between."""
        pos = 0
        while pos < len(data):
            n = rng.choice([1, 3, 11, 12, 13, 4096, 65536, 300 << 10])
            await self.send_all(data[pos:pos + n])
            pos += n
            if rng.random() < 0.3:
                await trio.sleep(0.001)

    async def send_all(self, data):
        view = memoryview(data)
        while view:
            view = view[await self.sock.send(view):]


async def _with_link(test):
    a, b = socket.socketpair()
    a.setblocking(False)
    link = IodLink(0, "127.0.0.1", 9, KEYS, itertools.count(1000))
    link.up, link._stream = True, a
    iod = FakeIod(b)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link._writer, a)
            nursery.start_soon(link._receive, a)
            with trio.fail_after(30):
                await test(link, iod)
            nursery.cancel_scope.cancel()
    finally:
        a.close()
        b.close()


def test_queued_frames_leave_together_in_order_with_their_sequence_numbers_in_order():
    async def submit_all(link, frames):
        gathering = Gathering(len(frames))
        slots = []
        for make in frames:
            msg_id = link.next_id()
            slots.append(await link.submit(msg_id, functools.partial(make, msg_id), gathering))
        return slots

    async def test(link, iod):
        # 40 READs queued before the writer runs (nothing here waits): they
        # leave in one system call, and the iod reads them in one.
        reads = [functools.partial(link.signer.read, ino=1, seed=2, offset=i << 16, count=9)
                 for i in range(40)]
        slots = await submit_all(link, reads)
        frames = await iod.receive(40)
        assert iod.receives == 1
        assert [f.id for f in frames] == [s.id for s in slots]
        # One sequence, in submission order, from the link's own sender.
        assert {f.stamp.sender for f in frames} == {link.sequencer.sender}
        assert [f.stamp.seq for f in frames] == list(range(1, 41))
        assert [f.offset for f in frames] == [i << 16 for i in range(40)]
        # WRITEs among them, their data gathered by sendmsg rather than joined
        # (and sent in several calls once the socket buffer is full).
        data = os.urandom(3 << 20)
        mixed = [functools.partial(link.signer.write_parts, ino=1, seed=2, offset=i << 20,
                                   data=memoryview(data)[i << 20:(i + 1) << 20], stable=False)
                 if i % 2 else functools.partial(link.signer.read, ino=1, seed=2,
                                                 offset=i << 20, count=9)
                 for i in range(6)]
        slots += await submit_all(link, mixed)
        frames = await iod.receive(6)
        assert [f.id for f in frames] == [s.id for s in slots[40:]]
        assert [f.stamp.seq for f in frames] == list(range(41, 47))
        for i, f in enumerate(frames):
            assert f.op == (Op.WRITE if i % 2 else Op.READ) and f.offset == i << 20
            if i % 2:
                assert f.data == data[i << 20:(i + 1) << 20]
        assert link.requests == 46
        for slot in slots:
            link.release(slot)

    trio.run(_with_link, test)


def test_answers_are_found_whatever_the_fragmentation_and_wake_the_gatherer_once():
    rng = random.Random(7)

    async def test(link, iod):
        sizes = [0, 1, 5, 4096, 65536, 1 << 20, 3, 1 << 20, 77777, 12]
        gathering = Gathering(len(sizes))
        slots = []
        for n in sizes:
            msg_id = link.next_id()
            slots.append(await link.submit(msg_id, functools.partial(
                link.signer.read, msg_id, 1, 2, 0, n), gathering))
        requests = await iod.receive(len(sizes))
        answers = {r.id: os.urandom(r.count) for r in requests}
        stream = b"".join(iodproto.encode(iodproto.reply(r, data=answers[r.id]), KEYS)
                          for r in reversed(requests))
        await iod.send_fragmented(stream, rng)
        await gathering.event.wait()
        assert all(slot.done for slot in slots)
        assert [link.answer(s).data or b"" for s in slots] == [answers[s.id] for s in slots]
        for slot in slots:
            link.release(slot)
        # The buffer grew for the MiB answers and still takes small ones.
        msg_id = link.next_id()
        slot = await link.submit(msg_id, functools.partial(link.signer.commit, msg_id, 1, 2))
        (commit,) = await iod.receive(1)
        await iod.send_fragmented(iodproto.encode(iodproto.reply(commit), KEYS), rng)
        await slot.event.wait()
        assert link.answer(slot).status == 0
        link.release(slot)

    trio.run(_with_link, test)


def test_a_failed_answer_wakes_the_gatherer_before_the_others():
    async def test(link, iod):
        gathering = Gathering(3)
        slots = []
        for _ in range(3):
            msg_id = link.next_id()
            slots.append(await link.submit(msg_id, functools.partial(
                link.signer.read, msg_id, 1, 2, 0, 10), gathering))
        requests = await iod.receive(3)
        failed = iodproto.reply(requests[1], status=5, message="EIO")
        await iod.send_all(iodproto.encode(failed, KEYS))
        await gathering.event.wait()
        assert [s.done for s in slots] == [False, True, False]
        assert link.answer(slots[1]).status == 5
        # A duplicate answer (a buggy or replaying peer) changes nothing.
        await iod.send_all(iodproto.encode(iodproto.reply(requests[1]), KEYS))
        await iod.send_all(iodproto.encode(iodproto.reply(requests[0]), KEYS))
        while not slots[0].done:
            await trio.sleep(0.001)
        assert link.answer(slots[1]).status == 5 and gathering.pending == 1
        for slot in slots:
            link.release(slot)

    trio.run(_with_link, test)


def test_a_frame_that_does_not_verify_takes_the_link_down():
    async def test(link, iod):
        msg_id = link.next_id()
        slot = await link.submit(msg_id, functools.partial(link.signer.commit, msg_id, 1, 2))
        (commit,) = await iod.receive(1)
        frame = bytearray(iodproto.encode(iodproto.reply(commit), KEYS))
        frame[-1] ^= 1
        await iod.send_all(bytes(frame))
        while link._lost is None:
            await trio.sleep(0.001)
        assert "bad frame" in link._lost and not slot.done
        link.release(slot)

    trio.run(_with_link, test)


# --- forwarded requests that may still be answered with an error --------------


@pytest.fixture
def datapath():
    dp = IodDataPath(Layouts({1: [("127.0.0.1", 9)]}), KEYS, 65536, max_forwards=6)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    dp._fwd_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dp.links[0].udp_addr = sink.getsockname()
    yield dp
    dp._fwd_sock.close()
    sink.close()


def test_the_forward_table_keeps_the_latest_forwards_each_answerable_once(datapath):
    dp, link = datapath, datapath.links[0]
    errors = {}
    ids = list(range(100, 120))
    for i in ids:
        assert dp._send_forward(link, i, b"frame %d" % i, ("10.0.0.1", i), ("10.0.0.9", 2049),
                                functools.partial(errors.setdefault, i))
    assert len(dp._ring_id) == 8 and link.requests == 20     # 6 rounded up to a power of 2
    for i in ids[:-8]:
        assert dp._forward_entry(i) is None                  # overwritten by newer ones
    for i in ids[-8:]:
        expires, client, local, on_error = dp._forward_entry(i)
        assert client == ("10.0.0.1", i) and local == ("10.0.0.9", 2049)
        on_error("x")
        assert dp._forward_entry(i) is None                  # answered once only
    assert sorted(errors) == ids[-8:]
    # An id that lands in a live slot but is not its id finds nothing.
    dp._send_forward(link, 200, b"f", ("10.0.0.1", 1), ("10.0.0.9", 2049), print)
    assert dp._forward_entry(208) is None and dp._forward_entry(200) is not None


def test_an_expired_forward_is_not_answered(datapath):
    dp, link = datapath, datapath.links[0]
    dp.forward_ttl = 0.0
    dp._send_forward(link, 5, b"f", ("10.0.0.1", 1), ("10.0.0.9", 2049), print)
    assert dp._forward_entry(5) is None


def test_a_forwarded_write_leaves_as_one_datagram_of_its_frame(datapath):
    dp, link = datapath, datapath.links[0]
    parts = dp.signer.write_parts(9, 1, 2, 3, memoryview(os.urandom(30000)), False,
                                  ("10.0.0.1", 1), ("10.0.0.9", 2049), b"reply")
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    link.udp_addr = rx.getsockname()
    try:
        assert dp._send_forward(link, 9, parts, ("10.0.0.1", 1), ("10.0.0.9", 2049), print)
        rx.settimeout(5)
        datagram = rx.recv(65536)
        assert datagram == b"".join(parts) and link.bytes_out == len(datagram)
        msg = iodproto.decode(datagram, KEYS)
        assert msg.op == Op.WRITE and msg.id == 9 and len(msg.data) == 30000
    finally:
        rx.close()


def test_each_answer_to_a_forward_ends_it_once_whatever_it_says(datapath):
    """The iod answers a forwarded WRITE once its data is in (or with the
    error): either way ``done`` is called, once, even for an answer that came
    after the forward expired; an answer to no live forward calls nothing."""
    dp, link = datapath, datapath.links[0]
    dp._fwd_sock.bind(("127.0.0.1", 0))
    dp._fwd_sock.setblocking(False)
    ended = []
    failed = {}
    for i in (1, 2, 3):
        dp._send_forward(link, i, b"f", ("10.0.0.1", 1), ("10.0.0.9", 2049),
                         lambda code, message, i=i: failed.setdefault(i, code),
                         functools.partial(ended.append, i))
    dp._ring_expires[3 & dp._ring_mask] = 0.0        # forward 3 expired before its answer
    iod = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    iod.bind(("127.0.0.1", 0))

    def answer(msg_id, status=0):
        msg = iodproto.Message(Op.REPLY, msg_id, status=status)
        iod.sendto(iodproto.encode(msg, KEYS), dp._fwd_sock.getsockname())

    async def main():
        async with trio.open_nursery() as n:
            n.start_soon(dp._receive_forward_answers)
            answer(1)
            answer(1)                      # a duplicate: nothing more
            answer(2, status=28)           # ENOSPC
            answer(3)
            answer(99)                     # no such forward
            with trio.fail_after(10):
                while len(ended) < 3 or not failed:
                    await trio.sleep(0.01)
            n.cancel_scope.cancel()
    try:
        trio.run(main)
    finally:
        iod.close()
    assert sorted(ended) == [1, 2, 3]
    assert failed == {2: 28}               # the error answered the client too


def test_the_forward_ttl_outlasts_the_age_at_which_iods_refuse_a_forward():
    # Past the TTL a truncation no longer waits for a forwarded WRITE: the
    # iod must refuse it by then.
    with pytest.raises(ValueError, match="FORWARD_MAX_AGE"):
        IodDataPath(Layouts({1: [("127.0.0.1", 9)]}), KEYS, 65536,
                    forward_ttl=iodproto.FORWARD_MAX_AGE)
