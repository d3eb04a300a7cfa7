"""Two kernel clients on two hosts sharing files through nfspd: what one
writes and closes, the other opens and reads (close-to-open consistency)."""

import concurrent.futures

import pytest

from tests.e2e import expect
from tests.support import vm as vmlib

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def pair(guests, testbed):
    a = guests.get("debian")
    # The UDP kernel on UDP when there is one: two kernels, two transports.
    if isinstance(vmlib.udp_kernel(), str):
        b, b_proto = guests.get("debian", slot=1), "tcp"
    else:
        b, b_proto = guests.get("nfsudp"), "udp"
    mounts = []
    for g, proto in ((a, "tcp"), (b, b_proto)):
        g.check(f"nfs_mount 3 {proto} udp {testbed.ms.ip} {testbed.export} /mnt/shared", 60)
        mounts.append(g)
    a.check("mkdir -p /mnt/shared/two")
    yield a, b
    for g in mounts:
        g.check("umount /mnt/shared", 60)


def _sha(g, path):
    # Open (sha256sum) before stat: opening revalidates the cached attributes
    # (close-to-open), a bare stat may answer from them.
    return g.results(f"s=$(h {path}); R sha $(stat -c %s {path}) $s")["sha"]


def test_one_writes_other_reads(pair, rand):
    a, b = pair
    a.check("head -c 1048576 /data/rand > /mnt/shared/two/f")
    assert _sha(b, "/mnt/shared/two/f") == f"{MIB} {expect.sha(rand[:MIB])}"
    b.check("head -c 5000 /data/rand >> /mnt/shared/two/f")
    assert _sha(a, "/mnt/shared/two/f") == f"{MIB + 5000} {expect.sha(rand[:MIB] + rand[:5000])}"


def test_both_write_one_file_at_once(pair, rand):
    a, b = pair
    a.check(": > /mnt/shared/two/g")
    cmd = "head -c 1048576 /data/rand | dd of=/mnt/shared/two/g bs=1M seek={} conv=notrunc"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        done = [pool.submit(a.check, cmd.format(0), 300), pool.submit(b.check, cmd.format(1), 300)]
        for f in done:
            f.result()
    want = f"{2 * MIB} {expect.sha(rand[:MIB] * 2)}"
    assert _sha(a, "/mnt/shared/two/g") == want
    assert _sha(b, "/mnt/shared/two/g") == want


def test_rename_and_remove_seen_by_the_other(pair, rand):
    a, b = pair
    a.check("head -c 70000 /data/rand > /mnt/shared/two/r; mv /mnt/shared/two/r /mnt/shared/two/r2")
    assert _sha(b, "/mnt/shared/two/r2") == f"70000 {expect.sha(rand[:70000])}"
    b.check("rm /mnt/shared/two/r2")
    # a's cached name leads to a handle the server now calls stale; the kernel
    # looks the name up again and finds nothing.
    seen = a.check("cat /mnt/shared/two/r2 >/dev/null 2>&1 && echo present || echo ENOENT")
    assert seen.strip() == "ENOENT"
