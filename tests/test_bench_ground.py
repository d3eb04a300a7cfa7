"""The metadata benchmark's exports live on a journalled file system
(tools/dev/benchmarks/ground.py): made for the run, on a loop device, where
the results' own file system has no journal (this machine's disk)."""

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
