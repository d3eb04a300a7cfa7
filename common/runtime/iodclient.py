"""A trio client for one iod over TCP (iod protocol frames, one request at a
time): what unlinkd and scrub use to PURGE and LIST.

Everything from the iod is untrusted: frames are bounded and authenticated by
common/iodproto.py, a reply must answer the request we sent, and every wait has
a deadline.

A connection starts with a PING: a wrong key shows at once (no PONG) rather
than as a PURGE that times out, and the PONG's clock gives the offset every
request is then stamped with (replay protection: common/iodproto.py), so the
iod's and our clocks need not agree. The ``keys`` object is shared: a key file
reloaded into it (Keys.update, on SIGHUP) signs the next request.

open_iod_stream is also the metaserver's (nfspd/iodlink.py): an iod listening
below 1024 (iod --secure-port, paper 5.7) is connected to from a port below
1024.
"""

import itertools
import socket
import time

import trio

from common import iodproto
from common.iodproto import IodProtoError, Message, Op
from common.runtime.resvport import PRIVILEGED_PORTS, reserve_port

CONNECT_TIMEOUT = 10.0
_RECV = 65536


class IodError(Exception):
    """The iod is unreachable, misbehaved, or refused the request."""


def iod_name(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"



async def open_iod_stream(ip, port):
    """(trio SocketStream, reserved) to an iod at ``ip``: from a port below
    1024 when the iod listens below 1024 (reserved True, or False if we could
    not bind one), from any port otherwise (reserved None)."""
    if port >= PRIVILEGED_PORTS:
        return await trio.open_tcp_stream(ip, port), None
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # A port in TIME_WAIT from our previous connection may be bound again.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserved = reserve_port(sock)
        tsock = trio.socket.from_stdlib_socket(sock)
        await tsock.connect((ip, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(tsock), reserved


class IodConnection:
    def __init__(self, stream, keys, name):
        self._stream = stream
        self._keys = keys
        self._reader = iodproto.FrameReader()
        self._frames = []
        self._ids = itertools.count(1)
        self._sequencer = iodproto.Sequencer()
        self.name = name
        self.pong = None

    @classmethod
    async def connect(cls, host, port, keys, timeout=CONNECT_TIMEOUT):
        """Connect and PING (both within ``timeout``)."""
        name = iod_name(host, port)
        try:
            with trio.fail_after(timeout):
                if port >= PRIVILEGED_PORTS:
                    stream, reserved = await trio.open_tcp_stream(host, port), None
                else:
                    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                    if not infos:
                        raise OSError(f"cannot resolve {host}")
                    stream, reserved = await open_iod_stream(infos[0][4][0], port)
        except (OSError, trio.TooSlowError) as e:
            raise IodError(f"{name}: cannot connect: {_why(e)}") from None
        conn = cls(stream, keys, name)
        try:
            sent = time.time()
            pong = await conn.call(Op.PING, timeout)
        except IodError as e:
            await conn.aclose()
            hint = (" (an iod with --secure-port takes only connections from ports below 1024, "
                    "which need root)" if reserved is False else
                    " (same --key on both sides?)" if "no answer" in str(e) else "")
            raise IodError(f"{e}{hint}") from None
        if pong.op != Op.PONG:
            await conn.aclose()
            raise IodError(f"{name}: PING answered with {pong.op.name} (status {pong.status}: "
                           f"{pong.message})")
        conn.pong = pong
        if pong.time is not None:
            conn._sequencer.offset = pong.time - (sent + time.time()) / 2
        return conn

    async def call(self, op, timeout, **fields):
        """Send one request and return its REPLY (status checked by the caller).
        Every request but a PING is stamped."""
        stamp = None if op == Op.PING else self._sequencer.stamp(time.time())
        msg = Message(op, next(self._ids), stamp, **fields)
        frame = iodproto.encode(msg, self._keys)
        try:
            with trio.fail_after(timeout):
                await self._stream.send_all(frame)
                answer = await self._next()
        except trio.TooSlowError:
            raise IodError(f"{self.name}: no answer to {op.name} within {timeout:g}s") from None
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as e:
            raise IodError(f"{self.name}: connection lost: {_why(e)}") from None
        except IodProtoError as e:
            raise IodError(f"{self.name}: bad frame: {e}") from None
        # One request at a time, and a connection that timed out is closed by
        # the caller: any other answer means the iod is confused; do not trust
        # the connection further.
        if answer.id != msg.id or answer.op not in (Op.REPLY, Op.PONG):
            raise IodError(f"{self.name}: unexpected {answer.op.name} id {answer.id} "
                           f"(waiting for {msg.id})")
        return answer

    async def _next(self):
        while not self._frames:
            data = await self._stream.receive_some(_RECV)
            if not data:
                raise IodError(f"{self.name}: connection closed by the iod")
            self._frames.extend(self._reader.feed(data))
        return iodproto.decode(self._frames.pop(0), self._keys)

    async def aclose(self):
        with trio.CancelScope(shield=True):
            try:
                await self._stream.aclose()
            except (OSError, trio.BrokenResourceError):
                pass


def _why(e):
    if isinstance(e, trio.TooSlowError):
        return "timed out"
    return getattr(e, "strerror", None) or str(e) or type(e).__name__
