"""bonnie-style figures for one client (paper section 6.2): block sequential
write, rewrite (each block read, checked and written back), sequential read,
and random seeks (bonnie's three seekers: 8 KiB reads at random offsets, one
in ten written back), over NFSv3/UDP and NFSv3/TCP, NFSP with 4 iods against
nfs-ganesha, on the testbed with its link caps.

The write figure includes the final COMMIT, as bonnie's includes close().
"""

from tools.dev.benchmarks import ganesha as ganesha_mod
from tools.dev.benchmarks.harness import loadgen_argv, proc_cpu, run_loadgens
from tools.dev.benchmarks.servers import TestbedServer

MOUNT_PORT = 20048
SEEKERS = 3
IODS = 4


def phases(size_mib, seek_seconds):
    return [
        ("write", dict(workload="seqwrite", duration=0)),
        ("rewrite", dict(workload="rewrite", duration=0, no_prepare=True)),
        ("read", dict(workload="seqread", duration=0, no_prepare=True)),
        ("seeks", dict(workload="randread", duration=seek_seconds, window=SEEKERS, block="8K",
                       rewrite_fraction=0.1, no_prepare=True)),
    ]


def run_one(ctx, srv, rate, proto, size_mib, seek_seconds):
    row = {"server": srv.kind, "iods": srv.n_iods, "rate": rate, "proto": proto,
           "file_MiB": size_mib, "errors": 0, "retransmits": 0}
    for name, opts in phases(size_mib, seek_seconds):
        opts = dict({"window": ctx.params.window}, **opts)
        argv = loadgen_argv(srv.server, srv.export, proto=proto, file=f"bonnie-{proto}",
                            file_size=f"{size_mib}M", mount_port=MOUNT_PORT, **opts)
        cpu0 = proc_cpu(srv.pid)
        r, = run_loadgens([(srv.client_prefix(0), argv)], timeout=3600, log_dir=ctx.logs,
                          tag=f"bonnie-{srv.kind}-{rate}-{proto}-{name}")
        cpu = proc_cpu(srv.pid) - cpu0
        row["errors"] += r["error_count"]
        row["retransmits"] += r["retransmits"]
        row["jukebox"] = row.get("jukebox", 0) + r.get("jukebox", 0)
        if name == "seeks":
            row["seeks_per_s"] = r["ops_per_s"]
        elif name == "rewrite":
            row["rewrite_MBps"] = r["write_MBps"]
        else:
            row[f"{name}_MBps"] = r["MBps"]
        row[f"{name}_server_cpu_s"] = round(cpu, 2)
        if r["error_count"]:
            row.setdefault("error_samples", []).extend(r["error_samples"][:3])
    ctx.log(f"bonnie {srv.kind} {rate} {proto}: write {row['write_MBps']} rewrite "
            f"{row['rewrite_MBps']} read {row['read_MBps']} MB/s, {row['seeks_per_s']} seeks/s, "
            f"{row['errors']} errors")
    return row


def run(ctx):
    p = ctx.params
    size_mib = p.file_mib
    seek_seconds = 3.0 if ctx.quick else 10.0
    kinds = ["nfsp"]
    missing = ganesha_mod.unavailable(p)
    if missing is None:
        kinds.append("ganesha")
    rows = []
    for kind in kinds:
        workdir = ctx.workdir(f"bonnie-{kind}")
        try:
            for rate in p.rates:
                with TestbedServer(kind, workdir, IODS, 1, rate, p.ipfrag_max_dist) as srv:
                    for proto in ("udp", "tcp"):
                        rows.append(run_one(ctx, srv, rate, proto, size_mib, seek_seconds))
        finally:
            ctx.cleanup(workdir)
    return {"file_MiB": size_mib, "iods": IODS, "seekers": SEEKERS, "window": p.window,
            "baseline_missing": missing, "rows": rows}
