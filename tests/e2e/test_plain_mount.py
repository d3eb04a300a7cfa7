"""`mount -t nfs SERVER:/export /mnt` with no options, as an administrator
types it on a Debian client: nfs-utils' mount.nfs (in the guest's initramfs,
tests/support/vm.py) tries NFSv4.2, 4.1, 4.0, then NFSv3, and the mount
lands on the newest version the testbed's nfspd speaks. What it lands on is
read from /proc/mounts, on both kernels. With iods, that plain mount gets
pNFS by default: the client reads and writes the iods' data servers."""

import re

import pytest

# nfspd speaks NFSv4.1 and 4.2 (issue 13): mount.nfs lands on one of them.
EXPECTED_PLAIN_MOUNT_VERS = ("4.1", "4.2")
MNT = "/mnt/plain-negotiated"


@pytest.mark.parametrize("kernel", ["debian", "nfsudp"])
def test_a_bare_mount_negotiates_the_newest_version_nfspd_speaks(guests, testbed, kernel):
    vm = guests.get(kernel)
    if vm.sh("command -v mount.nfs")[0] != 0:
        pytest.skip("the guest has no mount.nfs (install nfs-common: tools/install-deps --test)")
    vm.check(f"mkdir -p {MNT} && mount -t nfs {testbed.ms.ip}:{testbed.export} {MNT}", 120)
    try:
        line = vm.check(f"grep ' {MNT} ' /proc/mounts")
        vers = re.search(r"(?:^|,)vers=([\d.]+)", line.split()[3]).group(1)
        assert vers in EXPECTED_PLAIN_MOUNT_VERS, line
        # Over TCP (the UDP kernel could do UDP; mount.nfs prefers TCP), and
        # with locking on: no option turned it off, statd was started for it.
        assert ",proto=tcp," in line and "nolock" not in line, line
        vm.check(f"echo negotiated > {MNT}/plain-{kernel} && cat {MNT}/plain-{kernel}")
        if testbed.iods:
            # No option asked for it: the files layout driver is in use, and
            # writing a striped file fetched the data servers' addresses.
            vm.check(f"dd if=/dev/zero of={MNT}/striped-{kernel} bs=1M count=4 && sync", 120)
            stats = vm.check("cat /proc/self/mountstats").split(f" mounted on {MNT} ")[1]
            stats = stats.split("\ndevice ")[0]       # this mount's section alone
            assert "pnfs=LAYOUT_NFSV4_1_FILES" in stats, stats
            m = re.search(r"^\s*GETDEVICEINFO: (\d+) ", stats, re.MULTILINE)
            assert m and int(m.group(1)) >= 1, stats
    finally:
        vm.check(f"umount {MNT}", 60)
