"""nfspd's Prometheus page (``nfspd --metrics ADDR:PORT``): the counters
`nfsp status` shows, as metrics, for a monitoring system to scrape. The
endpoint itself is common/runtime/metrics.py.
"""

from common.runtime.metrics import Exposition


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
    for cache, name in (("drc", "duplicate_request_cache"), ("metafile_cache", "metafile_cache"),
                        ("listing_cache", "listing_cache")):
        metric(f"nfsp_{name}_lookups_total", "counter", f"{name.replace('_', ' ')} lookups.",
               [({}, st[cache]["lookups"])])
        metric(f"nfsp_{name}_hits_total", "counter", f"{name.replace('_', ' ')} hits.",
               [({}, st[cache]["hits"])])
    w = st.get("workers")
    gcs = [({"process": "nfspd"}, st["group_commit"])]
    if w:
        gcs.append(({"process": "workers"}, w["group_commit"]))
    metric("nfsp_group_commit_flushes_total", "counter",
           "Flushes of namespace changes under sync exports, by nfspd and by its workers.",
           [(lab, gc["flushes"]) for lab, gc in gcs])
    metric("nfsp_group_commit_waits_total", "counter",
           "Calls whose reply waited for such a flush.",
           [(lab, gc["waits"]) for lab, gc in gcs])
    metric("nfsp_group_commit_seconds_total", "counter", "Time those flushes took.",
           [(lab, gc["seconds"]) for lab, gc in gcs])
    loop = st.get("loop")
    if loop:
        metric("nfsp_event_loop_cpu_seconds_total", "counter",
               "Time nfspd's event loop thread, which answers every call, ran on a core.",
               [({}, loop["on_cpu_s"])])
        metric("nfsp_event_loop_waiting_seconds_total", "counter",
               "Time that thread was runnable but waited for a core (held back by the "
               "rest of the machine).", [({}, loop["waiting_s"])])
    if w:
        metric("nfsp_worker_calls_total", "counter",
               "NFSv3 calls worker processes took: namespace changes steered to them over UDP "
               "(of which some handed back to nfspd), READDIR(PLUS) handed over by nfspd.",
               [({"worker": str(i), "kind": "steered"}, n) for i, n in enumerate(w["steered"])]
               + [({"kind": "handed_back"}, w["handed_back"]),
                  ({"kind": "handed_over"}, w["offloaded"])])
        metric("nfsp_worker_restarts_total", "counter", "Worker processes started again.",
               [({}, w["restarts"])])
    metric("nfsp_mounts", "gauge", "Entries in the mount list.", [({}, len(st["clients"]))])
    samples = []
    for prog in ("nfs", "mount"):
        for k, v in sorted(st["counters"][prog].items()):
            samples.append(({"program": prog, "event": k}, v))
    metric("nfsp_rpc_total", "counter", "RPC dispatcher events by program.", samples)
    metric("nfsp_data_path_total", "counter", "Data path events.",
           [({"event": k}, v) for k, v in sorted(st["counters"]["data"].items())])
    return page.text()
