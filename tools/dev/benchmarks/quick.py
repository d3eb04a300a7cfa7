"""`run --quick`: a small subset for CI (well under 3 minutes) that checks
nothing regressed past generous bounds. The floors are a few percent of
what this 2-core machine measures while busy with other work, so a failure
means something broke (the iods' direct path, a stuck retransmission loop,
a per-request cost gone up tenfold), not a slow day.
"""

from tools.dev.benchmarks import ganesha as ganesha_mod
from tools.dev.benchmarks.harness import loadgen_argv, proc_cpu, run_loadgens
from tools.dev.benchmarks.servers import LoopbackGanesha, LoopbackNfsp, TestbedServer

FLOOR_MBps = 2.0            # loopback: about 50-90 MB/s measured
FLOOR_TESTBED_MBps = 1.0    # two 100 Mbit/s iod links: about 20 MB/s measured
FLOOR_GETATTR = 100.0       # per second; about 2,500 measured
CEILING_US_PER_READ = 5000  # nfspd CPU per forwarded READ; about 250 measured
MIN_IOD_SHARE = 0.8         # of the bytes read over UDP, what came from the iods' links


class Checks:
    def __init__(self, ctx):
        self.ctx = ctx
        self.items = []

    def at_least(self, name, value, bound):
        self._add(name, value, f">= {bound}", value is not None and value >= bound)

    def at_most(self, name, value, bound):
        self._add(name, value, f"<= {bound}", value is not None and value <= bound)

    def skipped(self, name, why):
        self.items.append({"check": name, "value": None, "bound": None, "ok": None, "skipped": why})
        self.ctx.log(f"quick: {name}: skipped ({why})")

    def _add(self, name, value, bound, ok):
        self.items.append({"check": name, "value": value, "bound": bound, "ok": ok})
        self.ctx.log(f"quick: {name} = {value} ({bound}): {'ok' if ok else 'FAILED'}")


def _one(ctx, srv, tag, **opts):
    r, = run_loadgens([(srv.client_prefix(0), loadgen_argv(srv.server, srv.export, **opts))],
                      timeout=300, log_dir=ctx.logs, tag=tag)
    return r


def loopback_nfsp(ctx, checks, figures):
    with LoopbackNfsp(ctx.workdir("quick-nfsp"), 2) as srv:
        prep = _one(ctx, srv, "quick-prepare", workload="seqread", file_size="16M",
                    prepare_only=True)
        checks.at_most("nfsp prepare errors", prep["errors"], 0)
        for proto in ("udp", "tcp"):
            cpu0 = proc_cpu(srv.pid)
            r = _one(ctx, srv, f"quick-{proto}", workload="seqread", proto=proto,
                     file_size="16M", no_prepare=True, duration=60)
            cpu = proc_cpu(srv.pid) - cpu0
            figures[f"nfsp_loopback_{proto}_read"] = r
            checks.at_most(f"nfsp {proto} read errors", r["error_count"], 0)
            checks.at_least(f"nfsp {proto} read MB/s", r["MBps"], FLOOR_MBps)
            checks.at_least(f"nfsp {proto} read bytes", r["bytes_read"], 16 << 20)
            if proto == "udp":
                reads = r["per_op"]["read"]["count"]
                checks.at_most("nfspd CPU us per forwarded READ",
                               round(cpu / reads * 1e6, 1) if reads else None, CEILING_US_PER_READ)
        r = _one(ctx, srv, "quick-getattr", workload="meta", ops="getattr", dir_entries=100,
                 window=4, duration=2)
        figures["nfsp_getattr"] = r
        checks.at_most("nfsp GETATTR errors", r["error_count"], 0)
        checks.at_least("nfsp GETATTR/s", r["per_op"].get("getattr", {}).get("per_s"),
                        FLOOR_GETATTR)
    ctx.cleanup(ctx.workdir("quick-nfsp"))


def testbed_point(ctx, checks, figures):
    """Two client hosts read one file striped over two iod hosts through
    100 Mbit/s links: the path of figure 5, spoofed replies included."""
    from tools.dev.benchmarks import fig5
    workdir = ctx.workdir("quick-testbed")
    try:
        with TestbedServer("nfsp", workdir, 2, 2, "100mbit", ctx.params.ipfrag_max_dist) as srv:
            fig5.prepare_nfsp(ctx, srv, 8, 2, "quick")
            ctx.params.run_seconds = 30
            row = fig5.point(ctx, srv, "100mbit", "shared", 2, 8)
    finally:
        ctx.cleanup(workdir)
    figures["testbed_udp_shared_k2_m2"] = row
    checks.at_most("testbed read errors", row["error_count"], 0)
    checks.at_least("testbed aggregate MB/s", row["MBps"], FLOOR_TESTBED_MBps)
    from_iods = sum(v["tx_MBps"] for port, v in row["links"].items() if port.startswith("iod"))
    to_clients = sum(v["rx_MBps"] for port, v in row["links"].items() if port.startswith("c"))
    checks.at_least("share of the clients' bytes sent by the iods' links",
                    round(from_iods / to_clients, 3) if to_clients else None, MIN_IOD_SHARE)


def loopback_ganesha(ctx, checks, figures):
    missing = ganesha_mod.available() if ctx.params.ganesha else "disabled"
    if missing:
        checks.skipped("ganesha udp read MB/s", missing)
        return
    with LoopbackGanesha(ctx.workdir("quick-ganesha")) as srv:
        r = _one(ctx, srv, "quick-ganesha", workload="seqread", file_size="16M", duration=60)
        figures["ganesha_loopback_udp_read"] = r
        checks.at_most("ganesha read errors", r["error_count"], 0)
        checks.at_least("ganesha udp read MB/s", r["MBps"], FLOOR_MBps)
    ctx.cleanup(ctx.workdir("quick-ganesha"))


def run(ctx):
    checks = Checks(ctx)
    figures = {}
    loopback_nfsp(ctx, checks, figures)
    testbed_point(ctx, checks, figures)
    loopback_ganesha(ctx, checks, figures)
    ok = all(c["ok"] is not False for c in checks.items)
    return {"ok": ok, "checks": checks.items, "figures": figures}
