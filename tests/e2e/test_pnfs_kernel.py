"""pNFS with a real Linux kernel client (issue 14): with its defaults nfspd
hands the guest files layouts, and the guest's NFSv4.1 client, mounting with
a plain `mount -t nfs`, writes and reads a striped 64 MiB file straight from
the iods' data servers (iod --ds-port, by default the iod's port + 1000),
byte for byte, with the metaserver's link carrying a small fraction of the
bytes each way (counted on the testbed's bridge ports, as the NFSv3/UDP
property test counts them) and /proc/self/mountstats naming the files layout
driver. An iod killed mid-write and mid-read: the client goes through the
metaserver meanwhile and the application sees no error. Its own testbed,
every daemon with its defaults; marker pnfs."""

import hashlib
import os
import re
import signal
import threading
import time

import pytest

from tests.e2e.test_nfsp_property import MIB, SIZE_MIB, _content, _delta
from tests.support import vm as vmlib
from tools.dev import testbed as tblib
from tools.dev.netns import wait_until

pytestmark = pytest.mark.pnfs

N_IODS = 4
KERNELS = ("nfsudp", "debian")


@pytest.fixture(scope="module")
def pnfs_testbed(vm_ready, tmp_path_factory):
    if not tblib.Testbed.iod_built():
        pytest.skip("no iod")
    with tblib.Testbed(f"pn{os.getpid()}", n_iods=N_IODS, n_clients=1,
                       workdir=str(tmp_path_factory.mktemp("pnfs")),
                       nfspd_args=["--v4-lease", "10"]) as tb:
        yield tb


def _kernel(label):
    k = vmlib.stock_kernel() if label == "debian" else vmlib.udp_kernel()
    if isinstance(k, str):
        pytest.skip(k)
    return k


def _op_count(stats, op):
    """Requests of one operation the mount sent (to the metaserver and the
    data servers alike)."""
    m = re.search(rf"^\s*{op}: (\d+) ", stats, re.MULTILINE)
    return int(m.group(1)) if m else 0


def _cpu_ns(tb, role="nfspd"):
    """CPU time a daemon of the testbed has used so far, all its threads."""
    pid = tb._load_state()["daemons"][role]["pid"]
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass        # a thread that ended meanwhile
    return total


def _split(what, d, tb, direction):
    client = d["vm0"][direction]
    ms = d["ms"]["rx_bytes"] + d["ms"]["tx_bytes"]
    iods = sum(d[h.role]["rx_bytes"] + d[h.role]["tx_bytes"] for h in tb.iods)
    return client, ms, iods, (f"{what} of {SIZE_MIB} MiB on {N_IODS} iods: client "
                              f"{direction} {client:,} B, metaserver link {ms:,} B "
                              f"({100 * ms / max(client, 1):.2f}%), iods' links {iods:,} B")


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_striped_file_goes_to_and_from_the_data_servers(pnfs_testbed, kernel, tmp_path,
                                                           rand):
    tb = pnfs_testbed
    content, script = _content(rand)
    written = hashlib.md5(content).hexdigest()
    mnt = f"/mnt/pnfs-{kernel}"
    with vmlib.VM(tb, 0, _kernel(kernel), str(tmp_path), data={"rand": rand}) as g:
        if g.sh("command -v mount.nfs")[0] != 0:
            pytest.skip("the guest has no mount.nfs (tools/install-deps --test)")
        # Plain, as a user types it: mount.nfs lands on NFSv4.2 (or 4.1).
        g.check(f"mkdir -p {mnt} && mount -t nfs {tb.ms.ip}:{tb.export} {mnt}", 120)
        line = g.check(f"grep ' {mnt} ' /proc/mounts")
        assert re.search(r"[ ,]vers=4\.[12][ ,]", line), line
        path = f"{mnt}/big-{kernel}"
        before, cpu = tb.counters(), _cpu_ns(tb)
        g.check(f"{script} > {path} && sync", timeout=900)
        cpu = _cpu_ns(tb) - cpu
        client_tx, ms, iods, split = _split("write", _delta(before, tb.counters()), tb,
                                            "tx_bytes")
        print(f"{split}; nfspd CPU {cpu / 1e6:.1f} ms, {cpu / 1e6 / SIZE_MIB:.3f} ms/MiB")
        assert client_tx >= SIZE_MIB * MIB, split
        assert iods >= 0.95 * SIZE_MIB * MIB, split
        assert ms < 0.05 * client_tx, split

        before, cpu = tb.counters(), _cpu_ns(tb)
        got = g.results(f"dropcaches; R read $(md5sum < {path} | cut -d' ' -f1)",
                        timeout=900)["read"]
        cpu = _cpu_ns(tb) - cpu
        assert got == written, "the client read other bytes than it wrote (pNFS)"
        client_rx, ms, iods, split = _split("read", _delta(before, tb.counters()), tb,
                                            "rx_bytes")
        print(f"{split}; nfspd CPU {cpu / 1e6:.1f} ms, {cpu / 1e6 / SIZE_MIB:.3f} ms/MiB")
        assert client_rx >= SIZE_MIB * MIB, split
        assert ms < 0.05 * client_rx, split

        stats = g.check("cat /proc/self/mountstats")
        assert "pnfs=LAYOUT_NFSV4_1_FILES" in stats, stats
        # Linux sends LAYOUTGET inside OPEN (counted there); the device it asks.
        assert _op_count(stats, "GETDEVICEINFO") >= 1, stats
        assert _op_count(stats, "LAYOUTCOMMIT") >= 1, stats
        # The per-op counts take in the data servers' READs and WRITEs (64 MiB
        # in 1 MiB requests, over the stripes); the metaserver's own
        # connection (the xprt line: its sends) carried a few dozen requests.
        io = _op_count(stats, "READ") + _op_count(stats, "WRITE")
        sends = int(re.search(r"xprt:\s+tcp(?:\s+\d+){5}\s+(\d+)", stats).group(1))
        assert io >= 2 * SIZE_MIB and sends < io / 10, stats
        g.check(f"umount {mnt}", 60)


@pytest.mark.parametrize("kernel", KERNELS)
def test_an_export_without_pnfs_carries_the_data_through_the_metaserver(pnfs_testbed, kernel,
                                                                        tmp_path, rand):
    """exports(5) no_pnfs: the same plain mount gets no layout type, and the
    kernel's NFSv4.1 READs and WRITEs go to nfspd, which relays them."""
    tb = pnfs_testbed
    exports = os.path.join(tb.workdir, "ms", "exports")
    with open(exports) as f:
        original = f.read()
    nfspd = tb._load_state()["daemons"]["nfspd"]["pid"]
    content, script = _content(rand)
    written = hashlib.md5(content).hexdigest()
    mnt = f"/mnt/nopnfs-{kernel}"
    try:
        with open(exports, "w") as f:
            f.write(original.replace("insecure)", "insecure,no_pnfs)"))
        os.kill(nfspd, signal.SIGHUP)
        with vmlib.VM(tb, 0, _kernel(kernel), str(tmp_path), data={"rand": rand}) as g:
            if g.sh("command -v mount.nfs")[0] != 0:
                pytest.skip("the guest has no mount.nfs (tools/install-deps --test)")
            # The reload is seen once a fresh mount finds no layout type.
            def no_layout_types():
                g.check(f"mkdir -p {mnt} && mount -t nfs {tb.ms.ip}:{tb.export} {mnt}", 120)
                stats = g.check("cat /proc/self/mountstats").split(f" mounted on {mnt} ")[1]
                if "pnfs=LAYOUT_NFSV4_1_FILES" not in stats.split("\ndevice ")[0]:
                    return True
                g.check(f"umount {mnt}", 60)
                return False
            wait_until(no_layout_types, 60, what="the export without pnfs", interval=1)
            path = f"{mnt}/relayed-{kernel}"
            before = tb.counters()
            g.check(f"{script} > {path} && sync", timeout=900)
            client_tx, ms, _, split = _split("write", _delta(before, tb.counters()), tb,
                                             "tx_bytes")
            print(split)
            assert ms >= 0.95 * client_tx >= 0.95 * SIZE_MIB * MIB, split
            before = tb.counters()
            got = g.results(f"dropcaches; R read $(md5sum < {path} | cut -d' ' -f1)",
                            timeout=900)["read"]
            assert got == written, "the client read other bytes than it wrote (no pNFS)"
            client_rx, ms, _, split = _split("read", _delta(before, tb.counters()), tb,
                                             "rx_bytes")
            print(split)
            assert ms >= 0.95 * client_rx >= 0.95 * SIZE_MIB * MIB, split
            stats = g.check("cat /proc/self/mountstats")
            assert _op_count(stats, "LAYOUTGET") == 0, stats
            g.check(f"umount {mnt}", 60)
    finally:
        with open(exports, "w") as f:
            f.write(original)
        os.kill(nfspd, signal.SIGHUP)


def _kill(tb, role):
    """SIGKILL, as a crash: the daemon gets no chance to close its connections."""
    rec = tb._load_state()["daemons"][role]
    os.kill(rec["pid"], signal.SIGKILL)
    tb.stop_daemon(role, timeout=10)    # reaped and forgotten, so start_daemons restarts it


def _under(g, script, timeout=900):
    """Run ``script`` in the guest in a thread: (thread, outcome dict)."""
    outcome = {}

    def run():
        try:
            outcome["out"] = g.check(script, timeout)
        except BaseException as e:  # noqa: BLE001 (reported by the test's thread)
            outcome["error"] = e
    t = threading.Thread(target=run)
    t.start()
    return t, outcome


@pytest.mark.parametrize("kernel", KERNELS)
def test_an_iod_killed_mid_write_and_mid_read_costs_the_application_nothing(
        pnfs_testbed, kernel, tmp_path, rand):
    """The client falls back to the metaserver (Linux: a data server's
    connection error marks its device unavailable and resends through the
    MDS), which answers DELAY while the iod is down; once it is back (restarted
    here, as nfsp up's supervisor would) everything completes, data intact."""
    tb = pnfs_testbed
    content, script = _content(rand)
    written = hashlib.md5(content).hexdigest()
    mnt = f"/mnt/pnfs-kill-{kernel}"
    name = f"killed-{kernel}"
    with vmlib.VM(tb, 0, _kernel(kernel), str(tmp_path), data={"rand": rand}) as g:
        if g.sh("command -v mount.nfs")[0] != 0:
            pytest.skip("the guest has no mount.nfs (tools/install-deps --test)")
        g.check(f"mkdir -p {mnt} && mount -t nfs {tb.ms.ip}:{tb.export} {mnt}", 120)
        t, outcome = _under(g, f"{script} > {mnt}/{name} && sync")
        wait_until(lambda: os.path.exists(os.path.join(tb.export, name)) or not t.is_alive(),
                   120, what="the write under way")
        _kill(tb, "iod1")
        print(f"{kernel}: iod1 killed {'during' if t.is_alive() else 'after'} the write")
        time.sleep(2)       # down for a while: the client must notice
        tb.start_daemons()
        t.join(900)
        assert not t.is_alive() and "error" not in outcome, outcome
        t, outcome = _under(g, f"dropcaches; md5sum < {mnt}/{name}")
        time.sleep(1)
        _kill(tb, "iod2")
        print(f"{kernel}: iod2 killed {'during' if t.is_alive() else 'after'} the read")
        time.sleep(2)
        tb.start_daemons()
        t.join(900)
        assert not t.is_alive() and "error" not in outcome, outcome
        assert outcome["out"].split()[0] == written, "other bytes after an iod was killed"
        g.check(f"umount {mnt}", 120)
