"""`python3 -m tools.dev.benchmarks run [--quick] [--only NAME] [--out DIR]`."""

import json
import os
import sys
import traceback

import click

from tools.dev.benchmarks import (
    bonnie, bootstorm, fig5, harness, metadata, mscost, pnfs, profile, quick, report,
)

BENCHMARKS = {"fig5": fig5, "bonnie": bonnie, "metadata": metadata, "mscost": mscost,
              "bootstorm": bootstorm, "profile": profile, "pnfs": pnfs}


def _ints(text):
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: comma-separated integers") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """NFSP benchmarks (issue 7): JSON, a markdown table and PNG plots."""


@cli.command()
@click.option("--quick", "quick_mode", is_flag=True,
              help="A small subset for CI (under 3 minutes): exit status 1 if a figure "
                   "fell past its generous bound. With --only: those benchmarks, small.")
@click.option("--only", multiple=True, type=click.Choice(sorted(BENCHMARKS)),
              help="Run only this benchmark (repeatable); other results already in "
                   "--out are kept.")
@click.option("--out", default="bench-results", show_default=True,
              type=click.Path(file_okay=False), help="Directory for results, plots and logs.")
@click.option("--full", is_flag=True,
              help="The issue's scale: 256 MiB files, a minute per figure-5 point.")
@click.option("--file-mib", type=click.IntRange(1), help="File size (figure 5, bonnie, "
              "metaserver cost) [default: 64, --full: 256].")
@click.option("--rates", default="100mbit,1gbit", show_default=True,
              help="Link caps of the testbed series.")
@click.option("--clients", "clients_", default="1,2,4,8", show_default=True,
              help="Figure 5: client hosts.")
@click.option("--iods", "iods_", default="1,2,4,8", show_default=True,
              help="Figure 5: iod counts.")
@click.option("--mscost-iods", default="1,2,4,8,16", show_default=True,
              help="Metaserver cost: iod counts.")
@click.option("--run-seconds", type=click.FloatRange(1),
              help="Figure 5: cap on one point [default: 20, --full: 60].")
@click.option("--window", default=16, show_default=True, type=click.IntRange(1, 256),
              help="Calls in flight per client for streaming reads and writes.")
@click.option("--ipfrag-max-dist", default="0", show_default=True,
              help="net.ipv4.ipfrag_max_dist on the testbed's client hosts, or 'default' "
                   "to leave the kernel's (64, which the iods' interleaved fragments trip).")
@click.option("--meta-ground", type=click.Choice(["journalled", "ram", "work"]),
              default="journalled", show_default=True,
              help="Metadata: where the exports live. journalled: on a journalled ext4 "
                   "made for the run where OUT's file system has none; ram: on a "
                   "journalled ext4 on a zram device (flushes cost nothing); work: on OUT's.")
@click.option("--meta-warmup", default=3.0, show_default=True, type=click.FloatRange(0),
              help="Metadata: seconds of each row's load every server gets, unrecorded, "
                   "before the rows (not with --quick).")
@click.option("--no-ganesha", is_flag=True, help="Skip the nfs-ganesha baseline.")
@click.option("--keep", is_flag=True, help="Keep the servers' data under OUT/work.")
def run(quick_mode, only, out, full, file_mib, rates, clients_, iods_, mscost_iods, run_seconds,
        window, ipfrag_max_dist, meta_ground, meta_warmup, no_ganesha, keep):
    """Run the benchmarks (needs root: network namespaces)."""
    if os.geteuid() != 0:
        raise click.ClickException("needs root (network namespaces, tc, raw sockets)")
    params = harness.Params(
        file_mib=file_mib or (256 if full else 64),
        rates=tuple(r.strip() for r in rates.split(",") if r.strip()),
        clients=_ints(clients_), iods=_ints(iods_), mscost_iods=_ints(mscost_iods),
        run_seconds=run_seconds or (60.0 if full else 20.0), window=window,
        ganesha=not no_ganesha, meta_ground=meta_ground, meta_warmup=meta_warmup,
        ipfrag_max_dist=None if ipfrag_max_dist == "default" else _ints(ipfrag_max_dist)[0])
    for r in params.rates:
        try:
            harness.rate_MBps(r)
        except ValueError:
            raise click.BadParameter(f"{r!r}: e.g. 100mbit or 1gbit", param_hint="--rates")
    os.makedirs(out, exist_ok=True)
    ctx = harness.Context(out, params, quick=quick_mode, keep=keep)
    results_path = os.path.join(ctx.out, "results.json")
    results = {}
    if only and os.path.exists(results_path):
        with open(results_path) as f:
            results = json.load(f)
    results["environment"] = harness.environment()
    results["command"] = "python3 -m tools.dev.benchmarks " + " ".join(sys.argv[1:])
    results["params"] = {k: list(v) if isinstance(v, tuple) else v
                         for k, v in vars(params).items()}
    failed = []
    if only:
        todo = {n: BENCHMARKS[n] for n in only}
    else:
        todo = {"quick": quick} if quick_mode else BENCHMARKS
    for name, module in todo.items():
        ctx.log(f"== {name}")
        try:
            results[name] = module.run(ctx)
        except Exception:
            failed.append(name)
            results[name] = {"error": traceback.format_exc()}
            ctx.log(f"{name} failed:\n{traceback.format_exc()}")
        report.write(ctx.out, results)
    paths = report.write(ctx.out, results)
    if not keep:
        ctx.cleanup(ctx.work)
    click.echo("\n".join(paths))
    if "quick" in todo and not results["quick"].get("ok"):
        raise click.ClickException("quick benchmarks: a check failed (see results.md)")
    if failed:
        raise click.ClickException(f"failed: {', '.join(failed)} (see {ctx.logs}/run.log)")


@cli.command("report")
@click.argument("out", type=click.Path(file_okay=False, exists=True))
def report_cmd(out):
    """Rewrite OUT's table and plots from its results.json."""
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    click.echo("\n".join(report.write(out, results)))


if __name__ == "__main__":
    cli()
