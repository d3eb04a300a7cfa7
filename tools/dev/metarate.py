"""`python3 -m tools.dev.metarate SERVER OPS CLIENTS`: rows of the metadata
benchmark (tools/dev/benchmarks/metadata.py) for one server, now: what an
A/B comparison of two trees needs while changing nfspd, where the whole
benchmark takes ten minutes. Run it from each tree in turn (it measures the
nfspd of the tree it is run from), alternating, several rounds: on this
shared 2-core machine one run of a row moves by 5-15%.

SERVER: nfsp (a sync export), nfsp-async, or ganesha. OPS: comma-separated,
of getattr, lookup, create_remove, mkdir_rmdir, rename, readdirplus. One
JSON line per row, as the benchmark writes it (for nfspd, with what its
group commit did during the row: flushes, calls per flush, milliseconds per
flush, the share of the row spent flushing).

Needs root (network namespaces). The exports live where the benchmark's do
(--ground, as its --meta-ground).
"""

import json
import tempfile

import click

from tools.dev.benchmarks import ground, harness, metadata
from tools.dev.benchmarks.servers import LoopbackGanesha, LoopbackNfsp


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("server", type=click.Choice(["nfsp", "nfsp-async", "ganesha"]))
@click.argument("ops")
@click.argument("clients", type=click.IntRange(1, 64))
@click.option("--proto", type=click.Choice(["udp", "tcp"]), default="tcp", show_default=True)
@click.option("--seconds", type=click.FloatRange(0.5), default=5.0, show_default=True)
@click.option("--entries", type=click.IntRange(1), default=1000, show_default=True,
              help="Entries of the directory LOOKUP and READDIRPLUS use.")
@click.option("--rounds", type=click.IntRange(1), default=1, show_default=True)
@click.option("--warmup", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Seconds of each row's load, unrecorded, before the rows (as the "
                   "benchmark's --meta-warmup; nfspd on PyPy wants it).")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True,
              help="nfspd --workers.")
@click.option("--ground", "where", type=click.Choice(["journalled", "ram", "work"]),
              default="journalled", show_default=True)
def main(server, ops, clients, proto, seconds, entries, rounds, warmup, workers, where):
    ops = [op.strip() for op in ops.split(",") if op.strip()]
    unknown = set(ops) - set(metadata.OPS)
    if unknown:
        raise click.BadParameter(f"unknown: {', '.join(sorted(unknown))}", param_hint="OPS")
    if clients > 1 and clients % 2:
        raise click.BadParameter("1, or an even number (two load generators share them)",
                                 param_hint="CLIENTS")
    with tempfile.TemporaryDirectory(prefix="metarate-") as out:
        ctx = harness.Context(out, harness.Params())
        with ground.chosen(ctx, where, "ground") as (base, _):
            if server == "ganesha":
                srv = LoopbackGanesha(f"{base}/ganesha")
            else:
                options = metadata.EXPORT_OPTIONS + (",async" if server == "nfsp-async" else "")
                srv = LoopbackNfsp(f"{base}/nfsp", metadata.NFSP_IODS, options, workers=workers)
            with srv:
                srv.label = server
                metadata.prepare(ctx, srv, entries, "prepare")
                metadata.warm_up(ctx, srv, entries, warmup, ops, (proto,))
                for _ in range(rounds):
                    for op in ops:
                        row = metadata.measure(ctx, srv, op, clients, entries, seconds, proto)
                        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
