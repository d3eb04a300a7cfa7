"""A synchronous iod protocol client, for the tests and the harness (the
daemons' own is trio's, common/runtime/iodclient.py; both frame, sign and
stamp with common/iodproto.py)."""

import itertools
import socket
import time

from common import iodproto
from common.iodproto import Message, Op


class IodClient:
    """Frames to one iod over TCP or UDP; create it with ns.inside() so its
    socket lives in the namespace. Requests are stamped as real senders stamp
    them (replay protection, common/iodproto.py), but PINGs over TCP."""

    _ids = itertools.count(1)

    def __init__(self, host, port, keys, transport="tcp", timeout=10.0):
        self.keys = keys
        self.sequencer = iodproto.Sequencer()
        self.transport = transport
        self.address = (host, port)
        if transport == "tcp":
            self.sock = socket.create_connection(self.address, timeout=timeout)
            self.reader = iodproto.FrameReader()
            self.pending = []
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
            self.sock.settimeout(timeout)

    def send_frame(self, frame):
        if self.transport == "tcp":
            self.sock.sendall(frame)
        else:
            self.sock.sendto(frame, self.address)

    def send(self, op, stamp=None, **fields):
        """``stamp``: None stamps all but PINGs over TCP; True/False forces it."""
        if stamp is None:
            stamp = op != Op.PING or self.transport == "udp"
        stamp = self.sequencer.stamp(time.time()) if stamp else None
        msg = Message(op, next(self._ids), stamp, **fields)
        self.send_frame(iodproto.encode(msg, self.keys))
        return msg.id

    def receive(self):
        """The next answer (raises socket.timeout if none comes)."""
        if self.transport == "tcp":
            while not self.pending:
                data = self.sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("iod closed the connection")
                self.pending.extend(self.reader.feed(data))
            return iodproto.decode(self.pending.pop(0), self.keys)
        data, _ = self.sock.recvfrom(65535)
        return iodproto.decode(data, self.keys)

    def call(self, op, **fields):
        msg_id = self.send(op, **fields)
        answer = self.receive()
        assert answer.id == msg_id, (answer, msg_id)
        return answer

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
