"""A relayed READ's data as the REPLY's trailer (iod protocol version 2,
common/iodproto.py): the frame's bytes, what the MAC covers and what it does
not, hostile and truncated frames refused cleanly, the metaserver's link
receiving the trailer straight into the caller's buffer, and the data path
putting every piece of a READ across stripes where it belongs (zeros where an
iod sends less). The real iods and nfspd relaying across stripe boundaries
and past EOF: tests/test_datapath_e2e.py (NFSv3 over TCP)."""

import errno
import functools
import hashlib
import hmac
import os
import random
import struct
import types

import msgpack
import pytest
import trio

from common import iodproto, striping
from common.iodproto import FrameReader, IodProtoError, Keys, Message, Op
from nfspd.iodframes import Verifier
from nfspd.iodpath import IodDataPath
from nfspd.layouts import Layouts
from tests.test_iodpath_link import KEYS, _with_link

HEADER = struct.Struct(">4sBBHII")


def read_reply(data, msg_id=7, verifier=None):
    return Message(Op.REPLY, msg_id, status=0, data=data, verifier=verifier)


def mac(keys, signed):
    return hmac.new(keys.current, signed, hashlib.sha256).digest()


# --- the codec -----------------------------------------------------------------------


def test_a_reply_frame_is_header_body_mac_then_the_data_byte_for_byte():
    data = os.urandom(1000)
    frame = iodproto.encode(read_reply(data, verifier=b"v" * 8), KEYS)
    magic, version, key_id, flags, body_len, data_len = HEADER.unpack_from(frame)
    assert (magic, version, key_id, flags, data_len) == (b"NFSi", 2, 0, 0, 1000)
    signed = frame[:16 + body_len]
    assert msgpack.unpackb(signed[16:]) == {"op": 9, "id": 7, "status": 0,
                                            "verifier": b"v" * 8, "files": None,
                                            "cursor": None, "message": ""}
    assert frame[16 + body_len:16 + body_len + 32] == mac(KEYS, signed)
    assert frame[16 + body_len + 32:] == data
    assert iodproto.frame_sizes(frame[:16]) == (16 + body_len + 32, 1000)
    assert iodproto.decode(frame, KEYS) == read_reply(data, verifier=b"v" * 8)


def test_encode_head_is_the_frame_the_iod_sends_its_sendfile_after():
    data = os.urandom(4097)
    head = iodproto.encode_head(read_reply(None), len(data), KEYS)
    assert head + data == iodproto.encode(read_reply(data), KEYS)
    with pytest.raises(IodProtoError):
        iodproto.encode_head(read_reply(b"x"), 1, KEYS)          # data given twice
    with pytest.raises(IodProtoError):
        iodproto.encode_head(Message(Op.COMMIT, 1, ino=1, seed=1), 1, KEYS)
    with pytest.raises(IodProtoError):
        iodproto.encode_head(read_reply(None), iodproto.MAX_DATA + 1, KEYS)


def test_replies_without_data_have_no_trailer_and_decode_data_none():
    for data in (None, b""):
        frame = iodproto.encode(read_reply(data), KEYS)
        assert HEADER.unpack_from(frame)[5] == 0
        assert iodproto.decode(frame, KEYS).data is None


def test_the_mac_covers_the_length_of_the_data_but_not_its_bytes():
    """The decision (common/iodproto.py): a changed data byte is the data
    path's integrity, as on every hop to an NFS client; a changed length, or
    anything in the header or body, is refused."""
    data = b"0123456789"
    frame = bytearray(iodproto.encode(read_reply(data), KEYS))
    changed = bytearray(frame)
    changed[-1] ^= 1
    assert iodproto.decode(bytes(changed), KEYS).data == b"012345678" + bytes([ord("9") ^ 1])
    longer = bytearray(frame)
    struct.pack_into(">I", longer, 12, 11)
    with pytest.raises(IodProtoError) as e:
        iodproto.decode(bytes(longer) + b"!", KEYS)
    assert e.value.reason == "bad_mac"
    for i in range(0, len(frame) - len(data)):
        bad = bytearray(frame)
        bad[i] ^= 0x40
        with pytest.raises(IodProtoError):
            iodproto.decode(bytes(bad), KEYS)


def signed_frame(body, data=b"", keys=KEYS, version=2):
    packed = msgpack.packb(body, use_bin_type=True)
    header = HEADER.pack(b"NFSi", version, keys.current_id, 0, len(packed), len(data))
    return header + packed + mac(keys, header + packed) + data


def test_a_trailer_on_anything_but_a_reply_is_refused():
    commit = {"op": 5, "id": 1, "ino": 1, "seed": 1}
    assert iodproto.decode(signed_frame(commit), KEYS).op == Op.COMMIT
    with pytest.raises(IodProtoError, match="only a REPLY"):
        iodproto.decode(signed_frame(commit, b"xyz"), KEYS)
    pong = {"op": 2, "id": 1, "version": "1", "uptime": 1.0, "free": 1, "total": 2,
            "verifier": bytes(8)}
    with pytest.raises(IodProtoError, match="only a REPLY"):
        iodproto.decode(signed_frame(pong, b"xyz"), KEYS)
    with pytest.raises(IodProtoError, match="only a REPLY"):
        Verifier(KEYS).decode(signed_frame(pong, b"xyz"))


def test_a_reply_with_its_data_in_the_body_is_refused():
    body = {"op": 9, "id": 1, "status": 0, "data": b"abc"}
    with pytest.raises(IodProtoError, match="after the MAC"):
        iodproto.decode(signed_frame(body), KEYS)
    with pytest.raises(IodProtoError, match="after the MAC"):
        Verifier(KEYS).decode(signed_frame(body))


def test_oversized_data_is_refused_from_the_header_alone():
    header = HEADER.pack(b"NFSi", 2, 0, 0, 10, iodproto.MAX_DATA + 1)
    with pytest.raises(IodProtoError, match="exceeds"):
        FrameReader().feed(header)
    with pytest.raises(IodProtoError, match="exceeds"):
        iodproto.frame_sizes(header)


def test_a_version_1_peer_is_refused_with_a_message_that_says_so():
    # Version 1's 12-byte header, as an older nfspd, unlinkd or iod sends it.
    packed = msgpack.packb({"op": 5, "id": 1, "ino": 1, "seed": 1})
    old = struct.pack(">4sBBHI", b"NFSi", 1, 0, 0, len(packed)) + packed + bytes(32)
    for refuse in (FrameReader().feed, lambda f: iodproto.decode(f, KEYS),
                   Verifier(KEYS).decode):
        with pytest.raises(IodProtoError, match="version 1 .* speaks version 2.*together"):
            refuse(old)


@pytest.mark.parametrize("cut", [1, 15, 16, 40, -33, -1])
def test_truncated_frames_are_refused(cut):
    frame = iodproto.encode(read_reply(b"d" * 100), KEYS)
    with pytest.raises(IodProtoError):
        iodproto.decode(frame[:cut], KEYS)
    with pytest.raises(IodProtoError):
        Verifier(KEYS).decode(frame[:cut])
    with pytest.raises(IodProtoError):
        iodproto.decode(frame + b"x", KEYS)


def test_the_stream_reader_splits_frames_with_trailers_byte_by_byte():
    frames = [iodproto.encode(read_reply(os.urandom(n), msg_id=n), KEYS)
              for n in (0, 1, 3, 4096)]
    frames.insert(2, iodproto.encode(Message(Op.COMMIT, 1, ino=1, seed=2), KEYS))
    stream = b"".join(frames)
    reader, out = FrameReader(), []
    for i in range(len(stream)):
        out += reader.feed(stream[i:i + 1])
    assert out == frames


def test_the_metaservers_verifier_decodes_what_the_codec_does():
    v = Verifier(KEYS)
    for data in (None, b"x", os.urandom(70000)):
        frame = iodproto.encode(read_reply(data, verifier=b"12345678"), KEYS)
        assert v.decode(frame) == iodproto.decode(frame, KEYS)
        signed, n = iodproto.frame_sizes(frame[:16])
        head = v.decode_signed(memoryview(frame)[:signed])
        assert head.data is None and head.verifier == b"12345678"
        with pytest.raises(IodProtoError):
            v.decode_signed(frame[:signed - 1])
    other = Keys.single(b"o" * 32)
    with pytest.raises(IodProtoError) as e:
        v.decode(iodproto.encode(read_reply(b"abc"), other))
    assert e.value.reason == "bad_mac"


def test_a_reads_further_ranges_are_packed_extents_bounded_in_number():
    more = iodproto.pack_extents([(1 << 40, 7), (0, 65536)])
    assert more == struct.pack(">QIQI", 1 << 40, 7, 0, 65536)
    assert iodproto.extents(more) == [(1 << 40, 7), (0, 65536)]
    r = Message(Op.READ, 1, ino=1, seed=2, offset=3, count=4, more=more)
    assert iodproto.decode(iodproto.encode(r, KEYS), KEYS) == r
    body = {"op": 3, "id": 1, "ino": 1, "seed": 1, "offset": 0, "count": 1}
    for bad in (b"x" * 11, bytes(iodproto.EXTENT.size * (iodproto.MAX_EXTENTS + 1)), [1, 2]):
        with pytest.raises(IodProtoError):
            iodproto.decode(signed_frame(dict(body, more=bad)), KEYS)


# --- the link: the trailer received where the caller said ------------------------------


def test_trailers_land_in_their_sinks_whatever_the_fragmentation():
    rng = random.Random(14)

    async def test(link, iod):
        sizes = [1, 4096, 65536, 1 << 20, 3, 77777]
        buffers = [bytearray(n) for n in sizes]
        slots = []
        for n, buf in zip(sizes, buffers):
            msg_id = link.next_id()
            slots.append(await link.submit(
                msg_id, functools.partial(link.signer.read, msg_id, 1, 2, 0, n),
                sink=[memoryview(buf)[:n // 3], memoryview(buf)[n // 3:]]))
        requests = await iod.receive(len(sizes))
        answers = {r.id: os.urandom(r.count) for r in requests}
        stream = b"".join(iodproto.encode(iodproto.reply(r, data=answers[r.id]), KEYS)
                          for r in reversed(requests))
        await iod.send_fragmented(stream, rng)
        for slot, buf in zip(slots, buffers):
            await slot.event.wait()
            data = link.answer(slot).data
            assert all(view.obj is buf for view in data)
            assert bytes(buf) == answers[slot.id]
            link.release(slot)

    trio.run(_with_link, test)


def test_a_trailer_larger_than_its_sink_stays_out_of_it():
    async def test(link, iod):
        buf = bytearray(b"-" * 8)
        msg_id = link.next_id()
        slot = await link.submit(msg_id, functools.partial(link.signer.read, msg_id, 1, 2, 0, 8),
                                 sink=[memoryview(buf)])
        (read,) = await iod.receive(1)
        await iod.send_all(iodproto.encode(iodproto.reply(read, data=b"0123456789"), KEYS))
        await slot.event.wait()
        assert link.answer(slot).data == b"0123456789" and buf == b"-" * 8
        link.release(slot)

    trio.run(_with_link, test)


def test_an_iod_speaking_version_1_takes_the_link_down_with_a_clear_reason():
    async def test(link, iod):
        packed = msgpack.packb({"op": 9, "id": 1, "status": 0})
        await iod.send_all(struct.pack(">4sBBHI", b"NFSi", 1, 0, 0, len(packed)) + packed
                           + bytes(32))
        while link._lost is None:
            await trio.sleep(0.001)
        assert "version 1" in link._lost and "upgraded together" in link._lost

    trio.run(_with_link, test)


def test_an_iod_closing_before_answering_anything_is_suspected_of_another_version():
    async def test(link, iod):
        iod.sock.close()   # what an iod refusing our version's first frame does
        while link._lost is None:
            await trio.sleep(0.001)
        assert "another iod protocol version" in link._lost

    trio.run(_with_link, test)


# --- the data path: a READ across stripes, into one buffer -----------------------------


def relay_read(size, offset, count, answer, n_iods=3, unit=16):
    """IodDataPath.read of a file of ``size`` bytes over ``n_iods`` with the
    iods' answers made by ``answer(pieces) -> data`` for the pieces one READ
    asks of one iod (bytes, None, or "sink": the right bytes received into
    the sinks, as the link does). Returns the data and the READs: [(iod,
    [Piece, ...]), ...]."""
    layouts = Layouts({1: [("127.0.0.1", 9 + i) for i in range(n_iods)]})
    dp = IodDataPath(layouts, KEYS, unit)
    meta = types.SimpleNamespace(layout_gen=1, size=size, stripe_unit=unit, seed=1)
    reads = []

    async def gather(requests, timeout, what, sinks=None):
        replies = []
        for (link, msg_id, make), sink in zip(requests, sinks):
            msg = iodproto.decode(make(stamp=[1, 1, 1.0]), KEYS)
            ranges = [(msg.offset, msg.count)] + iodproto.extents(msg.more)
            pieces = [striping.Piece(link.index, o, n) for o, n in ranges]
            assert [len(v) for v in sink] == [n for _, n in ranges]
            reads.append((link.index, pieces))
            data = answer(pieces)
            if data == "sink":
                for p, v in zip(pieces, sink):
                    v[:] = CONTENT[p.offset:p.offset + p.length]
                data = list(sink)
            replies.append(Message(Op.REPLY, msg_id, status=0, data=data)
                           if type(data) is not list else _with_data(msg_id, data))
        return replies

    dp._gather = gather
    return trio.run(dp.read, meta, 5, offset, count), reads


def _with_data(msg_id, views):
    msg = Message(Op.REPLY, msg_id, status=0)
    msg.data = views   # what the link gives: the sink's views it filled
    return msg


def joined(pieces):
    return b"".join(CONTENT[p.offset:p.offset + p.length] for p in pieces)


CONTENT = bytes(range(256)) * 4


@pytest.mark.parametrize("offset, count", [(0, 100), (5, 40), (15, 2), (16, 16), (30, 900)])
def test_a_read_across_stripes_asks_each_iod_once_and_puts_every_piece_in_its_place(
        offset, count):
    size = 100
    end = min(size, offset + count)
    got, reads = relay_read(size, offset, count, lambda pieces: "sink")
    assert got == CONTENT[offset:end]
    # One READ per iod holding part of it, its stripes in file order.
    stripes = range(offset // 16, (end - 1) // 16 + 1)
    assert sorted(iod for iod, _ in reads) == sorted({(1 + s) % 3 for s in stripes})
    assert sorted(p.offset for _, pieces in reads for p in pieces) == \
        [max(offset, s * 16) for s in stripes]
    copied, _ = relay_read(size, offset, count, joined)
    assert copied == got


def test_what_an_iod_does_not_send_reads_as_zeros_and_nothing_past_the_end():
    def short(pieces):
        return None if pieces[0].iod == 1 else joined(pieces)[:-1]

    got, reads = relay_read(60, 10, 1000, short)
    assert len(got) == 50
    for iod, pieces in reads:
        want = bytes(sum(p.length for p in pieces)) if iod == 1 else joined(pieces)[:-1] + b"\0"
        assert b"".join(got[p.offset - 10:p.offset - 10 + p.length] for p in pieces) == want
    assert relay_read(60, 60, 10, short)[0] == b""


def test_an_iod_sending_more_than_asked_is_an_io_error():
    with pytest.raises(OSError) as e:
        relay_read(100, 0, 100, lambda pieces: joined(pieces) + b"!")
    assert e.value.errno == errno.EIO


def test_more_stripes_than_one_read_may_name_take_several_reads():
    unit, n = 4, 2
    size = unit * n * (iodproto.MAX_EXTENTS + 10)
    content = os.urandom(size)

    def answer(pieces):
        return b"".join(content[p.offset:p.offset + p.length] for p in pieces)

    got, reads = relay_read(size, 0, size, answer, n_iods=n, unit=unit)
    assert got == content
    assert sorted(len(pieces) for _, pieces in reads) == [9, 9, iodproto.MAX_EXTENTS + 1,
                                                          iodproto.MAX_EXTENTS + 1]
