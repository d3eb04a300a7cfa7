"""nfspd/iodframes.py's frames are byte for byte those of iodproto.encode,
and decode to the same messages."""

import os

from hypothesis import given
from hypothesis import strategies as st

from common import iodproto
from common.iodproto import Keys, Message, Op
from nfspd.iodframes import Signer

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
