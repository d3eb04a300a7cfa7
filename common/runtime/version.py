"""NFSP's version, as installed (what PONGs, metrics and `nfsp status` report)."""

import importlib.metadata


def _installed():
    try:
        return importlib.metadata.version("nfsp")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"   # run from a source tree that was never installed


VERSION = _installed()
