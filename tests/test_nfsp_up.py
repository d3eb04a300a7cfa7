"""`nfsp up`: the embedded quick start the README promises, with real iods."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from tools import embedded
from tools.dev.daemons import NfspUp
from tools.dev.netns import wait_until

pytestmark = pytest.mark.skipif(not shutil.which("nfs-cp"), reason="needs libnfs-utils")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO)


def start_up(ns, directory, log, *args):
    """`nfsp up` appending to ``log``, up (banner printed); its process."""
    return NfspUp(ns, directory, log.name, args).start(60).proc


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
    src.write_bytes(os.urandom((2 << 20) + 17))
    url = f"nfs://127.0.0.1{cluster_dir}/export/data.bin"
    with open(tmp_path / "up.log", "wb") as log:
        p = start_up(ns, cluster_dir, log, "--iods", "2")
        ns.run(["nfs-cp", str(src), url], check=True)
        stop_up(p, cluster_dir)
        stored = datafiles(cluster_dir)
        # 2 MiB + 17 bytes are 3 stripes of 1 MiB: both iods hold some, the
        # metaserver's local store (under state/) none.
        assert set(stored) == {"iod0", "iod1"}, stored
        p = start_up(ns, cluster_dir, log)
        out = ns.run(["nfs-cat", url], check=True, text=False).stdout
        stop_up(p, cluster_dir)
    assert out == src.read_bytes()
    printed = (tmp_path / "up.log").read_text()
    assert f"mount -t nfs 127.0.0.1:{cluster_dir}/export /mnt\n" in printed
    assert "vers=3,proto=udp" in printed
    with open(os.path.join(cluster_dir, "iods.conf")) as f:
        conf = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    assert conf == ["127.0.0.1:2050", "127.0.0.1:2051"]
    assert os.stat(os.path.join(cluster_dir, "cluster.key")).st_mode & 0o777 == 0o600


def test_more_iods_are_appended_and_fewer_refused(ns, tmp_path, cluster_dir):
    # The new file spans 4 stripes of 1 MiB (nfspd's default): some on each of the 3 iods.
    old, new = os.urandom(200_000), os.urandom((3 << 20) + 17)
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


def nfsp_status(ns, cluster_dir):
    r = ns.run([sys.executable, "-m", "tools.nfsp", "status", "--dir", cluster_dir, "--json"],
               env=ENV, cwd="/", timeout=60)
    return json.loads(r.stdout) if r.stdout.strip() else None


@pytest.mark.parametrize("daemon, argv_mark", [("iod 1 (127.0.0.1:2051)", b"/iod1\0"),
                                              ("nfspd", b"nfspd.cli\0")])
def test_a_killed_daemon_is_restarted_and_the_data_stays_readable(ns, tmp_path, cluster_dir,
                                                                  daemon, argv_mark):
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom((2 << 20) + 17))   # stripes on both iods, the killed one's too
    url = f"nfs://127.0.0.1{cluster_dir}/export/data.bin"
    with open(tmp_path / "up.log", "wb") as log:
        p = start_up(ns, cluster_dir, log, "--iods", "2")
        ns.run(["nfs-cp", str(src), url], check=True)
        victim = processes_naming(cluster_dir, argv_mark)
        assert len(victim) == 1
        os.kill(victim[0], signal.SIGKILL)
        wait_until(lambda: len(processes_naming(cluster_dir, argv_mark)) == 1
                   and processes_naming(cluster_dir, argv_mark) != victim, 30,
                   what=f"{daemon} restarted", abort=lambda: p.poll() is not None
                   and f"nfsp up exited with {p.returncode}")
        # nfspd answers JUKEBOX for the stripes of an iod until it is back,
        # which kernel clients wait out; libnfs's nfs-cat does not, so wait
        # for nfspd to see every iod up.
        wait_until(lambda: all(i["up"] for i in (nfsp_status(ns, cluster_dir) or {}).get(
            "iods", [{"up": False}])), 60, what="nfsp status: every iod up")
        out = ns.run(["nfs-cat", url], check=True, text=False, timeout=120).stdout
        assert out == src.read_bytes()
        rows = {d["name"]: d for d in nfsp_status(ns, cluster_dir)["daemons"]}
        stop_up(p, cluster_dir)
    assert rows[daemon]["restarts"] == 1 and rows[daemon]["state"] == "running"
    assert rows[daemon]["last_exit"] == "was killed by SIGKILL"
    assert isinstance(rows[daemon]["pid"], int) and rows[daemon]["uptime"] is not None
    assert all(d["restarts"] == 0 for name, d in rows.items() if name != daemon)
    text = (tmp_path / "up.log").read_text()
    assert f"{daemon} was killed by SIGKILL unexpectedly; restarting it in 0.5 s (restart 1)" \
        in text


def test_an_iod_that_cannot_start_is_reported_not_restarted(ns, tmp_path, cluster_dir):
    # An existing directory with files but no store marker: the bare mount
    # point of a disk that failed to mount, which the iod refuses to use.
    os.makedirs(os.path.join(cluster_dir, "iod1"))
    with open(os.path.join(cluster_dir, "iod1", "stray"), "w") as f:
        f.write("x")
    with open(tmp_path / "up.log", "wb") as log:
        p = ns.popen([sys.executable, "-m", "tools.nfsp", "up", cluster_dir, "--iods", "2"],
                     stdout=log, stderr=subprocess.STDOUT, env=ENV)
        assert p.wait(timeout=60) == 1
    assert processes_naming(cluster_dir) == []
    text = (tmp_path / "up.log").read_text()
    errors = [line for line in text.splitlines() if line.startswith("Error:")]
    assert errors == [("Error: iod 1 (127.0.0.1:2051) exited with status 1 at start-up (its "
                       "log above says why); stopped the rest")]
    assert "restarting it" not in text


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
