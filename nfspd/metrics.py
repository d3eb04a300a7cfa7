"""An optional Prometheus text endpoint (``nfspd --metrics ADDR:PORT``): the
counters `nfsp status` shows, as metrics, for a monitoring system to scrape.

HTTP/1.0-style and minimal on purpose: GET /metrics answers, anything else is
404, one request per connection, requests and connections bounded.

The iod's endpoint (iod/metrics.py) is the same server with its own page:
Exposition writes the text format, MetricsServer serves whatever its
``render`` makes of ``status()``, on a socket of its own or one bound earlier
(the iod binds before dropping root).
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


def render(st):
    """Prometheus text exposition format of a status dict (nfspd/admin.py)."""
    page = Exposition()
    metric = page.metric

    metric("nfsp_uptime_seconds", "gauge", "Seconds since nfspd started.", [({}, st["uptime"])])
    metric("nfsp_info", "gauge", "nfspd version.", [({"version": st["version"]}, 1)])
    iods = st["iods"]
    by = [({"iod": i["address"]}, i) for i in iods]
    metric("nfsp_iod_up", "gauge", "1 if the metaserver's link to the iod is up.",
           [(lab, i["up"]) for lab, i in by])
    metric("nfsp_iod_rtt_seconds", "gauge", "Last PING round-trip time to the iod.",
           [(lab, None if i["rtt_ms"] is None else i["rtt_ms"] / 1e3) for lab, i in by])
    metric("nfsp_iod_free_bytes", "gauge", "Free space the iod reported in its last PONG.",
           [(lab, i["free"]) for lab, i in by])
    metric("nfsp_iod_total_bytes", "gauge", "Total space the iod reported in its last PONG.",
           [(lab, i["total"]) for lab, i in by])
    metric("nfsp_iod_restarts_total", "counter", "Boot verifier changes seen.",
           [(lab, i["restarts"]) for lab, i in by])
    metric("nfsp_iod_timeouts_total", "counter", "Requests to the iod that timed out.",
           [(lab, i["timeouts"]) for lab, i in by])
    metric("nfsp_iod_requests_total", "counter",
           "Request frames sent to the iod (relayed over TCP and forwarded over UDP).",
           [(lab, i.get("requests")) for lab, i in by])
    metric("nfsp_iod_read_bytes_total", "counter",
           "File data the iod served for reads (relayed, or sent to UDP clients directly).",
           [(lab, i.get("read_bytes")) for lab, i in by])
    metric("nfsp_iod_written_bytes_total", "counter", "File data sent to the iod to write.",
           [(lab, i.get("written_bytes")) for lab, i in by])
    metric("nfsp_iod_frame_bytes_total", "counter",
           "Bytes of iod protocol frames exchanged with the iod, by direction.",
           [({**lab, "direction": d}, i.get(k)) for lab, i in by
            for d, k in (("out", "bytes_out"), ("in", "bytes_in"))])
    metric("nfsp_iod_clock_offset_seconds", "gauge",
           "The iod's wall clock minus the metaserver's, from the last PONG.",
           [(lab, i.get("clock_offset")) for lab, i in by])
    metric("nfsp_iod_wrong_store", "gauge",
           "1 if the iod serves another data store than the one remembered for it "
           "(kept down: `nfsp status` says why).",
           [(lab, 1 if i.get("wrong_store") else 0) for lab, i in by])
    metric("nfsp_iod_store_info", "gauge", "The data store id the iod's last PONG named.",
           [({**lab, "store": i["store"]}, 1) for lab, i in by if i.get("store")])
    p = st["purges"]
    metric("nfsp_purges_pending", "gauge", "Deleted files' stripes not yet purged.",
           [({}, p["pending"])] + [({"iod": k}, v["pending"])
                                   for k, v in p.get("iods", {}).items()])
    for cache, name in (("drc", "duplicate_request_cache"), ("metafile_cache", "metafile_cache")):
        metric(f"nfsp_{name}_lookups_total", "counter", f"{name.replace('_', ' ')} lookups.",
               [({}, st[cache]["lookups"])])
        metric(f"nfsp_{name}_hits_total", "counter", f"{name.replace('_', ' ')} hits.",
               [({}, st[cache]["hits"])])
    metric("nfsp_mounts", "gauge", "Entries in the mount list.", [({}, len(st["clients"]))])
    samples = []
    for prog in ("nfs", "mount"):
        for k, v in sorted(st["counters"][prog].items()):
            samples.append(({"program": prog, "event": k}, v))
    metric("nfsp_rpc_total", "counter", "RPC dispatcher events by program.", samples)
    metric("nfsp_data_path_total", "counter", "Data path events.",
           [({"event": k}, v) for k, v in sorted(st["counters"]["data"].items())])
    return page.text()


class MetricsServer:
    """``status`` is a function returning what ``render`` turns into the page;
    ``sock``, a listening stdlib socket bound earlier, instead of binding
    host:port in run()."""

    def __init__(self, host, port, status, render=render, sock=None, logger=None):
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
