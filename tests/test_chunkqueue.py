"""common/chunkqueue.py: the bytes a stream reader holds, as they came."""

import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from common import iodproto, rpc
from common.chunkqueue import ChunkQueue


@given(st.lists(st.binary(max_size=40), max_size=30), st.data())
def test_takes_and_peeks_see_the_bytes_in_order_across_chunks(chunks, data):
    q, expected = ChunkQueue(), b""
    for chunk in chunks:
        q.append(chunk)
        expected += chunk
        assert len(q) == len(expected)
        n = data.draw(st.integers(0, len(expected)))
        assert q.peek(n) == expected[:n]
        assert q.take(n) == expected[:n]
        expected = expected[n:]
    assert q.take(len(expected)) == expected and len(q) == 0


def test_a_take_of_exactly_one_whole_chunk_is_that_chunk_uncopied():
    q, big = ChunkQueue(), bytes(range(256)) * 4096
    q.append(b"head")
    q.append(big)
    assert q.take(4) == b"head"
    assert q.take(len(big)) is big


def test_taking_more_than_is_held_is_refused():
    q = ChunkQueue()
    q.append(b"abc")
    try:
        q.take(4)
    except ValueError:
        pass
    else:
        raise AssertionError("took 4 of 3 bytes")
    assert q.take(3) == b"abc"


def test_a_peer_trickling_single_bytes_costs_no_object_per_byte():
    q = ChunkQueue()
    one_byte = [bytes([i % 256]) for i in range(100_000)]  # made before measuring
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for b in one_byte:
            q.append(b)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 100,000 bytes: an object per byte would be ~4 MB (a list slot and a
    # 33-byte bytes each); whole ones, the bytes and a few KiB.
    assert held < 2 * 100_000 + 64 * 1024
    assert q.take(len(q)) == b"".join(one_byte)


def test_a_mib_record_read_64_kib_at_a_time_comes_out_whole():
    record = bytes(range(251)) * (1 << 20 // 251 + 1)
    stream = rpc.encode_record(record[:1 << 20]) + rpc.encode_record(b"next")
    reader = rpc.RecordReader(1 << 20)
    out = []
    for i in range(0, len(stream), 65536):
        out += reader.feed(stream[i:i + 65536])
    assert out == [record[:1 << 20], b"next"] and reader.pending() == 0


def test_pending_counts_a_fragment_header_already_read():
    reader = rpc.RecordReader(100)
    assert reader.feed(rpc.encode_record(b"abc")[:4]) == []
    assert reader.pending() == 4  # inside a record, not at its boundary
    assert reader.feed(b"abc") == [b"abc"] and reader.pending() == 0


def test_iod_frames_split_over_reads_come_out_whole():
    keys = iodproto.Keys.single(b"k" * 32)
    frame = iodproto.encode(iodproto.Message(iodproto.Op.REPLY, 7, status=0,
                                             data=bytes(300_000)), keys)
    reader, out = iodproto.FrameReader(), []
    for i in range(0, len(frame), 65536):
        out += reader.feed(frame[i:i + 65536])
    assert out == [frame]
    assert iodproto.decode(out[0], keys).data == bytes(300_000)
