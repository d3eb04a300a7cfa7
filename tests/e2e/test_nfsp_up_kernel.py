"""`nfsp up` as the quick start has it, served to a Linux kernel client.

From a fresh directory on a testbed host (`--bind` its address, everything
generated: exports, iods.conf, key, two iods), a qemu guest mounts the export
with the command `nfsp up` prints, writes and reads a file; `nfsp up` is
stopped with SIGTERM and started again, and the guest reads the same data
back through the mount it kept across the restart (its file handles stay
valid) and through a fresh mount.

Then each kind of daemon is killed with SIGKILL under the guest's workload
(hard mount): `nfsp up` restarts the iod and nfspd, nfspd its unlinkd; the
workload finishes with no error and the right bytes, `nfsp status` counts the
restarts, every purge is done and scrub finds no leak."""

import json
import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from tests.e2e import expect
from tests.support import vm as vmlib
from tests.test_nfsp_up import processes_naming
from tools.dev.netns import wait_until

READY = "Ctrl-C or SIGTERM stops it."
MNT = "/mnt/nfspup"
SIZE = (16 << 20) + 3   # 17 stripes of 1 MiB (nfspd's default): both iods hold some
NOBODY = 65534


@pytest.fixture
def guest(guests):
    # Any kernel does: the mount is NFSv3 over TCP, which both speak.
    return guests.get("nfsudp" if isinstance(vmlib.stock_kernel(), str) else "debian")


def _start(host, directory, log_path):
    """`nfsp up DIRECTORY --bind HOST` in ``host``; once it says it serves,
    (the process, the mount command it printed)."""
    before = log_path.read_text().count(READY) if log_path.exists() else 0
    with open(log_path, "ab") as log:
        p = host.popen([sys.executable, "-m", "tools.nfsp", "up", directory, "--bind", host.ip],
                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                       env=dict(os.environ, PYTHONPATH=vmlib.REPO), cwd=vmlib.REPO)
    wait_until(lambda: log_path.read_text().count(READY) > before, 60,
               what="nfsp up serving", abort=lambda: p.poll() is not None
               and f"nfsp up exited with status {p.returncode}:\n{log_path.read_text()}")
    printed = re.findall(r"^  (mount -t nfs .*)$", log_path.read_text(), re.M)
    return p, printed[-1]


def _stop(p):
    p.send_signal(signal.SIGTERM)
    return p.wait(timeout=60)


def _leave_clean(guest, mounted, p):
    """However a case ended: the guest's mount and `nfsp up` undone, so that
    the next case starts from a clean guest."""
    if mounted:
        guest.sh(f"umount -f {MNT}", 60)
    if p is not None and p.poll() is None:
        _stop(p)


def _sha(g, path):
    return g.results(f"s=$(h {path}); R sha $(stat -c %s {path}) $s")["sha"]


def _datafiles(directory):
    return sum(1 for _, _, files in os.walk(directory)
               for f in files if len(f) == 33 and f[16] == ".")


def test_nfsp_up_serves_a_kernel_client_across_a_restart(testbed, guest, rand, tmp_path):
    host = testbed.clients[0]       # a host of the testbed running nothing else
    directory = str(tmp_path / "nfsp-data")
    export = f"{directory}/export"
    want = f"{SIZE} {expect.sha(rand[:SIZE])}"
    log_path = tmp_path / "up.log"
    p = None
    mounted = False
    try:
        p, printed = _start(host, directory, log_path)
        assert printed == f"mount -t nfs {host.ip}:{export} /mnt", printed
        # The printed command lands on NFSv4.1/4.2 (tests/e2e/test_nfs4_kernel.py
        # covers that path); this case keeps to NFSv3 over TCP with the
        # options made explicit (ports from the portmapper, MOUNT over UDP;
        # guest_wl.sh), as it did before.
        mount = f"nfs_mount 3 tcp udp {host.ip} {export} {MNT}"
        # The generated exports squash root (root_squash): the admin makes the
        # export a scratch area that any user, root of a client too, may write.
        os.chmod(export, 0o1777)
        guest.check(mount, 60)
        mounted = True
        guest.check(f"head -c {SIZE} /data/rand > {MNT}/f && dropcaches", 300)
        assert _sha(guest, f"{MNT}/f") == want
        assert os.stat(f"{export}/f").st_uid == NOBODY      # root came in squashed
        assert _datafiles(f"{directory}/iod0") >= 1 and _datafiles(f"{directory}/iod1") >= 1

        assert _stop(p) == 0, log_path.read_text()
        p, _ = _start(host, directory, log_path)
        # The guest kept its mount across the restart: same file handles, and
        # the data comes from the server (dropcaches), not the guest's cache.
        guest.check("dropcaches", 120)
        assert _sha(guest, f"{MNT}/f") == want
        guest.check(f"umount {MNT}", 60)
        mounted = False
        guest.check(mount, 60)
        mounted = True
        assert _sha(guest, f"{MNT}/f") == want
        guest.check(f"umount {MNT}", 60)
        mounted = False
        assert _stop(p) == 0, log_path.read_text()
        p = None
    finally:
        _leave_clean(guest, mounted, p)
    assert log_path.read_text().count("NFSP stopped.") == 2


def test_nfsp_up_on_every_interface_gives_a_kernel_client_pnfs(testbed, guest, rand,
                                                               tmp_path):
    """--bind 0.0.0.0: the iods talk to nfspd on loopback, which the guest
    cannot reach; their data servers listen on every interface and the guest
    is given the address it mounted (iods.conf ds=0.0.0.0). A plain mount
    then reads and writes the iods directly."""
    host = testbed.clients[0]
    directory = str(tmp_path / "nfsp-data")
    export = f"{directory}/export"
    log_path = tmp_path / "up.log"
    size = 16 << 20          # 16 stripes of 1 MiB: calls enough to tell where they went
    want = f"{size} {expect.sha(rand[:size])}"
    p = None
    mounted = False
    before = log_path.read_text().count(READY) if log_path.exists() else 0
    try:
        with open(log_path, "ab") as log:
            p = host.popen([sys.executable, "-m", "tools.nfsp", "up", directory,
                            "--bind", "0.0.0.0"],
                           stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           env=dict(os.environ, PYTHONPATH=vmlib.REPO), cwd=vmlib.REPO)
        wait_until(lambda: log_path.read_text().count(READY) > before, 60,
                   what="nfsp up serving", abort=lambda: p.poll() is not None
                   and f"nfsp up exited with status {p.returncode}:\n{log_path.read_text()}")
        os.chmod(export, 0o1777)        # root_squash: a scratch area root may write too
        if guest.sh("command -v mount.nfs")[0] != 0:
            pytest.skip("the guest has no mount.nfs (tools/install-deps --test)")
        guest.check(f"mkdir -p {MNT} && mount -t nfs {host.ip}:{export} {MNT}", 120)
        mounted = True
        guest.check(f"head -c {size} /data/rand > {MNT}/f && sync && dropcaches", 300)
        assert _sha(guest, f"{MNT}/f") == want
        stats = guest.check("cat /proc/self/mountstats").split(f" mounted on {MNT} ")[1]
        stats = stats.split("\ndevice ")[0]
        assert "pnfs=LAYOUT_NFSV4_1_FILES" in stats, stats
        # The guest reached the iods' data servers at the address it mounted:
        # most READs and WRITEs went there, not over the metaserver's
        # connection (the xprt line: its sends).
        io = sum(int(m) for m in re.findall(r"^\s*(?:READ|WRITE): (\d+) ", stats, re.MULTILINE))
        sends = int(re.search(r"xprt:\s+tcp(?:\s+\d+){5}\s+(\d+)", stats).group(1))
        assert io >= 2 * size // (1 << 20) and sends < io / 2, (io, sends, stats)
        assert log_path.read_text().count("data server connection from ") >= 2
        guest.check(f"umount {MNT}", 60)
        mounted = False
        assert _stop(p) == 0, log_path.read_text()
        p = None
    finally:
        _leave_clean(guest, mounted, p)


# --- issue 17: one part killed, the cluster restarts it ---------------------------------

FILE_KIB = 256
PER_PHASE = 6


def _phase(k):
    """Guest script: write files k*6..k*6+5 (each its own slice of /data/rand),
    removing every third one again (purges for unlinkd)."""
    lines = []
    for i in range(k * PER_PHASE, (k + 1) * PER_PHASE):
        lines.append(f"dd if=/data/rand of={MNT}/w{i} bs=1024 skip={i * FILE_KIB} "
                     f"count={FILE_KIB} 2>/dev/null")
        if i % 3 == 2:
            lines.append(f"rm {MNT}/w{i}")
    return "\n".join(lines)


def _kept(phases):
    return [i for i in range(phases * PER_PHASE) if i % 3 != 2]


def _status(host, directory):
    r = host.run([sys.executable, "-m", "tools.nfsp", "status", "--dir", directory, "--json"],
                 env=dict(os.environ, PYTHONPATH=vmlib.REPO), cwd="/", timeout=60)
    return json.loads(r.stdout) if r.stdout.strip() else {}


def test_each_daemon_killed_under_a_kernel_clients_workload_is_restarted(
        testbed, guest, rand, tmp_path):
    host = testbed.clients[0]
    directory = str(tmp_path / "nfsp-data")
    export = f"{directory}/export"
    log_path = tmp_path / "up.log"
    victims = [("iod 1", b"/iod1\0"), ("nfspd", b"nfspd.cli\0"), ("unlinkd", b"unlinkd.cli\0")]
    p, printed = _start(host, directory, log_path)
    mounted = False
    try:
        os.chmod(export, 0o1777)
        assert printed == f"mount -t nfs {host.ip}:{export} /mnt", printed
        # NFSv3 over TCP, as the case above: the printed command's NFSv4.1
        # path is tests/e2e/test_nfs4_kernel.py's.
        guest.check(f"nfs_mount 3 tcp udp {host.ip} {export} {MNT}", 60)
        mounted = True
        for k, (name, mark) in enumerate(victims):
            wait_until(lambda: len(processes_naming(directory, mark)) == 1, 60,
                       what=f"{name} running")
            old = processes_naming(directory, mark)
            outcome = {}

            def workload():
                try:
                    guest.check(_phase(k), 600)
                except BaseException as e:     # reported by the test's thread
                    outcome["error"] = e
            t = threading.Thread(target=workload)
            t.start()
            first = f"{export}/w{k * PER_PHASE}"
            wait_until(lambda: os.path.exists(first) or not t.is_alive(), 120,
                       what=f"phase {k} under way")
            os.kill(old[0], signal.SIGKILL)
            wait_until(lambda: processes_naming(directory, mark) not in ([], old), 60,
                       what=f"{name} restarted", abort=lambda: p.poll() is not None
                       and f"nfsp up exited:\n{log_path.read_text()}")
            t.join(600)
            assert not t.is_alive(), f"the workload did not finish after {name} was killed"
            assert "error" not in outcome, outcome.get("error")
        kept = _kept(len(victims))
        got = guest.results("dropcaches\n" + "\n".join(
            f"R w{i} $(h {MNT}/w{i})" for i in kept), 300)
        want = {f"w{i}": expect.sha(rand[i * FILE_KIB * 1024:(i + 1) * FILE_KIB * 1024])
                for i in kept}
        assert got == want
        guest.check(f"ls {MNT} | wc -l | grep -qx {len(kept)}", 60)
        guest.check(f"umount {MNT}", 60)
        mounted = False
        st = _status(host, directory)
        rows = {d["name"].split(" (")[0]: d for d in st["daemons"]}
        assert rows["iod 1"]["restarts"] == 1 and rows["nfspd"]["restarts"] == 1
        assert rows["iod 0"]["restarts"] == 0 and all(d["state"] == "running"
                                                      for d in rows.values())
        # unlinkd is nfspd's child: nfspd restarted it; every purge then done.
        assert "unlinkd exited with status -9" in log_path.read_text()
        wait_until(lambda: _status(host, directory)["purges"]["pending"] == 0, 120,
                   what="every purge acknowledged")
        r = host.run([sys.executable, "-m", "tools.nfsp", "scrub", "--dir", directory],
                     env=dict(os.environ, PYTHONPATH=vmlib.REPO), cwd="/", timeout=120)
        assert r.returncode == 0 and " 0 leaked datafiles" in r.stdout, r.stdout + r.stderr
        assert _stop(p) == 0, log_path.read_text()
        p = None
    finally:
        _leave_clean(guest, mounted, p)
