"""A minimal Prometheus text endpoint, shared by nfspd and the iod
(``--metrics ADDR:PORT``): each daemon's ``render`` turns its status into the
page (nfspd/metrics.py, iod/metrics.py); this serves it.

HTTP/1.0-style and minimal on purpose: GET /metrics answers, anything else is
404, one request per connection, requests and connections bounded. The socket
may be one bound earlier (the iod binds before dropping root).
"""

import logging

import trio

log = logging.getLogger(__name__)

MAX_HEADER = 8192
MAX_CONNECTIONS = 16
TIMEOUT = 10.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return int(v)
    return v


class Exposition:
    """Prometheus text exposition format, one metric family at a time."""

    def __init__(self):
        self.lines = []

    def metric(self, name, kind, help_text, samples):
        """``samples``: (labels dict, value) pairs; a None value is left out."""
        out = self.lines
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            value = _num(value)
            if value is None:
                continue
            lab = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            out.append(f"{name}{{{lab}}} {value}" if lab else f"{name} {value}")

    def text(self):
        return "\n".join(self.lines) + "\n"


class MetricsServer:
    """``status`` is a function returning what ``render`` turns into the page;
    ``sock``, a listening stdlib socket bound earlier, instead of binding
    host:port in run()."""

    def __init__(self, host, port, status, render, sock=None, logger=None):
        self.host, self.port = host, port
        self.status = status
        self.render = render
        self.sock = sock
        self.log = logger or log
        self._slots = trio.CapacityLimiter(MAX_CONNECTIONS)

    async def run(self, task_status=trio.TASK_STATUS_IGNORED):
        if self.sock is not None:
            listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(self.sock))]
        else:
            listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        self.log.info("Prometheus metrics on http://%s:%d/metrics", self.host, self.port)
        async with trio.open_nursery() as nursery:
            task_status.started(self)
            for listener in listeners:
                nursery.start_soon(self._accept, listener, nursery)

    async def _accept(self, listener, nursery):
        async with listener:
            while True:
                stream = await listener.accept()
                try:
                    self._slots.acquire_on_behalf_of_nowait(stream)
                except trio.WouldBlock:
                    await stream.aclose()
                    continue
                nursery.start_soon(self._serve, stream)

    async def _serve(self, stream):
        try:
            async with stream:
                with trio.move_on_after(TIMEOUT):
                    head = bytearray()
                    while b"\r\n\r\n" not in head and b"\n\n" not in head:
                        data = await stream.receive_some(MAX_HEADER)
                        if not data:
                            return
                        head += data
                        if len(head) > MAX_HEADER:
                            await stream.send_all(_response(431, "header too large\n"))
                            return
                    parts = bytes(head).split(b"\r\n", 1)[0].split()
                    if len(parts) < 2 or parts[0] not in (b"GET", b"HEAD"):
                        await stream.send_all(_response(405, "GET /metrics\n"))
                        return
                    if parts[1].split(b"?")[0] != b"/metrics":
                        await stream.send_all(_response(404, "try /metrics\n"))
                        return
                    body = self.render(self.status())
                    await stream.send_all(_response(200, body, head_only=parts[0] == b"HEAD"))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self._slots.release_on_behalf_of(stream)


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large"}


def _response(code, body, head_only=False):
    data = body.encode()
    head = (f"HTTP/1.0 {code} {_REASONS[code]}\r\nContent-Type: {CONTENT_TYPE}\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
    return head if head_only else head + data


def parse_address(text):
    """ADDR:PORT (or :PORT for every interface) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--metrics {text!r}: expected ADDR:PORT")
    return (host.strip("[]") or "0.0.0.0"), int(port)
