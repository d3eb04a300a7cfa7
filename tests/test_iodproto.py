"""The iod protocol: authenticated msgpack frames, validated field by field."""

import struct

import msgpack
import pytest
from hypothesis import given, strategies as st

from common import iodproto
from common.iodproto import (FrameReader, IodProtoError, Keys, Message, Op, ReplayGuard, Stamp,
                             TokenBucket)

KEYS = Keys.single(b"k" * 32)


def sample(op):
    return {
        Op.PING: Message(Op.PING, 1, spoof_from=("10.0.0.1", 2049)),
        Op.PONG: Message(Op.PONG, 1, version="0.1", uptime=1.5, free=10, total=20, verifier=b"v" * 8,
                         ds_port=2049),
        Op.READ: Message(Op.READ, 2, ino=5, seed=2**63, offset=0, count=4096,
                         client=("10.0.0.9", 700), source=("10.0.0.1", 2049), head=b"h" * 100),
        Op.WRITE: Message(Op.WRITE, 3, ino=5, seed=9, offset=8192, data=b"d" * 1000, stable=True,
                          client=None, source=None, reply=None),
        Op.COMMIT: Message(Op.COMMIT, 4, ino=5, seed=9),
        Op.TRUNCATE: Message(Op.TRUNCATE, 5, ino=5, seed=9, size=0),
        Op.PURGE: Message(Op.PURGE, 6, files=[(1, 2), (3, 4)]),
        Op.LIST: Message(Op.LIST, 7, cursor=None),
        Op.REVOKE: Message(Op.REVOKE, 9, files=[(5, 9)], clients=["10.0.0.9", "2001:db8::1"],
                           everything=False),
        Op.REPLY: Message(Op.REPLY, 8, status=28, message="No space left on device"),
    }[op]


@pytest.mark.parametrize("op", list(Op))
def test_every_message_round_trips(op):
    msg = sample(op)
    assert iodproto.decode(iodproto.encode(msg, KEYS), KEYS) == msg


def test_frame_layout():
    frame = iodproto.encode(sample(Op.COMMIT), KEYS)
    magic, version, key_id, flags, body_len, data_len = struct.unpack(">4sBBHII", frame[:16])
    assert (magic, version, key_id, flags, data_len) == (b"NFSi", 2, 0, 0, 0)
    assert len(frame) == 16 + body_len + 32
    assert msgpack.unpackb(frame[16:-32]) == {"op": 5, "id": 4, "ino": 5, "seed": 9}


def test_a_frame_signed_with_another_key_is_rejected():
    frame = iodproto.encode(sample(Op.PURGE), Keys.single(b"x" * 32))
    with pytest.raises(IodProtoError, match="authentication") as e:
        iodproto.decode(frame, KEYS)
    assert e.value.reason == "bad_mac"


def test_any_flipped_bit_is_rejected():
    frame = bytearray(iodproto.encode(sample(Op.WRITE), KEYS))
    for i in (0, 5, 12, 15, 16, len(frame) // 2, len(frame) - 1):
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
    header = struct.pack(">4sBBHII", b"NFSi", 2, 0, 0, iodproto.MAX_BODY + 1, 0)
    with pytest.raises(IodProtoError, match="exceeds"):
        FrameReader().feed(header)


def signed(body):
    packed = msgpack.packb(body, use_bin_type=True)
    import hashlib
    import hmac
    header = struct.pack(">4sBBHII", b"NFSi", 2, 0, 0, len(packed), 0)
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
    header = struct.pack(">4sBBHII", b"NFSi", 2, 0, 0, len(blob), 0)
    frame = header + blob + hmac.new(b"k" * 32, header + blob, hashlib.sha256).digest()
    try:
        iodproto.decode(frame, KEYS)
    except IodProtoError:
        pass


# --- stamps, unsigned frames, replay protection ------------------------------------


def test_stamps_travel_inside_the_signed_body():
    msg = Message(Op.WRITE, 3, Stamp(2**64 - 1, 7, 1700000000.25), ino=1, seed=2, offset=0,
                  data=b"x", stable=False)
    frame = iodproto.encode(msg, KEYS)
    assert msgpack.unpackb(frame[16:-32])["stamp"] == [2**64 - 1, 7, 1700000000.25]
    assert iodproto.decode(frame, KEYS) == msg
    # the stamp is covered by the MAC: changing it (same length) breaks it
    forged = frame.replace(b"\x07", b"\x08", 1)
    assert forged != frame
    with pytest.raises(IodProtoError):
        iodproto.decode(forged, KEYS)


@pytest.mark.parametrize("stamp", [[1, 2], [1, 2, "t"], [-1, 2, 3.0], [1, 2, float("nan")],
                                   [1, 2, float("inf")], [1, 2, 3], "x"])
def test_malformed_stamps_are_malformed(stamp):
    with pytest.raises(IodProtoError) as e:
        iodproto.decode(signed({"op": 5, "id": 1, "stamp": stamp, "ino": 1, "seed": 1}), KEYS)
    assert e.value.reason == "malformed"


def test_unsigned_ping_and_pong_only_when_allowed():
    ping = iodproto.encode(Message(Op.PING, 9), None)
    assert ping[6:8] == b"\x00\x01" and ping[-32:] == bytes(32)
    with pytest.raises(IodProtoError) as e:
        iodproto.decode(ping, KEYS)
    assert e.value.reason == "bad_mac"
    msg = iodproto.decode(ping, KEYS, unsigned_ok=True)
    assert msg.op == Op.PING and not msg.authenticated
    assert iodproto.decode(iodproto.encode(sample(Op.PING), KEYS), KEYS).authenticated
    with pytest.raises(IodProtoError):
        iodproto.encode(sample(Op.PURGE), None)
    # An unsigned header around a PURGE body is refused even where unsigned PINGs are not.
    body = msgpack.packb({"op": 7, "id": 1, "files": [[1, 2]]})
    frame = struct.pack(">4sBBHII", b"NFSi", 2, 0, 1, len(body), 0) + body + bytes(32)
    with pytest.raises(IodProtoError) as e:
        iodproto.decode(frame, KEYS, unsigned_ok=True)
    assert e.value.reason == "bad_mac"
    # Nor may an unsigned frame carry a stamp: anyone could fill a guard.
    stamped = Message(Op.PING, 9, Stamp(1, 1, 1.0))
    with pytest.raises(IodProtoError) as e:
        iodproto.decode(iodproto.encode(stamped, None), KEYS, unsigned_ok=True)
    assert e.value.reason == "bad_mac"
    unknown_flag = bytearray(iodproto.encode(sample(Op.PING), KEYS))
    unknown_flag[7] = 2
    with pytest.raises(IodProtoError, match="flags"):
        iodproto.decode(bytes(unknown_flag), KEYS)


def test_replay_guard_accepts_each_stamp_once_within_the_window():
    g = ReplayGuard(max_skew=60, window=64)
    now = 1000.0
    for seq in (5, 3, 4, 7, 6, 70):
        g.check(Stamp(1, seq, now), now)
    for seq in (5, 3, 70):
        with pytest.raises(IodProtoError) as e:
            g.check(Stamp(1, seq, now), now)
        assert e.value.reason == "replay"
    with pytest.raises(IodProtoError, match="behind"):
        g.check(Stamp(1, 6, now), now)      # 64 or more below the newest: refused unseen
    g.check(Stamp(1, 8, now), now)          # 62 below: still accepted once
    g.check(Stamp(2, 5, now), now)          # another sender has its own numbers


def test_replay_guard_refuses_stamps_off_its_clock_by_more_than_the_skew():
    g = ReplayGuard(max_skew=60)
    g.check(Stamp(1, 1, 1059.0), 1000.0)
    g.check(Stamp(1, 2, 941.0), 1000.0)
    for when in (1061.0, 939.0):
        with pytest.raises(IodProtoError) as e:
            g.check(Stamp(1, 3, when), 1000.0)
        assert e.value.reason == "stale"
    g.check(Stamp(1, 3, 1000.0), 1000.0)   # nothing was recorded for the stale ones


def test_replay_guard_state_is_bounded_and_an_evicted_sender_stays_refused():
    g = ReplayGuard(max_skew=60, max_senders=3, not_before=900.0)
    with pytest.raises(IodProtoError, match="not known"):
        g.check(Stamp(9, 1, 899.0), 930.0)  # stamped before the iod started
    for sender in (1, 2, 3):
        g.check(Stamp(sender, 1, 1000.0 + sender), 1000.0)
    g.check(Stamp(1, 2, 1004.0), 1004.0)    # sender 1 heard again: 2 is the oldest now
    g.check(Stamp(4, 1, 1005.0), 1005.0)    # evicts 2, whose newest stamp was 1002
    assert len(g) == 3 and g.evicted == 1 and g.floor == 1002.0
    with pytest.raises(IodProtoError) as e:
        g.check(Stamp(2, 1, 1002.0), 1006.0)    # its frames replayed: refused...
    assert e.value.reason == "replay"
    g.check(Stamp(2, 2, 1006.0), 1006.0)    # ...its new ones are fine (evicting 3)
    assert g.evicted == 2 and g.floor == 1003.0
    with pytest.raises(IodProtoError) as e:     # and once readmitted, its old ones still
        g.check(Stamp(2, 1, 1002.0), 1006.0)    # not (found by the iod_replay fuzzer)
    assert e.value.reason == "replay"
    # Senders silent for longer than the skew are forgotten, not evicted:
    # all they sent is stale by then.
    g.check(Stamp(5, 1, 1100.0), 1100.0)
    assert len(g) == 1 and g.evicted == 2
    with pytest.raises(IodProtoError) as e:
        g.check(Stamp(3, 1, 1003.0), 1100.0)
    assert e.value.reason == "stale"


def test_sequencer_counts_and_adds_its_offset():
    s = iodproto.Sequencer(sender=42)
    s.offset = -2.5
    assert s.stamp(100.0) == Stamp(42, 1, 97.5)
    assert s.stamp_list(100.0) == [42, 2, 97.5]
    assert iodproto.Sequencer().sender != iodproto.Sequencer().sender


@pytest.mark.parametrize("msg, udp, needed", [
    (sample(Op.WRITE), False, True), (sample(Op.TRUNCATE), False, True),
    (sample(Op.PURGE), False, True), (sample(Op.PING), False, True),      # spoof_from
    (sample(Op.REVOKE), False, True),
    (Message(Op.PING, 1), True, False), (sample(Op.READ), False, True),  # names a client
    (Message(Op.READ, 1, ino=1, seed=1, offset=0, count=1), False, False),
    (Message(Op.READ, 1, ino=1, seed=1, offset=0, count=1), True, True),
    (sample(Op.COMMIT), False, False), (sample(Op.LIST), False, False),
])
def test_which_frames_need_a_stamp(msg, udp, needed):
    assert iodproto.needs_stamp(msg, udp) is needed


def test_token_bucket():
    b = TokenBucket(rate=2, burst=3)
    assert [b.take(10.0) for _ in range(4)] == [True, True, True, False]
    assert not b.take(10.4)
    assert b.take(10.5) and not b.take(10.5)
    assert [b.take(100.0) for _ in range(4)] == [True, True, True, False]   # capped at burst
    assert not b.take(50.0)          # a clock going back gives nothing


def test_keys_update_in_place_for_every_holder():
    from nfspd.iodframes import Signer
    keys = Keys((1, b"o" * 32))
    signer = Signer(keys)
    old_frame = signer.commit(1, 2, 3)
    keys.update(Keys((2, b"n" * 32), [(1, b"o" * 32)]))
    assert keys.current_id == 2 and set(keys.by_id) == {1, 2} and keys.generation == 1
    new_frame = signer.commit(1, 2, 3)
    assert new_frame == iodproto.encode(Message(Op.COMMIT, 1, ino=2, seed=3), keys)
    assert new_frame[5] == 2 and old_frame[5] == 1
    for frame in (old_frame, new_frame):
        iodproto.decode(frame, keys)
    keys.update(Keys((2, b"n" * 32)))
    with pytest.raises(IodProtoError):
        iodproto.decode(old_frame, keys)


def test_signer_stamps_as_encode_does():
    from nfspd.iodframes import Signer
    s = Signer(KEYS)
    frame = s.purge(7, [(1, 2)], stamp=[5, 6, 7.5])
    assert frame == iodproto.encode(Message(Op.PURGE, 7, Stamp(5, 6, 7.5), files=[(1, 2)]), KEYS)


@pytest.mark.parametrize("uptime", [float("nan"), float("inf"), -1.0])
def test_a_pong_with_no_real_uptime_is_refused(uptime):
    # iod_ping turned NaN or inf into a traceback (found by the iod_body fuzzer).
    def body(uptime):   # a new dict each time: message_of takes the body apart
        return {"op": int(Op.PONG), "id": 1, "version": "0.1", "uptime": uptime, "free": 1,
                "total": 2, "verifier": b"v" * 8}
    assert iodproto.message_of(body(1.0), 0).uptime == 1.0
    with pytest.raises(IodProtoError, match="finite number|duration"):
        iodproto.message_of(body(uptime), 0)


def _pong_body(**extra):
    return {"op": int(Op.PONG), "id": 1, "version": "0.1", "uptime": 1.0, "free": 1,
            "total": 2, "verifier": b"v" * 8, **extra}


def test_a_pong_from_a_newer_iod_is_taken_with_its_unknown_fields_ignored():
    # Mixed releases during an upgrade: a PONG only informs, so news in it
    # must not cut the metaserver off its iods.
    msg = iodproto.message_of(_pong_body(ds_port=3050, future_field=[1, 2]), 0)
    assert msg.ds_port == 3050 and not hasattr(msg, "future_field")


def test_a_pong_from_an_older_iod_lacks_the_optional_fields():
    msg = iodproto.message_of(_pong_body(), 0)
    assert (msg.time, msg.store, msg.ds_port) == (None, None, None)


def test_a_pong_leaves_its_unset_optional_fields_out_for_older_peers():
    pong = Message(Op.PONG, 1, version="0.1", uptime=1.0, free=1, total=2, verifier=b"v" * 8)
    frame = iodproto.encode(pong, KEYS)
    body = iodproto.unpack_body(frame[iodproto.HEADER.size:-iodproto.MAC_SIZE])
    assert not {"time", "store", "ds_port"} & set(body)
    assert iodproto.decode(frame, KEYS) == pong


def test_other_ops_still_refuse_unknown_fields():
    with pytest.raises(IodProtoError, match="unknown field"):
        iodproto.message_of({"op": int(Op.COMMIT), "id": 1, "ino": 1, "seed": 2, "x": 1}, 0)
