"""Fixtures for the kernel-client tests: one testbed and one booted guest per
kernel for the whole session (TCG boots are slow; the workloads share them)."""

import functools
import os
import subprocess
import sys

import pytest

from tests.e2e import expect
from tests.support import vm as vmlib
from tools.dev import testbed as tblib

# Several helpers' test runs may share this machine: namespaces carry the pid.
TESTBED_NAME = f"e2e{os.getpid()}"
IODS_ENV = "NFSP_E2E_IODS"
# The NFSv4 lease nfspd grants here: short, so that a killed client's locks
# are freed within a test (tests/e2e/test_nfs4_kernel.py), given with this
# option once nfspd has it.
V4_LEASE_TIME = 10
NFSPD_LEASE_OPTION = "--v4-lease"


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: boots real Linux kernel NFS clients under qemu "
                                       "(slow; select with -m e2e, skip with -m 'not e2e')")


def pytest_collection_modifyitems(items):
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.e2e)


@functools.cache
def _nfspd_help():
    return subprocess.run([sys.executable, "-m", "nfspd.cli", "--help"], capture_output=True,
                          text=True, cwd=vmlib.REPO, timeout=60, check=False).stdout


def _nfspd_has_iods():
    return "--iods" in _nfspd_help()


def nfspd_lease_time():
    """The NFSv4 lease the testbed's nfspd grants, or None when it cannot be
    told one (then the lease is nfspd's own, unknown here)."""
    return V4_LEASE_TIME if NFSPD_LEASE_OPTION in _nfspd_help() else None


def default_iods():
    """Stripe over iods once they exist (the product's data path); until then
    the metaserver's local data store."""
    if IODS_ENV in os.environ:
        return int(os.environ[IODS_ENV])
    return 3 if tblib.Testbed.iod_built() and _nfspd_has_iods() else 0


@pytest.fixture(scope="session")
def vm_ready():
    why = vmlib.missing_tools()
    if why:
        pytest.skip(f"kernel-client tests: {why}")


@pytest.fixture(scope="session")
def testbed(vm_ready, tmp_path_factory):
    lease = nfspd_lease_time()
    with tblib.Testbed(TESTBED_NAME, n_iods=default_iods(), n_clients=1,
                       workdir=str(tmp_path_factory.mktemp("testbed")),
                       nfspd_args=[NFSPD_LEASE_OPTION, lease] if lease else []) as tb:
        yield tb


@pytest.fixture(scope="session")
def rand():
    return expect.rand_data()


def kernel_or_skip(label):
    k = vmlib.stock_kernel() if label == "debian" else vmlib.udp_kernel()
    if isinstance(k, str):
        pytest.skip(k)
    return k


class Guests:
    """Guests booted on first use, one per (kernel, slot), stopped at the end."""

    def __init__(self, testbed, workdir, rand):
        self.testbed = testbed
        self.workdir = workdir
        self.rand = rand
        self.booted = {}

    def get(self, label, slot=0):
        key = (label, slot)
        if key not in self.booted:
            kernel = kernel_or_skip(label)
            index = len(self.booted)
            g = vmlib.VM(self.testbed, index, kernel, self.workdir, data={"rand": self.rand})
            self.booted[key] = g
            g.start()
        return self.booted[key]

    def stop(self):
        for g in self.booted.values():
            g.stop()


@pytest.fixture(scope="session")
def guests(testbed, rand, tmp_path_factory):
    g = Guests(testbed, str(tmp_path_factory.mktemp("guests")), rand)
    yield g
    g.stop()
