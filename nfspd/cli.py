"""The `nfspd` command."""

import logging
import sys

import click
import trio

from common.exports import ExportsError
from common.iodsconf import IodsConfError
from common.keyfile import KeyFileError
from common.runtime import heap, logs
from common.runtime.metrics import parse_address
from nfspd.layouts import LayoutError
from nfspd.server import STRIPE_UNIT, Config, Metaserver


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--exports", "exports", default="/etc/nfsp/exports", show_default=True,
              type=click.Path(dir_okay=False),
              help="exports(5)-style file: which directories are exported to which clients. "
                   "SIGHUP reloads it.")
@click.option("--state-dir", default="/var/lib/nfsp", show_default=True,
              type=click.Path(file_okay=False),
              help="Where nfspd keeps what must survive restarts: the file-handle key and the "
                   "mount list.")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Local data store for file contents when no iods are configured "
                   "[default: STATE_DIR/data].")
@click.option("--bind", default="0.0.0.0", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; UDP replies leave from the "
                   "address each request was sent to).")
@click.option("--port", default=2049, show_default=True, type=click.IntRange(0, 65535),
              help="NFS port, UDP and TCP.")
@click.option("--mount-port", default=20048, show_default=True, type=click.IntRange(0, 65535),
              help="MOUNT protocol port, UDP and TCP.")
@click.option("--portmap", type=click.Choice(["auto", "system", "embedded", "off"]),
              default="auto", show_default=True,
              help="auto: register with the system rpcbind if one runs, else serve an embedded "
                   "portmapper on port 111; system/embedded: only that; off: neither "
                   "(clients then need port= and mountport=).")
@click.option("--iods", "iods", default=None, type=click.Path(dir_okay=False),
              help="iods.conf: the I/O daemons file data is striped over, one host[:port] per "
                   "line. Without it the data lives in the local store (--data-dir). iods may "
                   "be appended later, never removed or reordered.")
@click.option("--key", "key", default=None, type=click.Path(dir_okay=False),
              help="Cluster key file shared with the iods (required with --iods; mode 0600).")
@click.option("--unlinkd", "unlinkd", type=click.Choice(["spawn", "external", "off"]),
              default="spawn", show_default=True,
              help="With --iods, how deleted files' stripes are purged: spawn (nfspd runs and "
                   "supervises unlinkd, which drains a journal made durable before each REMOVE "
                   "is answered), external (the journal, drained by an unlinkd you run: "
                   "unlinkd --journal STATE_DIR/purge ...), off (nfspd tells the iods itself, "
                   "best effort; a crash leaks what was pending until `nfsp scrub --purge`).")
@click.option("--stripe-unit", default=STRIPE_UNIT, show_default=True, type=int,
              help="Bytes per stripe for files created from now on (a multiple of 4096); "
                   "each file keeps the stripe unit it was created with. A pNFS client "
                   "cuts its I/O at stripe boundaries, so 1 MiB lets it send 1 MiB calls.")
@click.option("--metrics", "metrics", default=None, metavar="ADDR:PORT",
              help="Serve the counters of `nfsp status` for Prometheus at "
                   "http://ADDR:PORT/metrics (off by default).")
@click.option("--v4-lease", "v4_lease", default=90, show_default=True,
              type=click.IntRange(1, 3600),
              help="NFSv4 lease time in seconds: a client silent for longer loses its opens "
                   "and locks. The grace period after a restart lasts as long.")
@click.option("--v4-domain", "v4_domain", default=None,
              help="NFSv4 idmapping domain: owners are sent as user@DOMAIN (from this host's "
                   "passwd and group). Default: numeric ids, as Linux clients expect with "
                   "AUTH_SYS.")
@click.option("--pnfs/--no-pnfs", default=True, show_default=True,
              help="With --iods, hand NFSv4.1 clients pNFS files layouts: they read and write "
                   "the iods' data servers (iod --ds-port; where clients reach them: "
                   "iods.conf's ds=) directly, and the metaserver carries only metadata. "
                   "--no-pnfs: every byte through the metaserver, as over NFSv3/TCP.")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(0, 64),
              help="Worker processes that answer NFSv3 READDIR and READDIRPLUS (the costliest "
                   "read-only calls) on other cores; 0: nfspd answers everything itself.")
@click.option("--log-level", type=click.Choice(logs.LEVELS), default="info", show_default=True)
@click.option("--syslog", is_flag=True, help="Log to syslog/journald instead of stderr.")
def main(exports, state_dir, data_dir, bind, port, mount_port, portmap, iods, key, unlinkd,
         stripe_unit, metrics, v4_lease, v4_domain, pnfs, workers, log_level, syslog):
    """NFSP metaserver: an NFSv2/NFSv3/NFSv4.1 server (with MOUNT and a portmapper)
    whose regular files are metafiles and whose data lives in a data store."""
    logs.setup("nfspd", log_level, syslog)
    heap.keep_buffers()  # a relayed WRITE's MiB record, its frames to the iods
    try:
        metrics = parse_address(metrics) if metrics is not None else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--metrics")
    config = Config(exports, state_dir, data_dir, bind, port, mount_port, portmap,
                    iods=iods, key=key, stripe_unit=stripe_unit, unlinkd=unlinkd,
                    metrics=metrics, v4_lease=v4_lease, v4_domain=v4_domain, pnfs=pnfs,
                    workers=workers, log_level=log_level)
    try:
        server = Metaserver(config)
    except (ExportsError, IodsConfError, KeyFileError, LayoutError, OSError, ValueError) as e:
        logging.getLogger("nfspd").error("%s", e)
        sys.exit(1)
    try:
        trio.run(server.run)
    except OSError as e:
        logging.getLogger("nfspd").error("cannot serve: %s", e)
        sys.exit(1)


if __name__ == "__main__":
    main()
