"""A small synchronous ONC RPC client over UDP or TCP.

For tools (iod_ping, nfsp status) and for tests that need what the real
clients cannot do: NFSv2, every procedure, malformed messages. Every wait is
bounded by ``timeout``; UDP retransmits with the same xid, as real clients do
(that is the protocol, and what the duplicate request cache exists for).
"""

import collections
import itertools
import os
import random
import socket
import struct
import time

from common import rpc
from common.runtime.resvport import bind_reserved
from common.xdr import Packer, Unpacker

_xids = itertools.count(random.getrandbits(31))


class RpcTimeout(TimeoutError):
    pass


class RpcCallError(Exception):
    """The server answered, but not with SUCCESS."""

    def __init__(self, reply):
        detail = reply.auth.name if reply.auth is not None else reply.stat.name
        if reply.mismatch:
            detail += f" {reply.mismatch[0]}..{reply.mismatch[1]}"
        super().__init__(detail)
        self.reply = reply



class RpcClient:
    def __init__(self, host, port, transport="udp", *, timeout=5.0, retries=3,
                 cred=None, reserved_port=False):
        self.host, self.port, self.transport = host, port, transport
        self.timeout, self.retries, self.cred = timeout, retries, cred
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        if reserved_port:
            bind_reserved(self.sock)
        self.sock.settimeout(timeout)
        if transport == "tcp":
            self.sock.connect((host, port))
            self._reader = rpc.RecordReader(1 << 26)
            self._records = collections.deque()
        else:
            self.sock.connect((host, port))

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def default_cred(uid=None, gid=None, gids=None, machine=None):
        uid = os.getuid() if uid is None else uid
        gid = os.getgid() if gid is None else gid
        return rpc.AuthSys(int(time.time()) & 0xFFFFFFFF,
                           (machine or socket.gethostname()).encode()[:255],
                           uid, gid, list(gids if gids is not None else [gid]))

    def send(self, message):
        """Send an encoded call without waiting (pipelined calls: see receive)."""
        if self.transport == "tcp":
            self.sock.sendall(rpc.encode_record(message))
        else:
            self.sock.send(message)

    def receive(self):
        """The next reply to arrive, whichever call it answers (raw bytes)."""
        if self.transport == "udp":
            return self.sock.recv(1 << 17)
        while not self._records:
            data = self.sock.recv(1 << 22)
            if not data:
                raise ConnectionError("server closed the connection")
            self._records.extend(self._reader.feed(data))
        return self._records.popleft()

    def call_raw(self, message, xid):
        """Send an encoded message and return the raw reply carrying ``xid``."""
        if self.transport == "tcp":
            self.send(message)
            deadline = time.monotonic() + self.timeout
            while True:
                for rec in self._records:
                    if rpc.peek_xid(rec) == xid:
                        self._records.remove(rec)
                        return rec
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RpcTimeout(f"no reply from {self.host}:{self.port} within {self.timeout}s")
                self.sock.settimeout(left)
                try:
                    data = self.sock.recv(1 << 20)
                except TimeoutError:
                    raise RpcTimeout(f"no reply from {self.host}:{self.port}") from None
                if not data:
                    raise ConnectionError("server closed the connection")
                self._records.extend(self._reader.feed(data))
        for _ in range(self.retries + 1):
            self.sock.send(message)
            deadline = time.monotonic() + self.timeout / (self.retries + 1)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.sock.settimeout(left)
                try:
                    data = self.sock.recv(1 << 17)
                except TimeoutError:
                    break
                except ConnectionRefusedError:
                    raise ConnectionRefusedError(
                        f"nothing listens on udp {self.host}:{self.port}") from None
                if rpc.peek_xid(data) == xid:
                    return data
        raise RpcTimeout(f"no reply from {self.host}:{self.port} after {self.retries + 1} tries")

    def call(self, prog, vers, proc, args=b"", *, cred=..., xid=None):
        """Call and return the decoded rpc.Reply (whatever its status)."""
        xid = next(_xids) & 0xFFFFFFFF if xid is None else xid
        message = rpc.encode_call(xid, prog, vers, proc, args,
                                  self.cred if cred is ... else cred)
        return rpc.decode_reply(self.call_raw(message, xid))

    def call_typed(self, prog, vers, proc, args_type, args, res_type, **kw):
        """Encode args, call, require SUCCESS, decode the result."""
        p = Packer()
        args_type.pack(p, args)
        reply = self.call(prog, vers, proc, p.get_buffer(), **kw)
        if not (reply.accepted and reply.stat == rpc.accept_stat.SUCCESS):
            raise RpcCallError(reply)
        u = Unpacker(reply.body)
        return res_type.unpack(u)


def getport(host, prog, vers, prot="udp", timeout=3.0):
    """Ask a portmapper (v2 GETPORT) where a program listens; 0 if unregistered."""
    ipproto = socket.IPPROTO_UDP if prot == "udp" else socket.IPPROTO_TCP
    args = struct.pack(">IIII", prog, vers, ipproto, 0)
    with RpcClient(host, 111, "udp", timeout=timeout) as c:
        reply = c.call(100000, 2, 3, args, cred=None)
    if not (reply.accepted and reply.stat == rpc.accept_stat.SUCCESS):
        raise RpcCallError(reply)
    return struct.unpack(">I", reply.body[:4])[0]
