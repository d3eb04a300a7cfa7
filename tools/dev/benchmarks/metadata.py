"""Metadata rates on loopback, no link caps: GETATTR, LOOKUP (random names of
a 10,000-entry directory), CREATE+REMOVE (a pair counts as one), and
READDIRPLUS calls walking that directory (dircount 4 KiB, maxcount 32 KiB,
as Linux asks), with 1 and 16 concurrent clients, each one call at a time.
NFSP against nfs-ganesha.

16 clients run as 2 loadgen processes of 8 (one per core): a Python client
costs about as much CPU per call as nfspd does, so against a C server the
clients may be what saturates; each row says how busy they were. The
server's own CPU per call (from /proc/PID/stat) is the figure that does not
depend on who else uses the machine.
"""

from tools.dev.benchmarks import ganesha as ganesha_mod
from tools.dev.benchmarks.harness import combine, loadgen_argv, proc_cpu, run_loadgens
from tools.dev.benchmarks.links import CpuSampler
from tools.dev.benchmarks.servers import LoopbackGanesha, LoopbackNfsp

OPS = ("getattr", "lookup", "create_remove", "readdirplus")
CLIENTS = (1, 16)
NFSP_IODS = 2


def measure(ctx, srv, op, n_clients, entries, seconds):
    procs = 1 if n_clients == 1 else 2
    specs = [(srv.client_prefix(), loadgen_argv(
        srv.server, srv.export, proto="udp", workload="meta", ops=op, clients=n_clients // procs,
        client_base=i * (n_clients // procs), window=1, duration=seconds,
        dir_entries=entries, no_prepare=True)) for i in range(procs)]
    cpu0 = proc_cpu(srv.pid)
    with CpuSampler() as sampler:
        reports = run_loadgens(specs, timeout=seconds + 120, log_dir=ctx.logs,
                               tag=f"meta-{srv.kind}-{op}-{n_clients}")
    cpu = proc_cpu(srv.pid) - cpu0
    total = combine(reports)
    count = sum(r["per_op"].get(op, {}).get("count", 0) for r in reports)
    calls = total["calls"]
    row = {"server": srv.kind, "op": op, "clients": n_clients,
           "ops_per_s": round(count / total["seconds"], 1),
           "p50_ms": max(r["per_op"].get(op, {}).get("p50_ms") or 0 for r in reports),
           "p99_ms": max(r["per_op"].get(op, {}).get("p99_ms") or 0 for r in reports),
           "entries_per_s": round(sum(r["entries"] for r in reports) / total["seconds"], 1),
           "server_cpu_us_per_call": round(cpu / calls * 1e6, 1) if calls else None,
           "calls_per_server_cpu_s": round(calls / cpu) if cpu else None,
           "loadgen_cpu_util": total["loadgen_cpu_util"],
           "machine_busy": sampler.busy(min(r["start"] for r in reports),
                                        max(r["end"] for r in reports)),
           "errors": total["error_count"], "error_samples": total["error_samples"]}
    ctx.log(f"meta {srv.kind} {op} x{n_clients}: {row['ops_per_s']}/s, server "
            f"{row['server_cpu_us_per_call']} us CPU/call, {row['errors']} errors")
    return row


def run(ctx):
    p = ctx.params
    seconds = 2.0 if ctx.quick else p.meta_seconds
    entries = 1000 if ctx.quick else p.dir_entries
    setups = [("nfsp", lambda: LoopbackNfsp(ctx.workdir("meta-nfsp"), NFSP_IODS))]
    missing = ganesha_mod.unavailable(p)
    if missing is None:
        setups.append(("ganesha", lambda: LoopbackGanesha(ctx.workdir("meta-ganesha"))))
    rows = []
    for kind, make in setups:
        try:
            with make() as srv:
                ctx.log(f"meta {kind}: preparing a directory of {entries} entries")
                prep, = run_loadgens([(srv.client_prefix(), loadgen_argv(
                    srv.server, srv.export, workload="meta", dir_entries=entries,
                    prepare_only=True, window=16))], timeout=3600, log_dir=ctx.logs,
                    tag=f"meta-{kind}-prepare")
                if prep.get("errors"):
                    raise RuntimeError(f"preparing the metadata tree on {kind} failed: {prep}")
                for op in OPS:
                    for n in CLIENTS:
                        rows.append(measure(ctx, srv, op, n, entries, seconds))
        finally:
            ctx.cleanup(ctx.workdir(f"meta-{kind}"))
    return {"dir_entries": entries, "seconds": seconds, "nfsp_iods": NFSP_IODS,
            "baseline_missing": missing, "rows": rows}
