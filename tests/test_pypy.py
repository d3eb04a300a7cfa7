"""The daemons on PyPy (`tools/install-deps --pypy`, Debian's pypy3: Python
3.9, an os module without some of Linux's constants, ctypes calls that cost
15-20 us): every module of the daemons and tools imports there, and the
real clients' tests below, taken unchanged from their own modules, pass
with nfspd, the unlinkd it starts and the iods all run on it."""

import configparser
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

# Tests of other modules, collected here again and run with the daemons on
# PyPy (this module's fixture below); what each checks is said where it lives.
from tests.test_nfsp_up import processes_naming, start_up, stop_up
from tests.test_nfspd_e2e import (  # noqa: F401
    test_handles_survive_a_metaserver_restart,
    test_malformed_packets_get_rpc_errors_and_the_server_keeps_serving,
    test_permissions_are_enforced_per_uid_and_refusals_change_nothing,
    test_retransmitted_remove_and_create_run_once,
)
from tests.test_real_clients import (  # noqa: F401
    test_libnfs_copies_a_file_in_and_out_byte_exact,
    test_rpcinfo_pings_each_version_and_nfs4_only_over_tcp,
    test_showmount_lists_the_exports,
)
from tests.test_status import test_status_reports_iods_and_a_killed_one_down  # noqa: F401
from tests.test_unlinkd_e2e import (  # noqa: F401
    cluster_factory,
    test_hard_links_and_rename_over_purge_exactly_what_they_should,
    test_kill_9_of_unlinkd_in_a_burst_loses_no_purge,
)
from tools.dev import PYPY_PYTHON as PYPY
from tools.dev import REPO

pytestmark = [
    pytest.mark.skipif(not os.access(PYPY, os.X_OK),
                       reason=f"no PyPy venv at {PYPY} (tools/install-deps --pypy)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("rpcinfo", "showmount", "nfs-cp", "rpcbind")),
                       reason="needs Debian's rpcbind, nfs-common and libnfs-utils"),
]


@pytest.fixture(autouse=True)
def daemons_on_pypy(monkeypatch):
    monkeypatch.setenv("NFSP_PYTHON", PYPY)


def product_modules():
    """Every module of the packages setup.cfg installs (not the development
    harness, tools/dev, which wants Python 3.11)."""
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO, "setup.cfg"))
    for package in config["options"]["packages"].replace(",", " ").split():
        yield package
        directory = pathlib.Path(REPO, *package.split("."))
        for path in sorted(directory.glob("*.py")):
            if path.name != "__init__.py":
                yield f"{package}.{path.stem}"


def test_every_module_of_the_daemons_and_tools_imports_on_pypy():
    modules = list(product_modules())
    assert "nfspd.fs.metafs" in modules and "unlinkd.cli" in modules
    assert not any(m.startswith("tools.dev") for m in modules)
    script = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    r = subprocess.run([PYPY, "-c", script, *modules], cwd=REPO, capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "PyPy" in subprocess.run([PYPY, "-c", "import sys; print(sys.version)"],
                                    capture_output=True, text=True, check=True).stdout


def test_nfsp_up_runs_the_metaserver_on_pypy_and_the_iods_on_its_own_python(
        ns, tmp_path, monkeypatch):
    # Metadata is faster on PyPy, file data through the iods slower
    # (README: Quick start): `nfsp up --nfspd-python` gives each its own.
    monkeypatch.delenv("NFSP_PYTHON")          # `nfsp up` itself on CPython
    directory = str(tmp_path / "cluster")
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(300_000))
    url = f"nfs://127.0.0.1{directory}/export/data.bin"
    with open(tmp_path / "up.log", "wb") as log:
        p = start_up(ns, directory, log, "--iods", "2", "--nfspd-python", PYPY)
        ns.run(["nfs-cp", str(src), url], check=True)
        out = ns.run(["nfs-cat", url], check=True, text=False).stdout
        runs_on = {}
        for daemon in (b"nfspd.cli", b"unlinkd.cli", b"iod.cli"):
            runs_on[daemon] = {os.path.realpath(f"/proc/{pid}/exe")
                               for pid in processes_naming(directory, daemon)}
        stop_up(p, directory)
    assert out == src.read_bytes()
    pypy, cpython = os.path.realpath(PYPY), os.path.realpath(sys.executable)
    assert pypy != cpython
    assert runs_on == {b"nfspd.cli": {pypy}, b"unlinkd.cli": {pypy}, b"iod.cli": {cpython}}
