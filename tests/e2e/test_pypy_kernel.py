"""Real Linux kernel clients against the daemons on PyPy (`nfsp up
--nfspd-python`, tools/install-deps --pypy): a sample of the kernel-client
tests, taken unchanged from their modules, on a testbed of its own whose
daemons run on the PyPy venv. NFSv3 over TCP (the stock kernel) and over UDP
(the test kernel): sizes across the stripe and relay boundaries, renames,
links, a thousand entries, data across a remount, rm -rf; NFSv4.1 with
pNFS: a striped file written and read through the data servers. The whole
kernel-client suite runs the same way with NFSP_PYTHON set (README: Tests);
this keeps the PyPy path checked by every CI run (80 s here)."""

import os

import pytest

from tests.e2e import conftest
from tests.e2e.test_kernel_clients import (  # noqa: F401
    COMBOS,
    Mounted,
    test_file_sizes,
    test_links,
    test_remount_keeps_data,
    test_rename,
    test_rm_rf,
    test_thousand_entries_listed,
)
from tests.e2e.test_pnfs_kernel import (  # noqa: F401
    test_a_striped_file_goes_to_and_from_the_data_servers,
)
from tools.dev import PYPY_PYTHON as PYPY
from tools.dev import testbed as tblib

pytestmark = pytest.mark.skipif(not os.access(PYPY, os.X_OK),
                                reason=f"no PyPy venv at {PYPY} (tools/install-deps --pypy)")

V3_COMBOS = [c for c in COMBOS if c.vers == 3]


@pytest.fixture(scope="module", autouse=True)
def daemons_on_pypy():
    # For the whole module: a daemon restarted by a test runs on PyPy too.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NFSP_PYTHON", PYPY)
        yield


@pytest.fixture(scope="module")
def testbed(daemons_on_pypy, vm_ready, tmp_path_factory):
    lease = conftest.nfspd_lease_time()
    with tblib.Testbed(f"py{os.getpid()}", n_iods=conftest.default_iods(), n_clients=1,
                       workdir=str(tmp_path_factory.mktemp("pypy-testbed")),
                       nfspd_args=[conftest.NFSPD_LEASE_OPTION, lease] if lease else []) as tb:
        yield tb


@pytest.fixture(scope="module")
def pnfs_testbed(daemons_on_pypy, vm_ready, tmp_path_factory):
    if not tblib.Testbed.iod_built():
        pytest.skip("no iod")
    with tblib.Testbed(f"pp{os.getpid()}", n_iods=4, n_clients=1,
                       workdir=str(tmp_path_factory.mktemp("pypy-pnfs")),
                       nfspd_args=["--v4-lease", "10"]) as tb:
        yield tb


@pytest.fixture(scope="module")
def guests(testbed, rand, tmp_path_factory):
    g = conftest.Guests(testbed, str(tmp_path_factory.mktemp("pypy-guests")), rand)
    yield g
    g.stop()


@pytest.fixture(scope="module", params=V3_COMBOS, ids=lambda c: c.id)
def mounted(request, guests, testbed):
    m = Mounted(request.param, guests.get(request.param.kernel), testbed)
    m.mount()
    yield m
    m.umount()


@pytest.mark.parametrize("which", ["testbed", "pnfs_testbed"])
def test_the_testbeds_daemons_run_pypy(request, which):
    """What makes this module's other tests a PyPy run: the daemons' binary."""
    tb = request.getfixturevalue(which)
    daemons = tb._load_state()["daemons"]
    assert "nfspd" in daemons and len(daemons) > 1
    for role, daemon in daemons.items():
        assert os.path.realpath(f"/proc/{daemon['pid']}/exe") == os.path.realpath(PYPY), role
