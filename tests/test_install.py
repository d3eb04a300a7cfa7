"""A plain, non-editable `pip install .` is the product: the daemons and the
admin commands work from the installed copy alone, and the development
harness (tools/dev) is not part of it.

The checkout is copied first (pip builds in the source tree, leaving build/
and nfsp.egg-info behind), then installed into a fresh virtual environment
that takes the dependencies from the system's site-packages, added as plain
paths: their .pth files are not run, so the editable install of the checkout
that tools/install-deps makes there cannot serve an import. Every command runs
with PYTHONPATH unset and its working directory outside the checkout, so
nothing is imported from the tree by accident.
"""

import importlib.util
import os
import pathlib
import shutil
import site
import subprocess
import sys

import pytest

from tools.dev import REPO
from tools.dev.daemons import NfspUp

pytestmark = pytest.mark.skipif(importlib.util.find_spec("wheel") is None,
                                reason="building needs wheel (tools/install-deps --test)")


def _product_packages():
    """Every package of the product's trees, tools/dev excepted: a new
    sub-package setup.cfg does not list would be missing once installed."""
    found = []
    for top in ("common", "nfspd", "iod", "unlinkd", "tools"):
        for init in sorted(pathlib.Path(REPO, top).rglob("__init__.py")):
            name = ".".join(init.parent.relative_to(REPO).parts)
            if name != "tools.dev" and not name.startswith("tools.dev."):
                found.append(name)
    return tuple(found)


PRODUCT = _product_packages()
COMMANDS = ("nfspd", "iod", "unlinkd", "iod_ping", "nfsp")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv directory, a working directory outside the checkout, environment)."""
    top = tmp_path_factory.mktemp("install")
    src, venv, elsewhere = top / "src", top / "venv", top / "elsewhere"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", ".pytest_cache", "build", "*.egg-info"))
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "venv", str(venv)],
                   check=True, cwd=elsewhere, env=env, timeout=120)
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", where], check=True,
                             cwd=elsewhere, env=env, capture_output=True, text=True).stdout.strip()
    system = [p for p in site.getsitepackages() if os.path.isdir(p)]
    pathlib.Path(purelib, "system-dependencies.pth").write_text("\n".join(system) + "\n")
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps",
                        "--no-build-isolation", str(src)],
                       cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return venv, elsewhere, env


def run(installed, argv):
    venv, elsewhere, env = installed
    return subprocess.run(argv, cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_starts_from_the_installed_copy(installed, command):
    r = run(installed, [str(installed[0] / "bin" / command), "--help"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Usage:") or "usage:" in r.stdout, r.stdout


def test_nfsp_offers_the_admin_commands_and_no_harness(installed):
    out = run(installed, [str(installed[0] / "bin" / "nfsp"), "--help"]).stdout
    for sub in ("up", "keygen", "launch", "status", "scrub"):
        assert f"  {sub} " in out, out
    assert "testbed" not in out


def test_only_the_product_is_installed(installed):
    venv = installed[0]
    code = ("import importlib, importlib.util\n"
            f"for name in {PRODUCT!r}:\n"
            "    print(importlib.import_module(name).__file__)\n"
            "print(importlib.util.find_spec('tools.dev'))\n")
    r = run(installed, [str(venv / "bin" / "python"), "-c", code])
    assert r.returncode == 0, r.stderr
    *files, dev = r.stdout.splitlines()
    assert all(f.startswith(str(venv)) for f in files), files
    assert dev == "None"


def test_nfsp_up_serves_from_the_installed_copy(installed, ns):
    venv, elsewhere, env = installed
    up = NfspUp(ns, str(elsewhere / "cluster"), str(elsewhere / "up.log"), ["--iods", "1"],
                command=[str(venv / "bin" / "nfsp")], env=env, cwd=str(elsewhere))
    try:
        up.start(timeout=60)
        printed = up.log_text()
    finally:
        rc = up.stop(timeout=60)
    assert rc == 0, up.log_text()
    assert f"127.0.0.1:{up.export} /mnt" in printed
