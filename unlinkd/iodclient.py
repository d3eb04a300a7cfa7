"""A trio client for one iod over TCP (iod protocol frames, one request at a
time): what unlinkd and scrub use to PURGE and LIST.

Everything from the iod is untrusted: frames are bounded and authenticated by
common/iodproto.py, a reply must answer the request we sent, and every wait has
a deadline.
"""

import itertools

import trio

from common import iodproto
from common.iodproto import IodProtoError, Message, Op

CONNECT_TIMEOUT = 10.0
_RECV = 65536


class IodError(Exception):
    """The iod is unreachable, misbehaved, or refused the request."""


def iod_name(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class IodConnection:
    def __init__(self, stream, keys, name):
        self._stream = stream
        self._keys = keys
        self._reader = iodproto.FrameReader()
        self._frames = []
        self._ids = itertools.count(1)
        self.name = name

    @classmethod
    async def connect(cls, host, port, keys, timeout=CONNECT_TIMEOUT):
        name = iod_name(host, port)
        try:
            with trio.fail_after(timeout):
                stream = await trio.open_tcp_stream(host, port)
        except (OSError, trio.TooSlowError) as e:
            raise IodError(f"{name}: cannot connect: {_why(e)}") from None
        return cls(stream, keys, name)

    async def call(self, op, timeout, **fields):
        """Send one request and return its REPLY (status checked by the caller)."""
        msg = Message(op, next(self._ids), **fields)
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
