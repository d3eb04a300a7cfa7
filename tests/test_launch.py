"""`nfsp launch` / `nfsp stop-iods` for real: ClusterShell's ssh to OpenSSH
servers running in three testbed hosts (tests/support/sshd.py), the iods it
starts checked with iod_ping and used by a real nfspd, then stopped; and a
launch where one host has no sshd and another no key."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from common import keyfile
from tests.support import sshd as sshlib
from tools import launch as launchlib
from tools.dev import netns as nslib
from tools.dev import testbed as tblib
from tools.rpcclient import getport

pytestmark = pytest.mark.netns
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO)
IOD_PORT = 2050
MOUNT_PROGRAM = 100005
STARTED = re.compile(r"^(\S+)\s+started \(pid (\d+); log ")


class Site:
    def __init__(self, tb, ssh, work):
        self.tb = tb
        self.ssh = ssh
        self.work = work
        self.key = os.path.join(work, "cluster.key")
        keyfile.generate(self.key)

    def node_dir(self, host, nodes="nodes"):
        """What ``host`` keeps under the ``nodes`` tree (data, key, log)."""
        return os.path.join(self.work, nodes, host.ip)

    def conf(self, name, hosts):
        path = os.path.join(self.work, name)
        with open(path, "w") as f:
            f.write("# written by tests/test_launch.py\n")
            f.writelines(f"{h.ip}:{IOD_PORT}\n" for h in hosts)
        return path

    def nfsp(self, *args, timeout=180):
        """`nfsp ARGS` run on the metaserver host, the way an admin would."""
        return self.tb.ms.run([sys.executable, "-m", "tools.nfsp", *args], env=ENV, cwd=REPO,
                              timeout=timeout)

    def ssh_args(self, conf):
        o = self.ssh.client_options()
        args = ["--iods", conf, "--ssh-user", "root", "--ssh-config", o["config"],
                "--identity", o["identity"],
                # The nodes run this tree's nfsp, not an installed one.
                "--remote-nfsp", f"env PYTHONPATH={REPO} {sys.executable} -m tools.nfsp"]
        for opt in o["options"]:
            args += ["--ssh-option", opt]
        return args

    def launch(self, conf, *more, nodes="nodes"):
        nodes = os.path.join(self.work, nodes, "{host}")
        return self.nfsp("launch", *self.ssh_args(conf), "--data-dir", f"{nodes}/data",
                         "--key", f"{nodes}/cluster.key", "--log-dir", f"{nodes}/log", *more)

    def stop(self, conf):
        return self.nfsp("stop-iods", *self.ssh_args(conf))

    def ping(self, conf, *more, host=None):
        return (host or self.tb.ms).run([sys.executable, "-m", "tools.iod_ping", "--iods", conf,
                               "--key", self.key, "--timeout", "3", *more], env=ENV, cwd=REPO)


def _iods_under(directory):
    """pids of iod processes whose data directory is under ``directory``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"iod.cli" in argv and any(a.startswith(directory.encode()) for a in argv):
            found.append(int(pid))
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    why = sshlib.missing() or (None if nslib.available() else "needs nsenter/unshare")
    if why:
        pytest.skip(f"nfsp launch: {why}")
    try:
        import ClusterShell  # noqa: F401
    except ImportError:
        pytest.skip("nfsp launch: ClusterShell missing (pip install ClusterShell)")
    work = str(tmp_path_factory.mktemp("launch"))
    tb = tblib.Testbed(f"ln{os.getpid()}", n_iods=3, n_clients=1,
                       workdir=os.path.join(work, "bed"))
    ssh = None
    try:
        tb.up(daemons=False)
        ssh = sshlib.SshSite(os.path.join(work, "ssh"))
        for h in tb.iods:            # c0 gets no sshd: the unreachable host
            ssh.serve(h)
        yield Site(tb, ssh, work)
    finally:
        # A test that failed half-way may leave iods behind: not ours to keep.
        for pid in _iods_under(work):
            os.kill(pid, signal.SIGKILL)
        if ssh is not None:
            ssh.stop()
        tb.down()


def _lines(out):
    return [ln for ln in out.splitlines() if ln.strip()]


def _datafiles(directory):
    n = 0
    for _, _, files in os.walk(directory):
        n += sum(1 for f in files if len(f) == 33 and f[16] == ".")
    return n


def test_launch_ping_use_and_stop_three_iods(site, tmp_path):
    tb = site.tb
    conf = site.conf("iods.conf", tb.iods)
    r = site.launch(conf, "--copy-key", site.key, "--pong-allow", f"{tb.clients[0].ip}/32")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = _lines(r.stdout)
    assert len(lines) == 4 and lines[-1] == "all 3 iods running", r.stdout
    pids = {}
    for h, line in zip(tb.iods, lines):
        m = STARTED.match(line)
        assert m and m.group(1) == f"{h.ip}:{IOD_PORT}", line
        pids[h.ip] = int(m.group(2))
    for h in tb.iods:
        assert launchlib.is_iod(pids[h.ip], IOD_PORT)
        copied = os.path.join(site.node_dir(h), "cluster.key")
        assert os.stat(copied).st_mode & 0o777 == 0o600
        with open(copied) as a, open(site.key) as b:
            assert a.read() == b.read()
    # Each really listens in its own host's namespace, with its IP-ID slot.
    for i, h in enumerate(tb.iods):
        with open(f"/proc/{pids[h.ip]}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        assert b"--ip-id-slot" in argv and argv[argv.index(b"--ip-id-slot") + 1] == \
            f"{i}/3".encode()
        assert os.readlink(f"/proc/{pids[h.ip]}/ns/net") == \
            h.run(["readlink", "/proc/self/ns/net"], check=True).stdout.strip()

    ping = site.ping(conf)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert all(f"{h.ip}:{IOD_PORT}" in ping.stdout for h in tb.iods)
    # A client node may ask for PONGs spoofed from the metaserver's address
    # (--pong-allow passed through), and they reach it: the network lets the
    # iods answer UDP reads. (Not from the metaserver itself: Linux drops an
    # arriving packet whose source is one of its own addresses.)
    ping = site.ping(conf, "--spoof-from", tb.ms.ip, host=tb.clients[0])
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert ping.stdout.count("spoofed PONG from") == 3 and "NOT arrived" not in ping.stdout

    again = site.launch(conf)
    assert again.returncode == 0, again.stdout + again.stderr
    for h, line in zip(tb.iods, _lines(again.stdout)):
        assert line == f"{h.ip}:{IOD_PORT}  already running (pid {pids[h.ip]})", line

    _nfspd_stores_on_them(site, conf, tmp_path)

    stop = site.stop(conf)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    for h, line in zip(tb.iods, _lines(stop.stdout)):
        assert line.endswith(f"stopped (pid {pids[h.ip]})"), line
    assert _lines(stop.stdout)[-1] == "all 3 iods stopped"
    assert not any(launchlib.is_iod(pid, IOD_PORT) for pid in pids.values())
    assert site.ping(conf).returncode == 1
    twice = site.stop(conf)
    assert twice.returncode == 0 and twice.stdout.count("not running (no /run/nfsp/iod-2050.pid)") \
        == 3, twice.stdout


def _nfspd_stores_on_them(site, conf, tmp_path):
    """A real metaserver on the launched iods: a file written through it
    comes back, and its stripes are in the iods' data directories."""
    if not shutil.which("nfs-cp"):
        return   # the iods answered iod_ping; the NFS round trip needs libnfs-utils
    tb = site.tb
    export = tmp_path / "export"
    export.mkdir()
    (tmp_path / "exports").write_text(f"{export} {tb.subnet}(rw,no_root_squash,insecure)\n")
    with open(tmp_path / "nfspd.log", "wb") as log:
        p = tb.ms.popen([sys.executable, "-m", "nfspd.cli", "--exports", tmp_path / "exports",
                         "--state-dir", tmp_path / "state", "--bind", "0.0.0.0",
                         "--portmap", "embedded", "--iods", conf, "--key", site.key,
                         "--unlinkd", "off"], stdout=log, stderr=subprocess.STDOUT, env=ENV,
                        cwd=REPO)
    try:
        nslib.wait_until(lambda: tb.ms.inside(getport, tb.ms.ip, MOUNT_PROGRAM, 3) != 0, 30,
                         what="nfspd serving",
                         abort=lambda: p.poll() is not None
                         and f"nfspd exited:\n{(tmp_path / 'nfspd.log').read_text()}")
        data = os.urandom((3 << 20) + 17)    # 4 stripes of 1 MiB: some on each of the 3 iods
        (tmp_path / "in").write_bytes(data)
        url = f"nfs://{tb.ms.ip}{export}/f"
        c0 = tb.clients[0]
        c0.run(["nfs-cp", tmp_path / "in", url], check=True)
        assert c0.run(["nfs-cat", url], check=True, text=False).stdout == data
        for h in tb.iods:
            assert _datafiles(os.path.join(site.node_dir(h), "data")) >= 1, h
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
    assert p.returncode == 0, (tmp_path / "nfspd.log").read_text()


def test_a_host_without_sshd_or_key_fails_alone(site):
    tb = site.tb
    good, keyless, unreachable = tb.iods[0], tb.iods[1], tb.clients[0]
    os.makedirs(site.node_dir(good, "mixed"))
    shutil.copyfile(site.key, os.path.join(site.node_dir(good, "mixed"), "cluster.key"))
    os.chmod(os.path.join(site.node_dir(good, "mixed"), "cluster.key"), 0o600)
    conf = site.conf("mixed.conf", [good, keyless, unreachable])
    r = site.launch(conf, "--connect-timeout", "5", nodes="mixed")
    try:
        assert r.returncode == 1, r.stdout + r.stderr
        lines = _lines(r.stdout)
        assert len(lines) == 3, r.stdout
        assert STARTED.match(lines[0]) and lines[0].startswith(f"{good.ip}:{IOD_PORT} "), lines
        assert lines[1].startswith(f"{keyless.ip}:{IOD_PORT}  FAILED: "), lines
        assert "no such key file" in lines[1], lines
        assert lines[2].startswith(f"{unreachable.ip}:{IOD_PORT}  FAILED: ssh: connect to host "
                                   f"{unreachable.ip} port 22: Connection refused"), lines
        assert _lines(r.stderr) == [f"Error: 2 of 3 iods failed: {keyless.ip}:{IOD_PORT}, "
                                    f"{unreachable.ip}:{IOD_PORT}"], r.stderr
        assert site.ping(site.conf("good.conf", [good])).returncode == 0
    finally:
        stop = site.stop(conf)
    lines = _lines(stop.stdout)
    assert stop.returncode == 1, stop.stdout + stop.stderr
    assert lines[0].startswith(f"{good.ip}:{IOD_PORT}  stopped (pid "), lines
    assert lines[1] == f"{keyless.ip}:{IOD_PORT}  not running (no /run/nfsp/iod-2050.pid)", lines
    assert "FAILED: ssh: connect to host" in lines[2], lines
    assert _iods_under(os.path.join(site.work, "mixed")) == []


def test_copy_key_onto_itself_keeps_it(site):
    """A node that is this host, or shares its file system: --copy-key to the
    very path it copies from must not truncate the key."""
    conf = site.conf("self.conf", site.tb.iods[:2])
    with open(site.key, "rb") as f:
        before = f.read()
    r = site.launch(conf, "--copy-key", site.key, "--key", site.key, nodes="self")
    stop = site.stop(conf)
    assert r.returncode == 0, r.stdout + r.stderr
    assert stop.returncode == 0, stop.stdout + stop.stderr
    with open(site.key, "rb") as f:
        assert f.read() == before
    assert os.stat(site.key).st_mode & 0o777 == 0o600
    assert [n for n in os.listdir(site.work) if "nfsp-new" in n] == []


def test_node_side_reports_an_iod_dying_at_start_and_spares_a_reused_pid(site, tmp_path):
    """`nfsp node-iod`, what launch runs on each node, run here directly."""
    host = site.tb.iods[2]
    run_dir = str(tmp_path / "run")
    node = [sys.executable, "-m", "tools.nfsp", "node-iod"]

    def hold_port():
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", IOD_PORT))
        s.listen()
        return s
    taken = host.inside(hold_port)
    try:
        r = host.run(node + ["start", "--port", str(IOD_PORT), "--data-dir", tmp_path / "data",
                             "--key", site.key, "--run-dir", run_dir, "--log-dir", tmp_path],
                     env=ENV, cwd=REPO)
    finally:
        taken.close()
    assert r.returncode == 1 and r.stdout == "", r.stdout + r.stderr
    assert re.fullmatch(r"Error: iod exited at start \(status 1\): .*Address already in use\n",
                        r.stderr), r.stderr
    assert not os.path.exists(os.path.join(run_dir, f"iod-{IOD_PORT}.pid"))

    # A pid file whose pid is now some other process: that process is left alone.
    with open(os.path.join(run_dir, f"iod-{IOD_PORT}.pid"), "w") as f:
        f.write(f"{os.getpid()}\n")
    r = host.run(node + ["stop", "--port", str(IOD_PORT), "--run-dir", run_dir], env=ENV,
                 cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"not running (stale {run_dir}/iod-{IOD_PORT}.pid, removed)\n"
    assert not os.path.exists(os.path.join(run_dir, f"iod-{IOD_PORT}.pid"))
