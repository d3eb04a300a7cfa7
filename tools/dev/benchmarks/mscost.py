"""The metaserver's cost: CPU seconds of the nfspd process (its own rusage,
/proc/PID/stat utime+stime, all threads) per forwarded READ over UDP and per
relayed MiB over TCP, against the number of iods and the file size. A cost
that grew with either would cap the cluster's size; it should stay flat.

Loopback, no caps: one client reads the file in a loop (32 KiB READs over
UDP, 1 MiB over TCP, 16 in flight) for a fixed time.
"""

from tools.dev.benchmarks.harness import loadgen_argv, proc_cpu, run_loadgens
from tools.dev.benchmarks.servers import LoopbackNfsp


def sizes(ctx):
    if ctx.quick:
        return (1, 8)
    return tuple(sorted({1, 16, ctx.params.file_mib}))


def measure(ctx, srv, proto, size_mib, seconds):
    argv = loadgen_argv(srv.server, srv.export, proto=proto, workload="seqread",
                        file=f"cost{size_mib}", file_size=f"{size_mib}M", passes=0,
                        duration=seconds, window=16, no_prepare=True)
    cpu0 = proc_cpu(srv.pid)
    r, = run_loadgens([(srv.client_prefix(), argv)], timeout=seconds + 120, log_dir=ctx.logs,
                      tag=f"mscost-{srv.n_iods}-{proto}-{size_mib}")
    # The loadgen's start-up (mount, FSINFO) is in the delta too: a handful of
    # calls against thousands of READs.
    cpu = proc_cpu(srv.pid) - cpu0
    reads = r["per_op"].get("read", {}).get("count", 0)
    mib = r["bytes_read"] / (1 << 20)
    row = {"iods": srv.n_iods, "proto": proto, "file_MiB": size_mib, "reads": reads,
           "MiB": round(mib, 1), "MBps": r["MBps"], "server_cpu_s": round(cpu, 3),
           "us_per_read": round(cpu / reads * 1e6, 1) if reads else None,
           "ms_per_MiB": round(cpu / mib * 1e3, 2) if mib else None,
           "loadgen_cpu_util": r["cpu_util"], "errors": r["error_count"],
           "retransmits": r["retransmits"], "jukebox": r.get("jukebox", 0)}
    ctx.log(f"mscost k={srv.n_iods} {proto} {size_mib} MiB: {row['us_per_read']} us/READ, "
            f"{row['ms_per_MiB']} ms/MiB, {row['MBps']} MB/s, {row['errors']} errors")
    return row


def run(ctx):
    p = ctx.params
    seconds = 2.0 if ctx.quick else 5.0
    iods = (2,) if ctx.quick else p.mscost_iods
    rows = []
    for k in iods:
        workdir = ctx.workdir(f"mscost-{k}")
        try:
            with LoopbackNfsp(workdir, k) as srv:
                for size in sizes(ctx):
                    prep, = run_loadgens([(srv.client_prefix(), loadgen_argv(
                        srv.server, srv.export, proto="tcp", workload="seqread",
                        file=f"cost{size}", file_size=f"{size}M", prepare_only=True))],
                        timeout=3600, log_dir=ctx.logs, tag=f"mscost-{k}-prepare")
                    if prep.get("errors"):
                        raise RuntimeError(f"preparing cost{size} failed: {prep}")
                    for proto in ("udp", "tcp"):
                        rows.append(measure(ctx, srv, proto, size, seconds))
        finally:
            ctx.cleanup(workdir)
    return {"seconds": seconds, "rows": rows}
