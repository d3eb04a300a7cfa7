"""Boot storm (../shared/seeds/p2p-pnfs-boot-storm-slides.txt): 8 client hosts
read the same set of small files at once (boot-image-like sizes, 1-256 KiB),
each file looked up, its attributes fetched and read whole. Aggregate
throughput, and the busiest link from the testbed's counters: with a single
server that is its own link; with NFSP over UDP the iods' links share it.
"""

import time

from tools.dev.benchmarks import ganesha as ganesha_mod
from tools.dev.benchmarks.harness import combine, limited_by, loadgen_argv, rate_MBps, run_loadgens
from tools.dev.benchmarks.links import CpuSampler, link_traffic
from tools.dev.benchmarks.servers import TestbedServer
from tools.dev.loadgen import small_file_sizes

MOUNT_PORT = 20048
IODS = 4
START_DELAY = 8.0


def storm(ctx, srv, proto, n_clients, files, rate):
    start_at = time.time() + START_DELAY
    specs = [(srv.client_prefix(i), loadgen_argv(
        srv.server, srv.export, proto=proto, workload="smallfiles", files=files, clients=1,
        client_base=i, window=4, duration=120, passes=1, no_prepare=True,
        mount_port=MOUNT_PORT, start_at=f"{start_at:.3f}")) for i in range(n_clients)]
    before = srv.counters()
    with CpuSampler() as sampler:
        reports = run_loadgens(specs, timeout=START_DELAY + 240, log_dir=ctx.logs,
                               tag=f"boot-{srv.kind}-{proto}")
    after = srv.counters()
    row = combine(reports)
    ports, busiest = link_traffic(before, after, row["seconds"], rate_MBps(rate))
    top = sorted(ports, key=lambda p: -max(ports[p]["rx_MBps"], ports[p]["tx_MBps"]))[:4]
    row.update(server=srv.kind, iods=srv.n_iods, proto=proto, rate=rate, clients=n_clients,
               files=files, files_per_s=round(row["ops"] / row["seconds"], 1),
               busiest_link={"port": busiest, **ports[busiest]},
               top_links={p: ports[p] for p in top},
               machine_busy=sampler.busy(min(r["start"] for r in reports),
                                         max(r["end"] for r in reports)))
    row["limited_by"] = limited_by(ports[busiest]["util"], row["machine_busy"],
                                   row["retransmits"], row["calls"])
    ctx.log(f"boot storm {srv.kind} {proto}: {row['MBps']} MB/s, {row['files_per_s']} files/s, "
            f"busiest {busiest} at {row['busiest_link']['util']}, {row['error_count']} errors")
    return row


def run(ctx):
    p = ctx.params
    rate = min(p.rates, key=rate_MBps)
    n_clients = 2 if ctx.quick else 8
    files = 40 if ctx.quick else 200
    kinds = ["nfsp"]
    missing = ganesha_mod.unavailable(p)
    if missing is None:
        kinds.append("ganesha")
    rows = []
    for kind in kinds:
        workdir = ctx.workdir(f"boot-{kind}")
        try:
            with TestbedServer(kind, workdir, IODS, n_clients, rate, p.ipfrag_max_dist) as srv:
                prep, = run_loadgens([(srv.client_prefix(0), loadgen_argv(
                    srv.server, srv.export, proto="tcp", workload="smallfiles", files=files,
                    prepare_only=True, mount_port=MOUNT_PORT))], timeout=3600,
                    log_dir=ctx.logs, tag=f"boot-{kind}-prepare")
                if prep.get("errors"):
                    raise RuntimeError(f"preparing the boot files on {kind} failed: {prep}")
                for proto in ("udp", "tcp"):
                    rows.append(storm(ctx, srv, proto, n_clients, files, rate))
        finally:
            ctx.cleanup(workdir)
    sizes = small_file_sizes(files)
    return {"files": files, "total_KiB_per_client": round(sum(sizes) / 1024), "iods": IODS,
            "rate": rate, "baseline_missing": missing, "rows": rows}
