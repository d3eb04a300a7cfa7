"""`nfsp up`: the embedded quick start the README promises."""

import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.support.daemons import MOUNT_PROGRAM, REPO
from tests.support.netns import wait_until
from tools.rpcclient import getport

pytestmark = pytest.mark.skipif(not shutil.which("nfs-cp"), reason="needs libnfs-utils")


def start_up(ns, directory, log):
    env = dict(os.environ, PYTHONPATH=REPO)
    p = ns.popen([sys.executable, "-m", "tools.nfsp", "up", directory], stdout=log,
                 stderr=subprocess.STDOUT, env=env)
    wait_until(lambda: ns.inside(getport, "127.0.0.1", MOUNT_PROGRAM, 3) != 0, 20,
               what="nfsp up serving", abort=lambda: p.poll() is not None and "nfsp up exited")
    return p


def test_nfsp_up_serves_a_fresh_directory_and_keeps_data_across_restarts(ns, tmp_path):
    directory = str(tmp_path / "cluster")
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(200_000))
    url = f"nfs://127.0.0.1{directory}/export/data.bin"
    with open(tmp_path / "up.log", "wb") as log:
        p = start_up(ns, directory, log)
        ns.run(["nfs-cp", str(src), url], check=True)
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=15) == 0
        p = start_up(ns, directory, log)
        out = ns.run(["nfs-cat", url], check=True, text=False).stdout
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=15) == 0
    assert out == src.read_bytes()
    printed = (tmp_path / "up.log").read_text()
    assert f"mount -t nfs -o vers=3,proto=tcp 127.0.0.1:{directory}/export /mnt" in printed


def test_keygen_writes_a_private_key_once(tmp_path):
    from click.testing import CliRunner

    from tools.nfsp import main
    path = str(tmp_path / "k")
    assert CliRunner().invoke(main, ["keygen", path]).exit_code == 0
    assert os.stat(path).st_mode & 0o777 == 0o600
    again = CliRunner().invoke(main, ["keygen", path])
    assert again.exit_code != 0 and "exists" in again.output
