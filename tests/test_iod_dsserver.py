"""How the data server's shell (iod/dsserver.py) cuts a TCP stream into RPC
records: over a socket pair, no daemon."""

import socket
import struct
import threading

from iod.dsserver import MAX_RECORD, DsServer

LAST = 0x80000000


def fragment(data, last):
    return struct.pack(">I", (LAST if last else 0) | len(data)) + data


def read_records(stream):
    a, b = socket.socketpair()
    with a, b:
        def send():
            try:
                a.sendall(stream)
                a.shutdown(socket.SHUT_WR)
            except OSError:         # the reader gave up on a bad stream
                pass
        writer = threading.Thread(target=send, daemon=True)
        writer.start()
        server = DsServer(None, None)
        out, mark = [], bytearray(4)
        while True:
            record = server._read_record(b, mark)
            out.append(record)
            if record is None or isinstance(record, str):
                b.shutdown(socket.SHUT_RDWR)
                writer.join(10)
                return out


def test_records_whole_and_in_fragments():
    stream = (fragment(b"one", True) + fragment(b"tw", False) + fragment(b"", False)
              + fragment(b"o", True) + fragment(b"", True))
    assert read_records(stream) == [b"one", b"two", b"", None]


def test_a_record_larger_than_any_session_allows_ends_the_stream():
    head = struct.pack(">I", LAST | (MAX_RECORD + 1))
    assert read_records(head) == [f"a record of more than {MAX_RECORD} bytes"]
    # also when only the fragments together are too large
    half = MAX_RECORD // 2 + 1
    stream = fragment(b"x" * half, False) + struct.pack(">I", LAST | half)
    assert read_records(stream) == [f"a record of more than {MAX_RECORD} bytes"]


def test_a_stream_cut_inside_a_record_ends_quietly():
    assert read_records(fragment(b"abc", True)[:5]) == [None]
