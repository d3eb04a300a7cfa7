"""The `unlinkd` command: batched PURGE of deleted files' stripes to every iod."""

import logging
import os
import signal
import sys

import click
import trio

from common import keyfile
from common.iodsconf import load_iods
from common.runtime import iodstores, logs
from common.runtime.iodclient import iod_name
from common.runtime.keyreload import KeyFile
from common.runtime.pidfd import pidfd_open
from unlinkd.daemon import Options, Unlinkd

log = logging.getLogger("unlinkd")


async def _exit_with_parent(pid, cancel_scope):
    """Spawned by nfspd: go when it goes (a stray unlinkd would hold the journal
    lock its successor's unlinkd needs). Not PR_SET_PDEATHSIG: that fires when
    the parent *thread* ends, and trio spawns children from worker threads it
    retires after 10 s idle, which killed unlinkd every 10 s."""
    try:
        fd = pidfd_open(pid)
    except ProcessLookupError:
        fd = None
    if fd is not None:
        try:
            if os.getppid() == pid:      # else it went before the pidfd was opened
                await trio.lowlevel.wait_readable(fd)
        finally:
            os.close(fd)
    log.info("nfspd (pid %d) has exited: shutting down", pid)
    cancel_scope.cancel()


async def _serve(daemon, key_path, parent_pid=None):
    # Signals first: once unlinkd has said it runs, a SIGHUP must not kill it,
    # not even one still pending when trio re-raises those at the receiver's close.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            if parent_pid is not None:
                nursery.start_soon(_exit_with_parent, parent_pid, nursery.cancel_scope)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await trio.to_thread.run_sync(KeyFile(key_path).reload_into, daemon.keys, log)
                    continue
                logging.getLogger("unlinkd").info("%s: shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                return


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--journal", "journal_dir", required=True, type=click.Path(file_okay=False),
              help="The purge journal directory nfspd writes (STATE_DIR/purge).")
@click.option("--iods", "iods_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="iods.conf: every iod to purge on.")
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False),
              help="Cluster key file authenticating the iod protocol (SIGHUP reads it again: "
                   "key rotation). iods listening below 1024 (iod --secure-port) are "
                   "connected to from a port below 1024.")
@click.option("--iod-stores", "stores_path", default=None, type=click.Path(dir_okay=False),
              help="The data store nfspd remembers for each iod (default: iod-stores.json "
                   "beside the journal directory, i.e. STATE_DIR/iod-stores.json). Purges for "
                   "an iod that serves another store are held, not counted as done, until its "
                   "own store is back or the admin runs `nfsp accept-iod-store`.")
@click.option("--batch-max", default=1024, show_default=True, type=click.IntRange(1, 32768),
              help="Send as soon as this many purges wait.")
@click.option("--batch-delay", default=0.2, show_default=True, type=click.FloatRange(0, 3600),
              help="Send what waits once no remove arrived for this many seconds (arrivals "
                   "are noticed within a quarter of it, at most 50 ms: one journal read "
                   "covers the wake-ups of that time).")
@click.option("--retry-max", default=30.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="Longest wait between reconnection attempts to an unreachable iod.")
@click.option("--parent-pid", type=int, default=None, hidden=True)
@click.option("--log-level", type=click.Choice(logs.LEVELS), default="info", show_default=True)
@click.option("--syslog", is_flag=True, help="Log to syslog/journald instead of stderr.")
def main(journal_dir, iods_path, key_path, stores_path, batch_max, batch_delay, retry_max, parent_pid,
         log_level, syslog):
    """Send the purges nfspd journals (files whose last link went away) to every
    iod in batches over persistent TCP connections, until each iod has
    acknowledged them. Runs in the foreground; SIGTERM stops it, SIGHUP
    re-reads the key file. Normally
    spawned by nfspd; run it yourself with nfspd --unlinkd external."""
    logs.setup("unlinkd", log_level, syslog)
    try:
        keys = keyfile.load(key_path)
        iods = load_iods(iods_path)
        if stores_path is None:
            stores_path = os.path.join(os.path.dirname(os.path.abspath(journal_dir)),
                                       iodstores.FILE_NAME)
        stores = iodstores.StoreCheck(stores_path, [iod_name(h, p) for h, p in iods])
        daemon = Unlinkd(journal_dir, iods, keys,
                         Options(batch_max=batch_max, batch_delay=batch_delay,
                                 retry_max=retry_max), stores=stores)
    except (OSError, ValueError) as e:
        log.error("%s", e)
        sys.exit(1)
    trio.run(_serve, daemon, key_path, parent_pid)


if __name__ == "__main__":
    main()
