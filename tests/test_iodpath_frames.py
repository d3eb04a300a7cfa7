"""nfspd/iodframes.py's frames are byte for byte those of iodproto.encode,
and decode to the same messages; its Verifier decodes what iodproto.decode
does and refuses what it refuses."""

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import iodproto
from common.iodproto import BadMac, IodProtoError, Keys, Message, Op
from nfspd.iodframes import Signer, Verifier

u64 = st.integers(0, (1 << 64) - 1)
addr = st.one_of(st.none(), st.tuples(st.sampled_from(["127.0.0.1", "10.1.2.3"]),
                                      st.integers(0, 65535)))


def same(signer, keys, frame, msg):
    assert frame == iodproto.encode(msg, keys)
    assert iodproto.decode(frame, keys) == msg


@given(st.binary(min_size=1, max_size=100), st.integers(0, 255), u64, u64, u64, u64, u64,
       addr, addr, st.binary(max_size=200))
def test_read_and_ping(key, key_id, msg_id, ino, seed, offset, count, client, source, head):
    keys = Keys((key_id, key))
    s = Signer(keys)
    same(s, keys, s.read(msg_id, ino, seed, offset, count, client, source, head),
         Message(Op.READ, msg_id, ino=ino, seed=seed, offset=offset, count=count,
                 client=client, source=source, head=head))
    same(s, keys, s.ping(msg_id), Message(Op.PING, msg_id))


@given(u64, u64, u64, st.binary(max_size=3000), st.booleans(), addr,
       st.one_of(st.none(), st.binary(max_size=300)))
def test_write_commit_truncate_purge(msg_id, ino, seed, data, stable, client, reply):
    keys = Keys((3, os.urandom(32)), [(4, os.urandom(32))])
    s = Signer(keys)
    same(s, keys, s.write(msg_id, ino, seed, 7, data, stable, client, client, reply),
         Message(Op.WRITE, msg_id, ino=ino, seed=seed, offset=7, data=data, stable=stable,
                 client=client, source=client, reply=reply))
    # A slice of a larger buffer is sent without copying it first.
    big = b"x" + data + b"y"
    assert s.write(msg_id, ino, seed, 7, memoryview(big)[1:-1], stable) == \
        s.write(msg_id, ino, seed, 7, data, stable)
    same(s, keys, s.commit(msg_id, ino, seed), Message(Op.COMMIT, msg_id, ino=ino, seed=seed))
    same(s, keys, s.truncate(msg_id, ino, seed, 12), Message(Op.TRUNCATE, msg_id, ino=ino,
                                                             seed=seed, size=12))
    same(s, keys, s.purge(msg_id, [(ino, seed), (1, 2)]),
         Message(Op.PURGE, msg_id, files=[(ino, seed), (1, 2)]))


def test_a_key_longer_than_a_block_is_hashed_first_as_rfc2104_says():
    keys = Keys.single(os.urandom(100))
    s = Signer(keys)
    same(s, keys, s.commit(1, 2, 3), Message(Op.COMMIT, 1, ino=2, seed=3))


@given(u64, st.binary(max_size=70000), st.booleans(), addr, st.one_of(st.none(), u64))
def test_write_parts_are_the_frame_of_write(msg_id, data, stable, client, seq):
    keys = Keys((9, os.urandom(32)))
    s = Signer(keys)
    stamp = None if seq is None else [5, seq, 1.7e9]
    parts = s.write_parts(msg_id, 1, 2, 3, memoryview(data), stable, client, client, b"r",
                          stamp=stamp)
    frame = b"".join(parts)
    assert frame == s.write(msg_id, 1, 2, 3, data, stable, client, client, b"r", stamp=stamp)
    assert frame == iodproto.encode(Message(Op.WRITE, msg_id, stamp, ino=1, seed=2, offset=3,
                                            data=data, stable=stable, client=client,
                                            source=client, reply=b"r"), keys)


# --- Verifier: what the metaserver decodes (REPLY, PONG) ---------------------

reply_fields = st.fixed_dictionaries({
    "status": st.integers(-(1 << 63), (1 << 64) - 1),
    "data": st.one_of(st.none(), st.binary(max_size=5000)),
    "verifier": st.one_of(st.none(), st.binary(min_size=8, max_size=8)),
    "files": st.one_of(st.none(), st.lists(st.tuples(u64, u64), max_size=5)),
    "cursor": st.one_of(st.none(), st.binary(max_size=20)),
    "message": st.text(max_size=30)})


@given(u64, reply_fields)
def test_verifier_decodes_a_reply_as_decode_does(msg_id, fields):
    keys = Keys((1, os.urandom(32)), [(2, os.urandom(32))])
    v = Verifier(keys)
    frame = iodproto.encode(Message(Op.REPLY, msg_id, **fields), keys)
    msg = v.decode(frame)
    assert msg == iodproto.decode(frame, keys) and msg.authenticated
    # The receive path hands it a view of a larger buffer.
    buf = bytearray(b"junk" + frame + b"more")
    assert v.decode(memoryview(buf)[4:4 + len(frame)]) == msg


def test_verifier_decodes_pong_and_hands_other_ops_to_decode():
    keys = Keys.single(os.urandom(32))
    v = Verifier(keys)
    pong = Message(Op.PONG, 3, version="1", uptime=1.5, free=1, total=2, verifier=b"v" * 8,
                   time=1.7e9)
    assert v.decode(iodproto.encode(pong, keys)) == pong
    read = Message(Op.READ, 4, iodproto.Stamp(1, 2, 3.0), ino=1, seed=2, offset=3, count=4)
    assert v.decode(iodproto.encode(read, keys)) == read


def _reason(fn):
    try:
        fn()
    except IodProtoError as e:
        return type(e), e.reason
    return None


@given(st.integers(0, 300), st.integers(0, 255))
def test_verifier_refuses_what_decode_refuses(position, value):
    keys = Keys((1, os.urandom(32)))
    v = Verifier(keys)
    frame = bytearray(iodproto.encode(iodproto.reply(Message(Op.PING, 7), data=b"d" * 200),
                                      keys))
    if position < len(frame):
        frame[position] = value
    frame = bytes(frame)
    expected = _reason(lambda: iodproto.decode(frame, keys))
    assert _reason(lambda: v.decode(frame)) == expected
    if expected is None:
        assert v.decode(frame) == iodproto.decode(frame, keys)


def test_verifier_refuses_unsigned_short_foreign_and_rotated_out_frames():
    keys = Keys((1, b"a" * 32))
    v = Verifier(keys)
    pong = Message(Op.PONG, 3, version="1", uptime=1.5, free=1, total=2, verifier=b"v" * 8)
    with pytest.raises(BadMac):
        v.decode(iodproto.encode(pong, None))           # unsigned: never from an iod link
    with pytest.raises(IodProtoError):
        v.decode(b"NFSi")
    other = iodproto.encode(pong, Keys((1, b"b" * 32)))
    with pytest.raises(BadMac):
        v.decode(other)
    signed = iodproto.encode(pong, keys)
    assert v.decode(signed) == pong
    keys.update(Keys((2, b"b" * 32)))                  # key 1 dropped: its frames refused
    with pytest.raises(BadMac):
        v.decode(signed)
    assert v.decode(iodproto.encode(pong, Keys((2, b"b" * 32)))) == pong
