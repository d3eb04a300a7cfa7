"""The fixtures every test may ask for: a private network namespace and the
cluster harness's daemons in it (tools/dev), each stopped at teardown."""

import os

import pytest

from common import iodproto
from tools.dev import netns
from tools.dev.cluster import Cluster
from tools.dev.daemons import Iod, Nfspd


@pytest.fixture
def ns():
    """A private network namespace (a host with only loopback) for one test."""
    if not netns.available():
        pytest.skip("needs root with unshare and nsenter (network namespaces)")
    with netns.Namespace() as n:
        yield n


@pytest.fixture
def nfspd(ns, tmp_path):
    """A factory for real nfspd processes in the test's namespace."""
    started = []

    def start(**kw):
        d = Nfspd(ns, str(tmp_path / f"nfspd{len(started)}"), **kw)
        os.makedirs(d.workdir, exist_ok=True)
        started.append(d)
        return d.start()
    yield start
    for d in started:
        d.stop()


@pytest.fixture
def iods(ns, tmp_path):
    """A factory for real iods in the test's namespace sharing one cluster key."""
    started = []
    key_path = str(tmp_path / "cluster.key")

    def start(**kw):
        kw.setdefault("port", iodproto.DEFAULT_PORT + len(started))
        d = Iod(ns, str(tmp_path / f"iod{len(started)}"), key_path, **kw)
        started.append(d)
        return d.start()
    yield start
    for d in started:
        d.stop()


@pytest.fixture
def cluster(ns, tmp_path):
    """A factory: cluster(n_iods=..., stripe_unit=...) starts one."""
    started = []

    def start(**kw):
        c = Cluster(ns, str(tmp_path / f"cluster{len(started)}"), **kw)
        started.append(c)
        return c.start()
    yield start
    for c in started:
        c.stop()
