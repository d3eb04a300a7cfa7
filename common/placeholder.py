"""Entry points for daemons a later issue builds: they say so clearly and fail,
rather than pretending to work."""

import sys

import click


def not_built(name, issue):
    @click.command(name=name, context_settings={"help_option_names": ["-h", "--help"]},
                   help=f"{name}: not built yet (tracked as issue {issue}).")
    def command():
        click.echo(f"{name}: not built yet (tracked as issue {issue}); nfspd serves data from "
                   f"its local data store until then.", err=True)
        sys.exit(2)
    return command
