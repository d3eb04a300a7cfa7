"""The iod protocol: authenticated msgpack frames, validated field by field."""

import struct

import msgpack
import pytest
from hypothesis import given, strategies as st

from common import iodproto
from common.iodproto import FrameReader, IodProtoError, Keys, Message, Op

KEYS = Keys.single(b"k" * 32)


def sample(op):
    return {
        Op.PING: Message(Op.PING, 1, spoof_from=("10.0.0.1", 2049)),
        Op.PONG: Message(Op.PONG, 1, version="0.1", uptime=1.5, free=10, total=20, verifier=b"v" * 8),
        Op.READ: Message(Op.READ, 2, ino=5, seed=2**63, offset=0, count=4096,
                         client=("10.0.0.9", 700), source=("10.0.0.1", 2049), head=b"h" * 100),
        Op.WRITE: Message(Op.WRITE, 3, ino=5, seed=9, offset=8192, data=b"d" * 1000, stable=True,
                          client=None, source=None, reply=None),
        Op.COMMIT: Message(Op.COMMIT, 4, ino=5, seed=9),
        Op.TRUNCATE: Message(Op.TRUNCATE, 5, ino=5, seed=9, size=0),
        Op.PURGE: Message(Op.PURGE, 6, files=[(1, 2), (3, 4)]),
        Op.LIST: Message(Op.LIST, 7, cursor=None),
        Op.REPLY: Message(Op.REPLY, 8, status=28, message="No space left on device"),
    }[op]


@pytest.mark.parametrize("op", list(Op))
def test_every_message_round_trips(op):
    msg = sample(op)
    assert iodproto.decode(iodproto.encode(msg, KEYS), KEYS) == msg


def test_frame_layout():
    frame = iodproto.encode(sample(Op.COMMIT), KEYS)
    magic, version, key_id, flags, body_len = struct.unpack(">4sBBHI", frame[:12])
    assert (magic, version, key_id, flags) == (b"NFSi", 1, 0, 0)
    assert len(frame) == 12 + body_len + 32
    assert msgpack.unpackb(frame[12:-32]) == {"op": 5, "id": 4, "ino": 5, "seed": 9}


def test_a_frame_signed_with_another_key_is_rejected():
    frame = iodproto.encode(sample(Op.PURGE), Keys.single(b"x" * 32))
    with pytest.raises(IodProtoError, match="authentication"):
        iodproto.decode(frame, KEYS)


def test_any_flipped_bit_is_rejected():
    frame = bytearray(iodproto.encode(sample(Op.WRITE), KEYS))
    for i in (0, 5, 12, len(frame) // 2, len(frame) - 1):
        bad = bytearray(frame)
        bad[i] ^= 1
        with pytest.raises(IodProtoError):
            iodproto.decode(bytes(bad), KEYS)


def test_key_rotation_accepts_old_and_new_keys():
    old, new = Keys.single(b"o" * 32, 1), Keys.single(b"n" * 32, 2)
    both = Keys((2, b"n" * 32), [(1, b"o" * 32)])
    for signer in (old, new):
        assert iodproto.decode(iodproto.encode(sample(Op.PING), signer), both) == sample(Op.PING)


def test_oversized_frames_are_refused_from_the_header():
    header = struct.pack(">4sBBHI", b"NFSi", 1, 0, 0, iodproto.MAX_BODY + 1)
    with pytest.raises(IodProtoError, match="exceeds"):
        FrameReader().feed(header)


def signed(body):
    packed = msgpack.packb(body, use_bin_type=True)
    import hashlib
    import hmac
    header = struct.pack(">4sBBHI", b"NFSi", 1, 0, 0, len(packed))
    return header + packed + hmac.new(b"k" * 32, header + packed, hashlib.sha256).digest()


@pytest.mark.parametrize("body", [
    [1, 2, 3],
    {"op": 99, "id": 1},
    {"op": 6, "id": 1, "ino": 1, "seed": 1},                       # TRUNCATE without size
    {"op": 6, "id": 1, "ino": -1, "seed": 1, "size": 0},           # negative inode
    {"op": 6, "id": 1, "ino": 1, "seed": 1, "size": 0, "x": 1},    # unknown field
    {"op": 3, "id": 1, "ino": 1, "seed": 1, "offset": 0, "count": 1, "client": ["a"]},
    {"op": 7, "id": 1, "files": [[1]]},
])
def test_authentic_but_malformed_bodies_are_rejected(body):
    with pytest.raises(IodProtoError):
        iodproto.decode(signed(body), KEYS)


def test_stream_reassembly_byte_by_byte():
    frames = [iodproto.encode(sample(op), KEYS) for op in Op]
    stream = b"".join(frames)
    reader, out = FrameReader(), []
    for i in range(len(stream)):
        out += reader.feed(stream[i:i + 1])
    assert out == frames


@given(st.binary(max_size=300))
def test_garbage_only_ever_raises_iodproto_error(blob):
    try:
        iodproto.decode(blob, KEYS)
    except IodProtoError:
        pass


@given(st.binary(max_size=200))
def test_authentic_garbage_bodies_only_ever_raise_iodproto_error(blob):
    import hashlib
    import hmac
    header = struct.pack(">4sBBHI", b"NFSi", 1, 0, 0, len(blob))
    frame = header + blob + hmac.new(b"k" * 32, header + blob, hashlib.sha256).digest()
    try:
        iodproto.decode(frame, KEYS)
    except IodProtoError:
        pass
