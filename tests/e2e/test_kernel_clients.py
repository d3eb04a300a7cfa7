"""Real Linux kernel NFS clients (qemu guests) against nfspd on the testbed.

Every combination mounts the export the way `mount -t nfs` does (kernel mount
options, ports from the metaserver's portmapper) and runs the workloads of
tests/support/guest_wl.sh; the host compares each reported value with the one
it computed itself (tests/e2e/expect.py).
"""

import dataclasses
import hashlib
import os
import time

import pytest

from tests.e2e import expect
from tools.dev import nfsclient

SIZES = (0, 1, 4095, 4096, 4097, 65535, 65536, 65537, 1048579, 20 * 1024 * 1024)
# NFSv2 writes 8 KiB at a time, each stable: 20 MiB costs a minute under TCG.
SIZES_V2 = SIZES[:-1] + (5 * 1024 * 1024 + 3,)
SMALL_SIZES = (0, 1, 4097, 65537, 1048579)


@dataclasses.dataclass(frozen=True)
class Combo:
    kernel: str         # "debian" (stock cloud kernel, TCP only) or "nfsudp"
    vers: int
    proto: str
    mountproto: str     # mount.nfs asks MOUNT over UDP first

    @property
    def id(self):
        return f"{self.kernel}-v{self.vers}-{self.proto}"


COMBOS = [Combo("debian", 3, "tcp", "udp"), Combo("debian", 2, "tcp", "tcp"),
          Combo("nfsudp", 3, "udp", "udp"), Combo("nfsudp", 2, "udp", "udp")]


class Mounted:
    def __init__(self, combo, vm, testbed):
        self.combo = combo
        self.vm = vm
        self.testbed = testbed
        self.mnt = f"/mnt/{combo.id}"

    def mount(self):
        c, tb = self.combo, self.testbed
        self.vm.check(f"nfs_mount {c.vers} {c.proto} {c.mountproto} {tb.ms.ip} {tb.export} "
                      f"{self.mnt}", timeout=60)
        # The mount is really this version and transport, not a fallback.
        opts = self.vm.check(f"grep ' {self.mnt} ' /proc/mounts")
        assert f"vers={c.vers}" in opts and f"proto={c.proto}" in opts, opts

    def umount(self):
        self.vm.check(f"umount {self.mnt}", timeout=60)

    def run(self, script, want, timeout=300):
        got = self.vm.results(script, timeout)
        problems = expect.diff(got, want)
        assert not problems, (f"{self.combo.id}: the kernel client saw other values than "
                              f"expected:\n{problems}")
        return got


@pytest.fixture(scope="session", params=COMBOS, ids=lambda c: c.id)
def mounted(request, guests, testbed):
    combo = request.param
    m = Mounted(combo, guests.get(combo.kernel), testbed)
    m.mount()
    yield m
    m.umount()


def _dir(mounted, name):
    # Every combination mounts the same export: each works in a directory of its own.
    return f"{mounted.mnt}/{mounted.combo.id}/{name}"


def test_file_sizes(mounted, rand, testbed):
    d = _dir(mounted, "sizes")
    sizes = SIZES if mounted.combo.vers == 3 else SIZES_V2
    mounted.run(f"wl_sizes {d} {' '.join(map(str, sizes))}", expect.sizes(rand, sizes),
                timeout=600)
    # What the kernel wrote is what the server stores: read it back with the
    # project's own client from another host.
    n = 1048579
    path = f"{d[len(mounted.mnt):]}/f{n}"

    def read_back():
        c, root = nfsclient.connect(testbed.ms.ip, testbed.export, vers=3, transport="tcp")
        try:
            return c.read_all(c.walk(root, path))
        finally:
            c.rpc.close()
    data = testbed.clients[0].inside(read_back)
    assert hashlib.sha256(data).hexdigest() == expect.sha(rand[:n])


def test_deep_tree(mounted):
    mounted.run(f"wl_tree {_dir(mounted, 'tree')} 12", expect.tree(12))


def test_rename(mounted):
    got = mounted.vm.results(f"wl_rename {_dir(mounted, 'rename')}")
    parent = got.pop("ren.parent").split()
    assert parent[0] == parent[1], f"'..' of a moved directory is not its new parent: {parent}"
    assert not expect.diff(got, expect.rename()), expect.diff(got, expect.rename())


def test_links(mounted):
    mounted.run(f"wl_links {_dir(mounted, 'links')}", expect.links())


def test_chmod_chown_touch(mounted):
    before = int(time.time())
    got = mounted.vm.results(f"wl_attrs {_dir(mounted, 'attrs')}")
    after = time.time()
    touched = int(got.pop("attr.touch_now"))
    assert before - 1 <= touched <= after + 1, \
        f"touch without a time set mtime {touched}, not the server's clock [{before}, {after}]"
    assert not expect.diff(got, expect.attrs()), expect.diff(got, expect.attrs())


def test_atime_set_alone(mounted):
    mounted.run(f"wl_atime {_dir(mounted, 'atime')}", expect.atime())


def test_read_advances_atime_as_relatime_says(mounted, testbed):
    """Issue 16, case 3: a READ moves atime as a local read would under the
    export's relatime; reads within the window, and the metaserver's own
    bookkeeping, leave it."""
    if not os.statvfs(testbed.export).f_flag & os.ST_RELATIME:
        pytest.skip("the testbed's export is not on a relatime mount")
    d = _dir(mounted, "atime")
    mounted.vm.check(f"mkdir -p {d} && echo hello > {d}/f && sync")
    path = os.path.join(testbed.export, d[len(mounted.mnt) + 1:], "f")
    st = os.stat(path)
    old = st.st_mtime_ns - 3 * 24 * 3600 * 10**9   # before mtime: relatime advances it
    os.utime(path, ns=(old, st.st_mtime_ns))
    got = mounted.vm.results(
        f"dropcaches; R before $(stat -c %X {d}/f)\n"
        f"dropcaches; cat {d}/f >/dev/null; dropcaches; R read $(stat -c %X {d}/f)\n"
        f"cat {d}/f >/dev/null; dropcaches; R again $(stat -c %X {d}/f)")
    assert int(got["before"]) == old // 10**9
    assert int(got["read"]) > old // 10**9 + 24 * 3600
    assert int(got["read"]) == os.stat(path).st_atime_ns // 10**9
    assert got["again"] == got["read"]


def test_truncate_and_append(mounted, rand):
    mounted.run(f"wl_truncate {_dir(mounted, 'trunc')}", expect.truncate(rand))
    mounted.run(f"wl_append {_dir(mounted, 'append')}", expect.append(rand))


def test_sparse_past_4gib(mounted, rand):
    if mounted.combo.vers == 2:
        pytest.skip("NFSv2 offsets are 32-bit: no file past 2 GiB")
    mounted.run(f"wl_sparse {_dir(mounted, 'sparse')} 5", expect.sparse(rand, 5))


def test_thousand_entries_listed(mounted):
    mounted.run(f"wl_bigdir {_dir(mounted, 'bigdir')} 1000", expect.bigdir(1000), timeout=600)


def test_df(mounted):
    got = mounted.vm.results(f"wl_df {mounted.mnt}")
    total, used, avail = map(int, got["df"].split())
    assert total > 0 and avail > 0 and used >= 0 and used + avail <= total * 1.1, got


def test_remount_keeps_data(mounted, rand):
    d = _dir(mounted, "remount")
    sizes = " ".join(map(str, SMALL_SIZES))
    want = {**expect.sizes(rand, SMALL_SIZES), **expect.tree(4)}
    mounted.run(f"wl_sizes {d} {sizes}; wl_tree {d} 4", want)
    mounted.umount()
    mounted.mount()
    mounted.run(f"wl_sizes_verify {d} {sizes}; wl_tree_verify {d} 4", want)


def test_rm_rf(mounted):
    d = _dir(mounted, "rmrf")
    mounted.run(f"wl_tree {d} 6 >/dev/null; wl_bigdir {d} 50 >/dev/null; "
                f"wl_links {d}/l >/dev/null; wl_rmrf {d}", {"rmrf.gone": "gone"})


def test_a_mount_without_version_or_transport_options_gets_nfsv3(guests, testbed):
    """The stock kernel, told nothing but where the server is (nolock and addr=
    are what busybox's mount, run without a helper, must pass itself): it
    negotiates by itself, and ends up mounted with NFSv3 over TCP. (nfs-utils'
    mount.nfs, which tries NFSv4 first, is tests/e2e/test_plain_mount.py.)"""
    vm = guests.get("debian")
    ip, export = testbed.ms.ip, testbed.export
    vm.check(f"mkdir -p /mnt/plain && busybox mount -i -t nfs -o nolock,addr={ip} "
             f"{ip}:{export} /mnt/plain", timeout=60)
    try:
        opts = vm.check("grep ' /mnt/plain ' /proc/mounts")
        assert "vers=3" in opts and "proto=tcp" in opts, opts
        vm.check("ls /mnt/plain >/dev/null")
    finally:
        vm.check("umount /mnt/plain", timeout=60)
