"""`nfsp accept-iod-store HOST:PORT`: take the data store an iod serves now
as its own (common/runtime/iodstores.py), once the admin knows its old data is gone.

With nfspd running, it is asked over its admin socket (the link comes up
within a heartbeat); without, STATE_DIR/iod-stores.json is edited directly,
so the admin path works either way."""

import os

import click

from common import iodproto
from common.runtime import iodstores
from nfspd import admin


def _name(address):
    host, sep, port = address.rpartition(":")
    if not sep:
        return f"{address}:{iodproto.DEFAULT_PORT}"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{address!r}: expected HOST:PORT as in iods.conf")
    return f"{host}:{int(port)}"


@click.command("accept-iod-store", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("address", metavar="HOST:PORT")
@click.option("--state-dir", default="/var/lib/nfsp", show_default=True,
              type=click.Path(file_okay=False), help="nfspd's --state-dir.")
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(0.1, 300),
              help="Seconds to wait for nfspd's answer.")
def cli(address, state_dir, timeout):
    """Accept the data store iod HOST:PORT (as in iods.conf) serves now.

    nfspd keeps an iod down (clients get JUKEBOX and wait) while it serves
    another data store than the one it had: a disk that failed to mount, a
    replaced or wiped one. Mount or restore the disk and restart the iod if
    you can: it then comes back by itself. Run this only if its data is
    really gone: its stripes then read as holes (zeros); run `nfsp scrub`
    after.

    Exit status: 0 done, 1 nothing done (error, or no store remembered)."""
    name = _name(address)
    path = admin.socket_path(state_dir)
    try:
        reply = admin.request(path, "accept-iod-store", timeout=timeout, name=name)
    except (FileNotFoundError, ConnectionRefusedError):
        return _offline(state_dir, name)   # nfspd not running
    except PermissionError:
        raise click.ClickException(f"{path}: permission denied (the admin socket is root only)")
    except (OSError, ValueError) as e:
        raise click.ClickException(f"{path}: {e}")
    if not reply.get("ok"):
        raise click.ClickException(f"nfspd: {reply.get('error', 'no answer')}")
    r = reply["accept-iod-store"]
    was = f"forgot its store {r['forgotten']}" if r["forgotten"] else "had no store remembered"
    now = (f"it takes store {r['store']} at its next heartbeat" if r["store"]
           else "it takes the store it names in its next PONG")
    click.echo(f"iod {name}: nfspd {was}; {now}")


def _offline(state_dir, name):
    path = os.path.join(state_dir, iodstores.FILE_NAME)
    try:
        old = iodstores.forget(path, name)
    except iodstores.IodStoresError as e:
        raise click.ClickException(f"{path}: {e} (nfspd moves such a file aside when it "
                                   f"starts)")
    except OSError as e:
        raise click.ClickException(f"{path}: {e.strerror or e}")
    if old is None:
        raise click.ClickException(f"{path}: no data store remembered for iod {name} "
                                   f"(nothing to do; is HOST:PORT as in iods.conf?)")
    click.echo(f"iod {name}: forgot its store {old.hex()} in {path} (nfspd not running); "
               f"nfspd takes the store it serves when it next starts")
