"""`nfspd --workers N` against N=0 in one session (issue 15): READDIRPLUS and
GETATTR rates on loopback with 1 and 8 clients (tools/dev/benchmarks/metadata.py's
workload over UDP or TCP, one call at a time per client), and the CPU per call of nfspd
and of its workers, the settings alternated so that the machine's other load
hits both alike.

    tools/as-root python3 -m tools.dev.bench_workers [--seconds 5] [--rounds 2] [--workers 0,1]
"""

import json
import os
import tempfile

import click

from nfspd import admin
from tools.dev.benchmarks.harness import combine, loadgen_argv, proc_cpu, run_loadgens
from tools.dev.benchmarks.servers import LoopbackNfsp
from tools.dev.netns import wait_until


def _workers(srv):
    st = admin.request(admin.socket_path(srv.cluster.nfspd.state))["status"]["workers"]
    return st or {"pids": []}


def _restart(srv, n):
    d = srv.cluster.nfspd
    if "--workers" in d.extra_args:
        del d.extra_args[-2:]  # put there by the previous call
    d.extra_args += ["--workers", str(n)]
    d.restart()
    wait_until(lambda: None not in _workers(srv)["pids"], 30, what="workers ready")
    srv.pid = d.pid


def _measure(srv, op, clients, entries, seconds, logs, proto):
    procs = 1 if clients == 1 else 2
    specs = [(srv.client_prefix(), loadgen_argv(
        srv.server, srv.export, proto=proto, workload="meta", ops=op, clients=clients // procs,
        client_base=i * (clients // procs), window=1, duration=seconds, dir_entries=entries,
        no_prepare=True)) for i in range(procs)]
    pids = [srv.pid] + _workers(srv)["pids"]
    cpu0 = [proc_cpu(p) for p in pids]
    reports = run_loadgens(specs, timeout=seconds + 120, log_dir=logs, tag=f"w-{op}-{clients}")
    cpu = [proc_cpu(p) - c for p, c in zip(pids, cpu0)]
    total = combine(reports)
    calls = total["calls"]
    return {"op": op, "clients": clients, "calls_per_s": round(calls / total["seconds"], 1),
            "entries_per_s": round(sum(r["entries"] for r in reports) / total["seconds"]),
            "nfspd_us_per_call": round(cpu[0] / calls * 1e6, 1),
            "workers_us_per_call": round(sum(cpu[1:]) / calls * 1e6, 1),
            "errors": total["error_count"], "loadgen_cpu_util": total["loadgen_cpu_util"]}


@click.command()
@click.option("--seconds", default=5.0)
@click.option("--rounds", default=2)
@click.option("--entries", default=1000)
@click.option("--workers", "settings", default="0,1")
@click.option("--ops", default="readdirplus,getattr")
@click.option("--proto", type=click.Choice(["udp", "tcp"]), default="udp", show_default=True)
def main(seconds, rounds, entries, settings, ops, proto):
    work = tempfile.mkdtemp(prefix="bench-workers-")
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    with LoopbackNfsp(os.path.join(work, "nfsp"), 2, "rw,no_root_squash,insecure") as srv:
        prep, = run_loadgens([(srv.client_prefix(), loadgen_argv(
            srv.server, srv.export, workload="meta", dir_entries=entries, prepare_only=True,
            window=16))], timeout=3600, log_dir=logs, tag="prepare")
        if prep.get("errors"):
            raise RuntimeError(f"preparing the directory failed: {prep}")
        for r in range(rounds):
            for n in (int(s) for s in settings.split(",")):
                _restart(srv, n)
                for op in ops.split(","):
                    for clients in (1, 8):
                        row = {"round": r, "workers": n, "proto": proto,
                               **_measure(srv, op, clients, entries, seconds, logs, proto)}
                        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
