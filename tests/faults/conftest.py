"""One testbed and one kernel-client guest for every fault case (a TCG boot
and a cluster start cost more than most cases): see tests/support/faults.py.

Each case leaves the bed as it found it (daemons running, disks not full, the
network clean, its mounts gone); a case that cannot restore it fails, and the
next cases then fail on their own checks rather than pass on a broken bed."""

import os
import random

import pytest

from tests.support import faults
from tests.support import vm as vmlib

RAND_SIZE = 4 * 1024 * 1024


def pytest_collection_modifyitems(items):
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.slow)


def _kernel():
    """The NFS-over-UDP test kernel (it mounts over TCP too), else the stock one."""
    k = vmlib.udp_kernel()
    if isinstance(k, str):
        k = vmlib.stock_kernel()
    if isinstance(k, str):
        pytest.skip(k)
    return k


@pytest.fixture(scope="session")
def rand():
    return random.Random(20240808).randbytes(RAND_SIZE)


@pytest.fixture(scope="session")
def bed(rand, tmp_path_factory):
    why = vmlib.missing_tools()
    if why:
        pytest.skip(f"fault-injection tests: {why}")
    b = faults.Bed(f"flt{os.getpid()}", str(tmp_path_factory.mktemp("faults")), _kernel(), rand)
    try:
        b.up()
    except BaseException:
        b.down()
        raise
    yield b
    b.down()
