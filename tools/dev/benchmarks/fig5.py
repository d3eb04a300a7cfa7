"""Figure 5 of the paper (section 6.3): M client hosts each read a file
sequentially at once (the same file, or one each), with k iods, every link
capped; aggregate MB/s. The same against nfs-ganesha on the metaserver's host.

Each client host runs one loadgen (one logical client, UDP, --window calls
in flight, 32 KiB READs, every byte checked); all start at the same wall-clock
instant and the aggregate is every byte read over the span from the first
start to the last end. A point stops after ``run_seconds`` even if the files
are not read to their end (what was read counts).
"""

import os
import time

from tools.dev.benchmarks import ganesha as ganesha_mod
from tools.dev.benchmarks.harness import (
    combine, limited_by, loadgen_argv, proc_cpu, rate_MBps, run_loadgens,
)
from tools.dev.benchmarks.links import CpuSampler, link_traffic
from tools.dev.benchmarks.servers import TestbedServer
from tools.dev.loadgen import PATTERN

MOUNT_PORT = 20048
START_DELAY = 4.0  # seconds for Python processes to start and mount on 2 busy cores


def prepare_nfsp(ctx, srv, size_mib, n_files, tag):
    """The shared file and n_files per-client files, written through NFS
    from client host 0 (kept in the workdir for the next rate)."""
    common = dict(proto="tcp", workload="seqread", file_size=f"{size_mib}M", prepare_only=True,
                  mount_port=MOUNT_PORT, window=8)
    specs = [(srv.client_prefix(0), loadgen_argv(srv.server, srv.export, **common)),
             (srv.client_prefix(min(1, len(srv.tb.clients) - 1)),
              loadgen_argv(srv.server, srv.export, clients=n_files, per_client=True, **common))]
    for spec in specs:
        report, = run_loadgens([spec], timeout=3600, log_dir=ctx.logs, tag=f"prep-{tag}")
        if report.get("errors"):
            raise RuntimeError(f"preparing figure 5's files failed: {report}")


def prepare_local(export, size_mib, n_files):
    """The same files written straight into ganesha's exported directory."""
    d = os.path.join(export, "loadgen")
    os.makedirs(d, exist_ok=True)
    size = size_mib << 20
    for name in ["data"] + [f"data.{i}" for i in range(n_files)]:
        path = os.path.join(d, name)
        if not (os.path.exists(path) and os.path.getsize(path) == size):
            PATTERN.write_local(path, f"loadgen/{name}", size)


def point(ctx, srv, rate, variant, n_clients, size_mib, proto="udp"):
    p = ctx.params
    start_at = time.time() + START_DELAY + 0.5 * n_clients
    specs = []
    for i in range(n_clients):
        specs.append((srv.client_prefix(i), loadgen_argv(
            srv.server, srv.export, proto=proto, clients=1, client_base=i, window=p.window,
            workload="seqread", per_client=variant == "per-client", file_size=f"{size_mib}M",
            passes=1, duration=p.run_seconds, no_prepare=True, mount_port=MOUNT_PORT,
            start_at=f"{start_at:.3f}")))
    before = srv.counters()
    cpu0 = proc_cpu(srv.pid)
    with CpuSampler() as sampler:
        reports = run_loadgens(specs, timeout=START_DELAY + p.run_seconds + 120,
                               log_dir=ctx.logs, tag=f"fig5-{srv.kind}{srv.n_iods}-{rate}")
    server_cpu = proc_cpu(srv.pid) - cpu0
    row = combine(reports)
    t0, t1 = min(r["start"] for r in reports), max(r["end"] for r in reports)
    after = srv.counters()
    link_MBps = rate_MBps(rate)
    ports, busiest = link_traffic(before, after, row["seconds"], link_MBps)
    servers_links = srv.n_iods if srv.kind == "nfsp" else 1
    row.update(
        server=srv.kind, iods=srv.n_iods, rate=rate, variant=variant, clients=n_clients,
        proto=proto, file_MiB=size_mib,
        link_limit_MBps=round(min(n_clients, servers_links) * link_MBps, 1),
        machine_busy=sampler.busy(t0, t1), server_cpu_s=round(server_cpu, 2),
        busiest_link={"port": busiest, **ports.get(busiest, {})}, links=ports)
    row["limited_by"] = limited_by(ports.get(busiest, {}).get("util"), row["machine_busy"],
                                   row["retransmits"], row["calls"])
    ctx.log(f"fig5 {srv.kind} k={srv.n_iods} {rate} {proto} {variant} M={n_clients}: "
            f"{row['MBps']} MB/s (limit {row['link_limit_MBps']}, busy {row['machine_busy']}, "
            f"{row['error_count']} errors, {row['retransmits']} retransmits) "
            f"-> {row['limited_by']}")
    return row


def setups(ctx):
    p = ctx.params
    out = [("nfsp", k) for k in p.iods]
    why = ganesha_mod.unavailable(p)
    if why is None:
        out.append(("ganesha", 0))
    else:
        ctx.log(f"fig5: no baseline: {why}")
    return out, why


def run(ctx):
    p = ctx.params
    size_mib = p.file_mib
    n_clients = max(p.clients)
    rows = []
    kinds, ganesha_missing = setups(ctx)
    # The fastest links first: the files are written through NFS once, at
    # the best rate, and the testbed keeps them for the slower one.
    rates = sorted(p.rates, key=rate_MBps, reverse=True)
    for kind, k in kinds:
        workdir = ctx.workdir(f"fig5-{kind}{k}")
        try:
            for n, rate in enumerate(rates):
                ctx.log(f"fig5: testbed {kind} k={k} clients={n_clients} at {rate}")
                with TestbedServer(kind, workdir, k, n_clients, rate, p.ipfrag_max_dist) as srv:
                    if n == 0:
                        if kind == "nfsp":
                            prepare_nfsp(ctx, srv, size_mib, n_clients, f"{kind}{k}")
                        else:
                            prepare_local(srv.export, size_mib, n_clients)
                    for proto in (p.nfsp_protos if kind == "nfsp" else p.ganesha_protos):
                        for variant in ("shared", "per-client"):
                            for m in p.clients:
                                rows.append(point(ctx, srv, rate, variant, m, size_mib, proto))
        finally:
            ctx.cleanup(workdir)
    return {"file_MiB": size_mib, "window": p.window, "run_seconds": p.run_seconds,
            "rates": list(p.rates), "iods": list(p.iods), "clients": list(p.clients),
            "baseline_missing": ganesha_missing, "rows": rows}
