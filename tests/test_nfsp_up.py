"""`nfsp up`: the embedded quick start the README promises, with real iods."""

import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.support.netns import wait_until
from tools import embedded
from tools.rpcclient import getport

pytestmark = pytest.mark.skipif(not shutil.which("nfs-cp"), reason="needs libnfs-utils")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO)
MOUNT_PROGRAM = 100005


def start_up(ns, directory, log, *args):
    p = ns.popen([sys.executable, "-m", "tools.nfsp", "up", directory, *args], stdout=log,
                 stderr=subprocess.STDOUT, env=ENV)
    wait_until(lambda: ns.inside(getport, "127.0.0.1", MOUNT_PROGRAM, 3) != 0, 30,
               what="nfsp up serving", abort=lambda: p.poll() is not None and "nfsp up exited")
    # The banner (mount command) comes once everything is up, which can be
    # after MOUNT answers: a SIGTERM before it would leave it unprinted.
    wait_until(lambda: b"SIGTERM stops it" in open(log.name, "rb").read(), 30,
               what="nfsp up's banner", abort=lambda: p.poll() is not None and "nfsp up exited")
    return p


def processes_naming(directory, also=b""):
    """pids of processes whose command line mentions ``directory`` (each
    child of `nfsp up` is given a path inside it) and ``also``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if directory.encode() in cmdline and also in cmdline and int(pid) != os.getpid():
            found.append(int(pid))
    return found


def stop_up(p, directory):
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 0
    assert processes_naming(directory) == []


def datafiles(directory):
    """{data dir name: number of datafiles} under ``directory``: names are
    INODE.SEED, 16 hex digits each (common/runtime/datastore.py)."""
    out = {}
    for top, _, files in os.walk(directory):
        n = sum(1 for name in files
                if len(name) == 33 and name[16] == "." and all(
                    c in "0123456789abcdef" for c in name[:16] + name[17:]))
        if n:
            rel = os.path.relpath(top, directory).split(os.sep)[0]
            out[rel] = out.get(rel, 0) + n
    return out


@pytest.fixture
def cluster_dir(tmp_path):
    return str(tmp_path / "cluster")


def test_nfsp_up_stripes_over_its_iods_and_keeps_data_across_restarts(ns, tmp_path, cluster_dir):
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(300_000))
    url = f"nfs://127.0.0.1{cluster_dir}/export/data.bin"
    with open(tmp_path / "up.log", "wb") as log:
        p = start_up(ns, cluster_dir, log, "--iods", "2")
        ns.run(["nfs-cp", str(src), url], check=True)
        stop_up(p, cluster_dir)
        stored = datafiles(cluster_dir)
        # 300 000 bytes are 5 stripes of 64 KiB: both iods hold some, the
        # metaserver's local store (under state/) none.
        assert set(stored) == {"iod0", "iod1"}, stored
        p = start_up(ns, cluster_dir, log)
        out = ns.run(["nfs-cat", url], check=True, text=False).stdout
        stop_up(p, cluster_dir)
    assert out == src.read_bytes()
    printed = (tmp_path / "up.log").read_text()
    assert f"mount -t nfs -o vers=3,proto=tcp 127.0.0.1:{cluster_dir}/export /mnt" in printed
    assert "proto=udp" in printed
    with open(os.path.join(cluster_dir, "iods.conf")) as f:
        conf = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    assert conf == ["127.0.0.1:2050", "127.0.0.1:2051"]
    assert os.stat(os.path.join(cluster_dir, "cluster.key")).st_mode & 0o777 == 0o600


def test_more_iods_are_appended_and_fewer_refused(ns, tmp_path, cluster_dir):
    old, new = os.urandom(200_000), os.urandom(400_000)
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(new)
    base = f"nfs://127.0.0.1{cluster_dir}/export"
    with open(tmp_path / "up.log", "wb") as log:
        p = start_up(ns, cluster_dir, log, "--iods", "2")
        ns.run(["nfs-cp", str(tmp_path / "old"), f"{base}/old"], check=True)
        stop_up(p, cluster_dir)
        before = datafiles(cluster_dir)
        p = start_up(ns, cluster_dir, log, "--iods", "3")
        assert ns.run(["nfs-cat", f"{base}/old"], check=True, text=False).stdout == old
        ns.run(["nfs-cp", str(tmp_path / "new"), f"{base}/new"], check=True)
        assert ns.run(["nfs-cat", f"{base}/new"], check=True, text=False).stdout == new
        stop_up(p, cluster_dir)
    assert "iod2" not in before
    assert datafiles(cluster_dir).get("iod2", 0) >= 1   # the new file uses the third iod
    for fewer in ("1", "0"):
        r = ns.run([sys.executable, "-m", "tools.nfsp", "up", cluster_dir, "--iods", fewer],
                   env=ENV, timeout=30)
        assert r.returncode == 1
        assert r.stderr.count("\n") == 1 and "has 3 iods" in r.stderr, r.stderr
        assert processes_naming(cluster_dir) == []


def test_an_iod_dying_stops_the_rest_with_one_line(ns, tmp_path, cluster_dir):
    with open(tmp_path / "up.log", "wb") as log:
        p = start_up(ns, cluster_dir, log, "--iods", "2")
        iod1 = processes_naming(cluster_dir, b"/iod1\0")
        assert len(iod1) == 1
        os.kill(iod1[0], signal.SIGKILL)
        assert p.wait(timeout=60) == 1
    assert processes_naming(cluster_dir) == []
    errors = [line for line in (tmp_path / "up.log").read_text().splitlines()
              if line.startswith("Error:")]
    assert errors == [("Error: iod 1 (127.0.0.1:2051) was killed by SIGKILL unexpectedly; "
                       "stopped the rest")]


def test_nfsp_up_without_iods_keeps_data_in_the_local_store(ns, tmp_path, cluster_dir):
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(200_000))
    url = f"nfs://127.0.0.1{cluster_dir}/export/data.bin"
    with open(tmp_path / "up.log", "wb") as log:
        p = start_up(ns, cluster_dir, log, "--iods", "0")
        ns.run(["nfs-cp", str(src), url], check=True)
        stop_up(p, cluster_dir)
        assert set(datafiles(cluster_dir)) == {"state"}
        assert not os.path.exists(os.path.join(cluster_dir, "iods.conf"))
        p = start_up(ns, cluster_dir, log)   # no --iods: as the directory has, none
        out = ns.run(["nfs-cat", url], check=True, text=False).stdout
        stop_up(p, cluster_dir)
    assert out == src.read_bytes()
    assert "proto=udp" not in (tmp_path / "up.log").read_text()


def admin_command(ns, *argv):
    """An admin command as a newcomer types it after `nfsp up`: from another
    directory, with no options."""
    return ns.run([sys.executable, "-m", *argv], env=ENV, cwd="/", timeout=60)


@pytest.mark.skipif(embedded.system_configured(),
                    reason="this host has a cluster in /etc/nfsp, which the commands prefer")
def test_status_scrub_and_iod_ping_find_the_running_cluster_without_options(
        ns, tmp_path, cluster_dir):
    note = f"using the cluster `nfsp up` runs in {cluster_dir} (pid "
    with open(tmp_path / "up.log", "wb") as log:
        p = start_up(ns, cluster_dir, log, "--iods", "2")
        status = admin_command(ns, "tools.nfsp", "status")
        scrub = admin_command(ns, "tools.nfsp", "scrub")
        ping = admin_command(ns, "tools.iod_ping")
        explicit = admin_command(ns, "tools.nfsp", "status", "--dir", cluster_dir)
        stop_up(p, cluster_dir)
    assert "Check it with: nfsp status   (also nfsp scrub, iod_ping)" in \
        (tmp_path / "up.log").read_text()
    assert status.returncode == 0, status.stderr
    assert note in status.stderr
    assert "iods: 2/2 up" in status.stdout
    assert f"exports: {cluster_dir}/export" in status.stdout
    assert scrub.returncode == 0, scrub.stdout + scrub.stderr
    assert note in scrub.stderr
    assert "scrub: 1 export(s)" in scrub.stdout and "2/2 iods listed" in scrub.stdout
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert note in ping.stderr
    assert [line.split()[:2] for line in ping.stdout.splitlines()] == \
        [["127.0.0.1:2050", "rtt"], ["127.0.0.1:2051", "rtt"]]
    # Named explicitly, no note: the admin knows which cluster it is.
    assert explicit.returncode == 0 and "iods: 2/2 up" in explicit.stdout
    assert explicit.stderr == ""
    # Stopped, it is no longer recorded: the commands say where they looked.
    assert ns.run(["ls", embedded.RUN_DIR]).stdout == ""
    after = admin_command(ns, "tools.nfsp", "status")
    assert after.returncode == 1 and note not in after.stderr
    assert "/var/lib/nfsp/admin.sock: no such socket" in after.stderr
    assert "--dir DIR" in after.stderr


def test_keygen_writes_a_private_key_once(tmp_path):
    from click.testing import CliRunner

    from tools.nfsp import main
    path = str(tmp_path / "k")
    assert CliRunner().invoke(main, ["keygen", path]).exit_code == 0
    assert os.stat(path).st_mode & 0o777 == 0o600
    again = CliRunner().invoke(main, ["keygen", path])
    assert again.exit_code != 0 and "exists" in again.output
