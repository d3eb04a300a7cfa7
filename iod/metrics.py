"""The iod's optional Prometheus endpoint (``iod --metrics ADDR:PORT``): its
counters (iod/counters.py), queue depth and free space, served by the shared
minimal HTTP server (common/runtime/metrics.py) on a socket bound before the
iod dropped root.

Counter names become labels of a few metric families: the per-op request
counts (``ping``, ``read``, ...) of nfsp_iod_requests_total, the ``dropped_*``
reasons of nfsp_iod_dropped_total (bad_mac, malformed, replay, stale,
unstamped, insecure_port, rate_limited, queue_full, ...), the ``error_*``
errnos of nfsp_iod_errors_total; the rest keep a metric of their own. The
pNFS data server's (``ds_*``, iod --ds-port) have families of their own:
operations, refusals by the status the client got, records dropped.
"""

import logging
import time

from common.iodproto import Op
from common.runtime.metrics import Exposition, MetricsServer
from common.runtime.version import VERSION

log = logging.getLogger("iod")

_OPS = tuple(op.name.lower() for op in Op if op not in (Op.PONG, Op.REPLY))
_OWN = {  # counter -> (metric, help)
    "read_bytes": ("nfsp_iod_read_bytes_total", "File data read for READs (relayed or sent "
                                                "to the client directly)."),
    "write_bytes": ("nfsp_iod_written_bytes_total", "File data written for WRITEs."),
    "purged_files": ("nfsp_iod_purged_files_total", "Datafiles removed by PURGEs."),
    "spoofed_datagrams": ("nfsp_iod_spoofed_datagrams_total",
                          "Replies sent with the metaserver's (or a PING's) address as source."),
    "spoofed_packets": ("nfsp_iod_spoofed_packets_total", "IP packets of those replies."),
    "udp_frames": ("nfsp_iod_udp_frames_total", "Datagrams received."),
    "tcp_frames": ("nfsp_iod_tcp_frames_total", "Frames received over TCP."),
    "ping_unauthenticated": ("nfsp_iod_unauthenticated_pings_total",
                             "Unsigned PINGs answered (rate-limited plain PONGs)."),
    "refused_spoof": ("nfsp_iod_refused_spoofs_total",
                      "Spoofed PONGs refused (requester outside --pong-allow, or unsigned)."),
    "internal_errors": ("nfsp_iod_internal_errors_total", "Requests that hit a bug."),
    "udp_send_errors": ("nfsp_iod_udp_send_errors_total", "UDP answers not sent."),
    "udp_receive_errors": ("nfsp_iod_udp_receive_errors_total", "UDP receive failures."),
    "tcp_waits_queue_full": ("nfsp_iod_tcp_queue_waits_total",
                             "TCP frames that waited for room in the request queue."),
    "ds_compounds": ("nfsp_iod_ds_compounds_total", "Data server: COMPOUNDs run."),
    "ds_replays": ("nfsp_iod_ds_replays_total",
                   "Data server: retries answered from a slot's reply cache."),
    "ds_notsupp": ("nfsp_iod_ds_notsupp_total",
                   "Data server: operations a data server does not do (NFS4ERR_NOTSUPP)."),
    "ds_read_bytes": ("nfsp_iod_ds_read_bytes_total", "Data server: file data READ."),
    "ds_write_bytes": ("nfsp_iod_ds_written_bytes_total", "Data server: file data written."),
    "ds_sendfile_bytes": ("nfsp_iod_ds_sendfile_bytes_total",
                          "Data server: READ data sent by sendfile from the datafile."),
    "ds_connections": ("nfsp_iod_ds_connections_total", "Data server: connections accepted."),
}
_DS_OPS = ("read", "write", "commit")
# the reason a handle was refused -> the status the client got
_DS_REFUSED = {"badhandle": "NFS4ERR_BADHANDLE", "stale": "NFS4ERR_STALE",
               "client": "NFS4ERR_ACCESS", "insecure_port": "NFS4ERR_ACCESS",
               "read_only": "NFS4ERR_ACCESS"}


def status(server):
    """What the page shows, read from the live iod (iod/server.py, in its
    trio thread)."""
    try:
        total, _, free, *_ = server.store.statvfs()
    except OSError:
        total = free = None
    return {"counters": server.counters.snapshot(), "queue": len(server.queue),
            "queue_max": server.queue.max_items, "queue_high_water": server.queue.high_water,
            "free": free, "total": total, "uptime": time.monotonic() - server.started,
            "connections": server.connections, "senders": len(server.engine.replay),
            "verifier": server.engine.verifier.hex()}


def render(st):
    c = st["counters"]
    page = Exposition()
    m = page.metric
    m("nfsp_iod_info", "gauge", "iod version and boot verifier.",
      [({"version": VERSION, "verifier": st["verifier"]}, 1)])
    m("nfsp_iod_uptime_seconds", "gauge", "Seconds since the iod started.",
      [({}, round(st["uptime"], 3))])
    m("nfsp_iod_requests_total", "counter", "Requests acted on, by op.",
      [({"op": op}, c.get(op, 0)) for op in _OPS])
    m("nfsp_iod_dropped_total", "counter",
      "Frames dropped unanswered, by reason (bad_mac, malformed, replay, stale, unstamped, "
      "insecure_port, rate_limited, queue_full, ...).",
      [({"reason": k[len("dropped_"):]}, v) for k, v in sorted(c.items())
       if k.startswith("dropped_")])
    m("nfsp_iod_errors_total", "counter", "Requests answered with an error, by errno.",
      [({"errno": k[len("error_"):].upper()}, v) for k, v in sorted(c.items())
       if k.startswith("error_")])
    m("nfsp_iod_ds_operations_total", "counter", "Data server: READ, WRITE, COMMIT done.",
      [({"op": op}, c.get(f"ds_{op}", 0)) for op in _DS_OPS])
    m("nfsp_iod_ds_refused_total", "counter",
      "Data server: file handles refused, by reason and the status answered.",
      [({"reason": reason, "status": status}, c.get(f"ds_refused_{reason}", 0))
       for reason, status in _DS_REFUSED.items()])
    m("nfsp_iod_ds_dropped_total", "counter",
      "Data server: records dropped (malformed) or streams closed (bad_stream).",
      [({"reason": k[len("ds_dropped_"):]}, v) for k, v in sorted(c.items())
       if k.startswith("ds_dropped_")])
    for key, (name, help_text) in _OWN.items():
        m(name, "counter", help_text, [({}, c.get(key, 0))])
    m("nfsp_iod_queue_depth", "gauge", "Requests waiting for an I/O thread.",
      [({}, st["queue"])])
    m("nfsp_iod_queue_capacity", "gauge", "Bound on the requests waiting (--queue-depth).",
      [({}, st["queue_max"])])
    m("nfsp_iod_queue_high_water", "gauge", "Most requests ever waiting at once.",
      [({}, st["queue_high_water"])])
    m("nfsp_iod_connections", "gauge", "Open TCP connections (metaserver, unlinkd, tools).",
      [({}, st["connections"])])
    m("nfsp_iod_replay_senders", "gauge",
      "Senders whose recent sequence numbers the replay protection tracks.",
      [({}, st["senders"])])
    m("nfsp_iod_free_bytes", "gauge", "Space this iod may still use in its data directory.",
      [({}, st["free"])])
    m("nfsp_iod_total_bytes", "gauge", "Size of the file system of the data directory.",
      [({}, st["total"])])
    return page.text()


async def serve_metrics(server, task_status):
    host, port = server.config.metrics
    endpoint = MetricsServer(host, port, lambda: status(server), render=render,
                             sock=server.metrics_sock, logger=log)
    await endpoint.run(task_status=task_status)
