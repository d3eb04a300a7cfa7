"""The `unlinkd` command: batched PURGE of deleted files' stripes to every iod."""

import ctypes
import logging
import os
import signal
import sys

import click
import trio

from common import logs

PR_SET_PDEATHSIG = 1


def _exit_with_parent(pid):
    """Spawned by nfspd: go when it goes (a stray unlinkd would hold the journal
    lock its successor's unlinkd needs)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != pid:
        sys.exit(0)


async def _serve(daemon):
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                logging.getLogger("unlinkd").info("%s: shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                return


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--journal", "journal_dir", required=True, type=click.Path(file_okay=False),
              help="The purge journal directory nfspd writes (STATE_DIR/purge).")
@click.option("--iods", "iods_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="iods.conf: every iod to purge on.")
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False),
              help="Cluster key file authenticating the iod protocol.")
@click.option("--batch-max", default=1024, show_default=True, type=click.IntRange(1, 32768),
              help="Send as soon as this many purges wait.")
@click.option("--batch-delay", default=0.2, show_default=True, type=click.FloatRange(0, 3600),
              help="Send what waits once no remove arrived for this many seconds.")
@click.option("--retry-max", default=30.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="Longest wait between reconnection attempts to an unreachable iod.")
@click.option("--parent-pid", type=int, default=None, hidden=True)
@click.option("--log-level", type=click.Choice(logs.LEVELS), default="info", show_default=True)
@click.option("--syslog", is_flag=True, help="Log to syslog/journald instead of stderr.")
def main(journal_dir, iods_path, key_path, batch_max, batch_delay, retry_max, parent_pid,
         log_level, syslog):
    """Send the purges nfspd journals (files whose last link went away) to every
    iod in batches over persistent TCP connections, until each iod has
    acknowledged them. Runs in the foreground; SIGTERM stops it. Normally
    spawned by nfspd; run it yourself with nfspd --unlinkd external."""
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    logs.setup("unlinkd", log_level, syslog)
    log = logging.getLogger("unlinkd")
    from common import keyfile
    from common.iodsconf import load_iods
    from unlinkd.daemon import Options, Unlinkd
    try:
        keys = keyfile.load(key_path)
        iods = load_iods(iods_path)
        daemon = Unlinkd(journal_dir, iods, keys,
                         Options(batch_max=batch_max, batch_delay=batch_delay,
                                 retry_max=retry_max))
    except (OSError, ValueError) as e:
        log.error("%s", e)
        sys.exit(1)
    trio.run(_serve, daemon)


if __name__ == "__main__":
    main()
