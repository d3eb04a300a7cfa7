"""The metadata benchmark's exports live on a journalled file system
(tools/dev/benchmarks/ground.py): made for the run, on a loop device, where
the results' own file system has no journal (this machine's disk); or, to
measure what sync costs apart from the disk's flush, on a zram device."""

import os
import types

from nfspd.fs.journal import directory_fsync_commits_all_at
from tools.dev.benchmarks import ground


def test_the_exports_ground_journals_and_goes_with_the_run(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    ctx = types.SimpleNamespace(work=str(work), keep=False, log=lambda message: None)
    made = not ground.journals(ctx.work)
    with ground.journalled(ctx, "g") as (base, what):
        assert ground.journals(base)
        assert (base != ctx.work) is made
        if made:  # an ext4 as mke2fs makes it: with a journal, not this disk's
            assert directory_fsync_commits_all_at(base) and "loop device" in what
        (open(os.path.join(base, "f"), "w")).close()
    assert os.listdir(work) == ([] if made else ["f"])


def _zram_devices():
    return sorted(d for d in os.listdir("/sys/block") if d.startswith("zram"))


def test_the_ram_ground_journals_on_a_new_zram_device_and_gives_it_back(tmp_path):
    # What sync costs a server apart from its disk's flush: a journalled
    # ext4 on a zram device, made for the run and removed after it.
    ctx = types.SimpleNamespace(work=str(tmp_path), keep=False, log=lambda message: None)
    before = _zram_devices()
    with ground.chosen(ctx, "ram", "g") as (base, what):
        assert ground.journals(base) and directory_fsync_commits_all_at(base)
        assert "zram" in what
        with open("/proc/mounts") as mounts:
            device = next(line.split()[0] for line in mounts if line.split()[1] == base)
        assert device.startswith("/dev/zram") and device[5:] not in before
        with open(os.path.join(base, "f"), "w") as f:
            f.write("x")
            f.flush()
            os.fdatasync(f.fileno())
    assert _zram_devices() == before
    assert os.listdir(tmp_path) == []
