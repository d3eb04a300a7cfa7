"""Real iod processes inside a test's network namespace, and a small
synchronous iod protocol client for the tests (mirrors daemons.py)."""

import itertools
import os
import socket
import sys
import time

import pytest

from common import iodproto, keyfile
from common.iodproto import Message, Op
from tests.support.netns import wait_until
from tests.support.process import DaemonProcess



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


class Capture:
    """IPv4 packets arriving on the namespace's loopback, from a raw
    AF_PACKET socket (create it with ns.inside() so it opens there). Each
    packet is seen once, as it is received."""

    ETH_P_IP = 0x0800

    def __init__(self, interface="lo"):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM,
                                  socket.htons(self.ETH_P_IP))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self.sock.bind((interface, self.ETH_P_IP))

    def take(self, predicate, done, timeout=10.0):
        """Packets (raw IP bytes) for which predicate(bytes) holds, until
        done(list so far) is true; raises TimeoutError past the bound."""
        deadline = time.monotonic() + timeout
        found = []
        while not done(found):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"capture incomplete after {timeout}s: {len(found)} packets")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(1 << 17)
            except socket.timeout:
                continue
            if predicate(data):
                found.append(data)
        return found

    def close(self):
        self.sock.close()


def make_key(path):
    if not os.path.exists(path):
        keyfile.generate(path)
    return keyfile.load(path)


class Iod(DaemonProcess):
    """An iod process inside namespace ``ns``, listening on 127.0.0.1:port."""

    name = "iod"

    def __init__(self, ns, workdir, key_path, port=iodproto.DEFAULT_PORT, slot="0/1",
                 user="nobody", data_dir=None, extra_args=()):
        self.ns = ns
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.key_path = key_path
        self.keys = make_key(key_path)
        self.port = port
        self.slot = slot
        self.user = user
        self.data_dir = data_dir or os.path.join(workdir, "data")
        self.extra_args = list(extra_args)
        self.log_path = os.path.join(workdir, "iod.log")
        self.proc = None

    def argv(self):
        return [sys.executable, "-m", "iod.cli", "--data-dir", self.data_dir,
                "--key", self.key_path, "--listen", "127.0.0.1", "--port", str(self.port),
                "--user", self.user, "--ip-id-slot", self.slot, "--threads", "4",
                "--log-level", "debug"] + self.extra_args

    def answers(self):
        with self.client("tcp", timeout=1) as c:
            return c.call(Op.PING).op == Op.PONG

    def client(self, transport="tcp", timeout=10.0):
        return self.ns.inside(IodClient, "127.0.0.1", self.port, self.keys, transport, timeout)

    def counters(self):
        """The counters of the iod's most recent summary line."""
        lines = [line for line in self.log_text().splitlines() if "counters:" in line]
        if not lines:
            return {}
        fields = lines[-1].split("counters:", 1)[1].split()
        return {k: int(v) for k, v in (f.split("=", 1) for f in fields if "=" in f)}

    def counters_now(self, want=None, timeout=10):
        """Ask for a summary (SIGUSR1) and return it; with ``want`` (name ->
        value), until the summary shows those values (the iod counts in its
        threads, after the answer may already be out)."""
        def fresh():
            os.kill(self.pid, 10)   # SIGUSR1
            c = self.counters()
            return c if want is None or all(c.get(k) == v for k, v in want.items()) else None
        result = []
        wait_until(lambda: result.append(fresh()) or result[-1], timeout,
                   what=f"iod counters {want}", interval=0.1)
        return result[-1]


@pytest.fixture
def iods(ns, tmp_path):
    """A factory for real iods in the test's namespace sharing one cluster
    key; stopped at teardown."""
    started = []
    key_path = str(tmp_path / "cluster.key")

    def start(**kw):
        kw.setdefault("port", iodproto.DEFAULT_PORT + len(started))
        d = Iod(ns, str(tmp_path / f"iod{len(started)}"), key_path, **kw)
        started.append(d)
        return d.start()
    yield start
    for d in started:
        d.stop()
