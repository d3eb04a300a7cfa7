"""The NFSP property itself, measured on the links: over UDP, file data read
by a kernel client comes straight from the iods (replies carrying the
metaserver's address), so the metaserver's link carries a small fraction of
it; over TCP the metaserver relays the same bytes."""

import hashlib
import os

import pytest

from tests.support import vm as vmlib
from tools.dev import testbed as tblib

MIB = 1024 * 1024
SIZE_MIB = 64
N_IODS = 4


@pytest.fixture(scope="module")
def striped(vm_ready, tmp_path_factory):
    if not tblib.Testbed.iod_built():
        pytest.skip("iod not built yet (no iod/daemon.py): the direct-path property waits for it")
    if isinstance(vmlib.udp_kernel(), str):
        pytest.skip(vmlib.udp_kernel())
    with tblib.Testbed(f"p{os.getpid()}", n_iods=N_IODS, n_clients=1,
                       workdir=str(tmp_path_factory.mktemp("striped"))) as tb:
        yield tb


def _delta(before, after):
    return {h: {k: after[h][k] - before.get(h, {}).get(k, 0) for k in after[h]} for h in after}


# 64 MiB from the 20 MiB /data/rand: copies shifted by one byte each, so a
# stripe at a wrong offset cannot go unnoticed. md5: the cheapest sum under TCG.
def _content(rand):
    head = rand + rand[1:] + rand[2:]
    rest = SIZE_MIB * MIB - len(head)
    script = ("{ cat /data/rand; tail -c +2 /data/rand; tail -c +3 /data/rand; "
              f"tail -c +4 /data/rand | head -c {rest}; }}")
    return head + rand[3:3 + rest], script


def _read(g, tb, path):
    before = tb.counters()
    got = g.results(f"dropcaches; R read $(md5sum < {path} | cut -d' ' -f1)", timeout=600)["read"]
    return got, _delta(before, tb.counters())


def test_udp_reads_bypass_the_metaserver(striped, tmp_path, rand):
    kernel = vmlib.udp_kernel()
    tb = striped
    content, script = _content(rand)
    assert len(content) == SIZE_MIB * MIB
    written = hashlib.md5(content).hexdigest()
    with vmlib.VM(tb, 0, kernel, str(tmp_path), data={"rand": rand}) as g:
        g.check(f"nfs_mount 3 udp udp {tb.ms.ip} {tb.export} /mnt/u", 60)
        g.check(f"{script} > /mnt/u/big", timeout=600)

        got, d = _read(g, tb, "/mnt/u/big")
        assert got == written, "the client read other bytes than it wrote (UDP, iods' replies)"
        client_rx = d["vm0"]["rx_bytes"]
        ms = d["ms"]["rx_bytes"] + d["ms"]["tx_bytes"]
        iods_tx = sum(d[h.role]["tx_bytes"] for h in tb.iods)
        split = (f"UDP read of {SIZE_MIB} MiB on {N_IODS} iods: client received {client_rx:,} B, "
                 f"metaserver link {ms:,} B ({100 * ms / client_rx:.2f}%), iods sent {iods_tx:,} B")
        print(split)
        assert client_rx >= SIZE_MIB * MIB, split
        assert ms < 0.05 * client_rx, split
        assert iods_tx >= 0.95 * SIZE_MIB * MIB, split
        assert all(d[h.role]["tx_bytes"] >= SIZE_MIB * MIB / N_IODS * 0.9 for h in tb.iods), \
            f"stripes not spread over every iod: {d}"

        g.check(f"nfs_mount 3 tcp udp {tb.ms.ip} {tb.export} /mnt/t", 60)
        got, d = _read(g, tb, "/mnt/t/big")
        assert got == written, "the TCP relay gave other bytes than UDP"
        relay = (f"TCP read: client received {d['vm0']['rx_bytes']:,} B, metaserver sent "
                 f"{d['ms']['tx_bytes']:,} B")
        print(relay)
        assert d["ms"]["tx_bytes"] >= SIZE_MIB * MIB, relay
        g.check("umount /mnt/t; umount /mnt/u", 60)
