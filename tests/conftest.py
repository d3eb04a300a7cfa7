import os

import pytest

from tests.support import netns


@pytest.fixture
def ns():
    """A private network namespace (a host with only loopback) for one test."""
    if not netns.available():
        pytest.skip("needs root with unshare and nsenter (network namespaces)")
    with netns.Namespace() as n:
        yield n


@pytest.fixture
def nfspd(ns, tmp_path):
    """A factory for real nfspd processes in the test's namespace; stopped at teardown."""
    from tests.support.daemons import Nfspd
    started = []

    def start(**kw):
        d = Nfspd(ns, str(tmp_path / f"nfspd{len(started)}"), **kw)
        os.makedirs(d.workdir, exist_ok=True)
        started.append(d)
        return d.start()
    yield start
    for d in started:
        d.stop()
