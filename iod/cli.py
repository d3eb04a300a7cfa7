"""The `iod` command: the I/O daemon (iod/daemon.py)."""

import ipaddress
import logging
import sys

import click

from common import iodproto, keyfile
from common.iodsconf import DS_PORT_OFFSET, default_ds_port
from common.runtime import heap, logs
from common.runtime.metrics import parse_address
from iod import daemon
from iod.ipv4 import IpIdSlot


def _networks(ctx, param, values):
    if tuple(values) == ("none",):
        return []
    try:
        return [ipaddress.ip_network(v, strict=False) for v in values]
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _metrics(ctx, param, value):
    if value is None:
        return None
    try:
        return parse_address(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _ds_port(ctx, param, value):
    if value in ("off", "auto"):
        return value
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise click.BadParameter("a port (1-65535), auto or off")
    return int(value)


def _slot(ctx, param, value):
    try:
        return IpIdSlot.parse(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", required=True, type=click.Path(file_okay=False),
              help="Where this iod keeps its datafiles. It must carry the store marker "
                   "(.nfsp-store) written when the store was made; a directory that does not "
                   "exist is created and made a new store. At the first start it is given to "
                   "--user; the directories above it may stay private to root.")
@click.option("--init", is_flag=True,
              help="Make an existing empty --data-dir (lost+found aside) a new store, or adopt "
                   "one holding datafiles but no marker (from a release before markers). "
                   "Without it such a directory is refused: an empty one is what a disk that "
                   "failed to mount leaves behind. A directory already marked is kept as is.")
@click.option("--key", "key_path", default="/etc/nfsp/cluster.key", show_default=True,
              type=click.Path(dir_okay=False),
              help="Cluster key file (mode 0600, read before dropping root): frames that do "
                   "not verify under one of its keys are dropped and counted. SIGHUP reads it "
                   "again (key rotation); once root is dropped that works only if the file is "
                   "rewritten in place (cat new > FILE), not replaced.")
@click.option("--listen", default="0.0.0.0", show_default=True,
              help="Address to listen on, UDP and TCP (0.0.0.0: every interface; UDP answers "
                   "leave from the address each request was sent to).")
@click.option("--port", default=iodproto.DEFAULT_PORT, show_default=True,
              type=click.IntRange(1, 65535),
              help="Port, UDP and TCP (bound before dropping root, so below 1024 works).")
@click.option("--ds-port", default="auto", show_default=True, callback=_ds_port,
              metavar="PORT|auto|off",
              help="Serve NFSv4.1 clients as a pNFS data server (files layout) on this TCP "
                   "port: they read and write the datafiles directly, with file handles the "
                   f"metaserver minted. auto: --port + {DS_PORT_OFFSET} (3050 for 2050), so "
                   "iods sharing a host each get their own; the metaserver learns it from "
                   "the PONGs and hands it out (unless iods.conf's ds= says otherwise). "
                   "off: clients' data goes through the metaserver.")
@click.option("--ds-listen", default=None, metavar="ADDRESS",
              help="Address the data server listens on [default: --listen]. 0.0.0.0 lets "
                   "clients reach an iod that talks to the metaserver on loopback (nfsp up "
                   "--bind 0.0.0.0; iods.conf then says ds=0.0.0.0).")
@click.option("--secure-port", is_flag=True,
              help="Take TCP connections and UDP frames only from source ports below 1024 "
                   "(senders running as root; paper 5.7). Needs --port below 1024; the "
                   "metaserver and unlinkd then connect from a port below 1024 by themselves.")
@click.option("--max-clock-skew", default=iodproto.MAX_CLOCK_SKEW, show_default=True,
              type=click.FloatRange(1, 3600), metavar="SECONDS",
              help="Replay protection: a stamped frame (every WRITE, TRUNCATE, PURGE, "
                   "forwarded READ, spoofed PING) more than this far from this iod's clock is "
                   "dropped, and one seen before always is. The metaserver and unlinkd stamp "
                   "in the iod's time; other senders' clocks must agree within it.")
@click.option("--pong-allow", multiple=True, default=("127.0.0.0/8",), show_default=True,
              callback=_networks, metavar="CIDR",
              help="Requesters a spoofed PONG (iod_ping --spoof-from) may be sent to; repeat "
                   "for several networks, 'none' for no one.")
@click.option("--ping-rate", default=10.0, show_default=True, type=click.FloatRange(0, 1e6),
              help="PONGs a second (bursts of twice as many) answering PINGs over UDP that "
                   "carry no fresh stamp (unsigned monitoring probes, forgeable sources).")
@click.option("--metrics", "metrics", default=None, metavar="ADDR:PORT", callback=_metrics,
              help="Serve counters, queue depth and free space for Prometheus at "
                   "http://ADDR:PORT/metrics (off by default).")
@click.option("--user", default="nobody", show_default=True,
              help="Unprivileged user (name or uid) the iod runs as once its raw socket, "
                   "listening sockets and data directory are open.")
@click.option("--ip-id-slot", "ip_id_slot", default="0/1", show_default=True, callback=_slot,
              metavar="I/N",
              help="This iod's slice of the IPv4 identification space: slice I of N. Give each "
                   "iod of a cluster a different I (same N), so fragments of replies spoofed "
                   "from the same metaserver to the same client never get mixed up.")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256),
              help="I/O threads: each does the disk I/O and the sending for one request at a "
                   "time (more threads: more requests waiting on the disk at once).")
@click.option("--queue-depth", default=1024, show_default=True, type=click.IntRange(1, 1 << 20),
              help="Requests that may wait for an I/O thread; when full, UDP requests are "
                   "dropped (the client retransmits) and TCP connections are not read.")
@click.option("--queue-mib", default=64, show_default=True, type=click.IntRange(1, 1 << 16),
              help="Bound on the bytes of the waiting requests (a TCP WRITE carries up to "
                   "1 MiB), same effect as --queue-depth.")
@click.option("--stats-interval", default=60.0, show_default=True,
              type=click.FloatRange(0.05, 86400),
              help="Seconds between counter summaries in the log (only when they changed; "
                   "SIGUSR1 logs one at once).")
@click.option("--log-level", type=click.Choice(logs.LEVELS), default="info", show_default=True)
@click.option("--syslog", is_flag=True, help="Log to syslog/journald instead of stderr.")
def main(data_dir, init, key_path, listen, port, ds_port, ds_listen, secure_port,
         max_clock_skew, pong_allow, ping_rate, metrics, user, ip_id_slot, threads, queue_depth,
         queue_mib, stats_interval, log_level, syslog):
    """NFSP I/O daemon: stores stripes of file data by (inode, seed) and
    answers the metaserver's READ/WRITE/COMMIT/TRUNCATE/PURGE/LIST/PING over
    UDP and TCP. UDP READ and WRITE replies go straight to the NFS client from
    a raw socket, with the metaserver's address as source. Runs in the
    foreground; SIGTERM stops it, SIGHUP re-reads the key file, SIGUSR1 logs
    the counters."""
    logs.setup("iod", log_level, syslog)
    heap.keep_buffers()  # the stripes it reads and writes, before its threads make arenas
    # pyroute2 logs every netlink message at debug level: not our events.
    logging.getLogger("pyroute2").setLevel(max(logging.WARNING, logging.getLogger().level))
    log = logging.getLogger("iod")
    if ds_port == "auto":
        ds_port = default_ds_port(port)
        if ds_port is None:
            raise click.BadParameter(f"--port {port} + {DS_PORT_OFFSET} is past 65535: give a "
                                     f"port, or off", param_hint="--ds-port")
    elif ds_port == "off":
        ds_port = None
    try:
        keys = keyfile.load(key_path)
        config = daemon.Config(data_dir, keys, listen=listen, port=port, user=user,
                               ip_id_slot=ip_id_slot, threads=threads, queue_depth=queue_depth,
                               queue_bytes=queue_mib << 20, stats_interval=stats_interval,
                               key_path=key_path, max_clock_skew=max_clock_skew,
                               pong_allow=pong_allow, ping_rate=ping_rate,
                               ping_burst=max(1, int(2 * ping_rate)), secure_port=secure_port,
                               metrics=metrics, init=init, ds_port=ds_port,
                               ds_listen=ds_listen)
        daemon.run(config)
    except (keyfile.KeyFileError, daemon.StartupError, OSError) as e:
        log.error("%s", e)
        sys.exit(1)


if __name__ == "__main__":
    main()
