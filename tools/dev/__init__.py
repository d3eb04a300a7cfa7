"""The development harness: what developers run, never part of the installed
product (setup.cfg packages only common, nfspd, iod, unlinkd and the admin
commands of tools/; nothing there imports this package).

The one cluster harness, for the tests and the benchmarks alike:
    netns.py            private network namespaces (a host with only loopback)
    daemons.py          nfspd and iod as real processes in one, started and stopped
    cluster.py          N iods and an nfspd on a namespace's loopback
    unlinkd_cluster.py  iods, unlinkd and an in-process MetaFS (purge path)
    testbed.py          one namespace per host on a bridge, links capped
                        (`python3 -m tools.dev.testbed up|down|status`)

Clients and load:
    nfsclient.py        the project's NFS client (MOUNT, NFSv2/v3, UDP/TCP)
    iodclient.py        a synchronous iod protocol client
    loadgen.py          `python3 -m tools.dev.loadgen`: N checked NFSv3 clients
    soak.py             `python3 -m tools.dev.soak`: loadgen against `nfsp up` for minutes

Benchmarks and fuzzing:
    benchmarks/         `python3 -m tools.dev.benchmarks run`: the figures of issue 7
    bench.py, bench_datapath.py, bench_remove.py, iod_readbench.py,
    iod_sendbench.py    single-figure benchmarks (`python3 -m tools.dev.NAME --help`)
    fuzz/               `python3 -m tools.dev.fuzz`: the atheris fuzzers and their targets
    build-test-kernel   a Linux kernel with NFS over UDP for the qemu tests
"""

import os
import sys

# The checkout the harness runs from: daemons it starts import the project from it.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The interpreter of the PyPy venv `tools/install-deps --pypy` makes.
PYPY_PYTHON = os.path.join(os.environ.get("NFSP_PYPY_VENV", "/opt/nfsp-pypy"), "bin", "python")


def daemon_python():
    """The interpreter the harness runs the daemons on (nfspd, and the
    unlinkd it starts; the iods; `nfsp up`): NFSP_PYTHON if set, else the
    harness's own. A benchmark against a C server that a distribution built
    should run nfspd on that distribution's Python too: this machine's pyenv
    build (libpython shared, no PGO or LTO) cost nfspd 15-19% more CPU per
    CREATE or REMOVE than Debian's python3.11 (README: Benchmarks). The
    PyPy venv of `tools/install-deps --pypy` (PYPY_PYTHON) cost it a third
    less than either."""
    return os.environ.get("NFSP_PYTHON") or sys.executable
