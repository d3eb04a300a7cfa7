"""unlinkd end to end: real iod processes, a real unlinkd process, the real
MetaFS with the real purge sink; REMOVE and RENAME in bursts, with crashes of
unlinkd, an iod away for a while, a metaserver restart. Afterwards the iods'
data directories (read from disk) hold exactly the data of live files, and
scrub agrees."""

import os
import pathlib
import shutil
import signal

import pytest

from common.runtime import purgejournal
from tools.dev import loopfs
from tools.dev.unlinkd_cluster import ROOT, Cluster

pytestmark = pytest.mark.netns


@pytest.fixture
def cluster_factory(ns, tmp_path):
    made = []

    def make(n_iods, **kw):
        c = Cluster(ns, tmp_path / f"c{len(made)}", n_iods, **kw)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


def live_and_gone(cluster, made, removed):
    gone = {made[n] for n in removed}
    live = {made[n] for n in made if n not in removed}
    return live, gone


def assert_only_live_data(cluster, gone):
    for iod in cluster.iods:
        held = iod.held()
        assert not held & gone, f"iod {iod.address} still holds {len(held & gone)} removed files"


def assert_scrub_clean(cluster):
    r = cluster.scrub()
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 leaked datafiles," in r.stdout


@pytest.mark.slow
def test_a_burst_of_10000_removes_with_4_iods_leaves_no_datafile(cluster_factory):
    c = cluster_factory(4, batch_max=1024, batch_delay=0.2)
    c.start_iods()
    c.start_unlinkd()
    names = [b"f%05d" % i for i in range(10000)]
    # Every tenth file has a stripe on every iod; the others one stripe each.
    made = c.create_with_data(names[::10], stripes=4)
    made.update(c.create_with_data([n for i, n in enumerate(names) if i % 10], stripes=1))
    assert sum(len(iod.held()) for iod in c.iods) == 1000 * 4 + 9000
    for name in names:
        c.remove(name)
    c.wait_drained(timeout=300)
    for iod in c.iods:
        assert iod.held() == set(), iod.address
    sizes = c.batch_sizes()
    # Nothing failed, so every iod got every purge exactly once, in batches
    # no larger than --batch-max.
    assert sum(sizes) == 4 * 10000 and max(sizes) <= 1024
    print(f"\nbatch sizes: {len(sizes)} batches, min {min(sizes)} max {max(sizes)}, "
          f"mean {sum(sizes) / len(sizes):.0f}")
    assert_scrub_clean(c)


def test_removes_complete_while_every_iod_is_down(cluster_factory):
    """REMOVE never waits for an iod: it returns with all of them stopped, and
    the data goes once they are back."""
    c = cluster_factory(3)
    c.start_iods()
    c.start_unlinkd()
    made = c.create_with_data([b"f%d" % i for i in range(60)], stripes=3)
    c.stop_iods()
    for name in made:
        c.remove(name)
    assert all(iod.held() for iod in c.iods)  # nothing could be purged yet
    c.start_iods()
    c.wait_drained()
    assert_only_live_data(c, set(made.values()))
    assert_scrub_clean(c)


def test_kill_9_of_unlinkd_in_a_burst_loses_no_purge(cluster_factory):
    c = cluster_factory(2, batch_max=64)
    c.start_iods()
    c.start_unlinkd()
    names = [b"f%d" % i for i in range(600)]
    made = c.create_with_data(names, stripes=2)
    for name in names[:300]:
        c.remove(name)
    c.unlinkd.send_signal(signal.SIGKILL)
    c.unlinkd.wait(timeout=10)
    c.unlinkd = None
    for name in names[300:]:
        c.remove(name)
    assert any(iod.held() for iod in c.iods)
    c.start_unlinkd()
    c.wait_drained()
    assert_only_live_data(c, set(made.values()))
    assert_scrub_clean(c)


def test_an_iod_away_during_a_burst_catches_up_and_holds_back_no_other(cluster_factory):
    c = cluster_factory(3, batch_max=50)
    c.start_iods()
    c.start_unlinkd()
    names = [b"f%d" % i for i in range(400)]
    made = c.create_with_data(names, stripes=3)
    away = c.iods[1]
    for name in names[:150]:
        c.remove(name)
    away.stop()
    for name in names[150:]:
        c.remove(name)
    others = [iod for iod in c.iods if iod is not away]

    def others_done():
        from common.runtime import purgejournal
        backlog = purgejournal.backlog(c.journal_dir, [iod.address for iod in c.iods])
        return all(backlog[iod.address] == 0 for iod in others)
    from tools.dev.netns import wait_until
    wait_until(others_done, 120, what="the iods that stayed up acknowledged everything")
    gone = set(made.values())
    for iod in others:
        assert not iod.held() & gone
    assert away.held() & gone  # it was away: its datafiles wait for it
    away.start()
    c.wait_drained()
    assert_only_live_data(c, gone)
    assert "reachable again" in c.unlinkd_log_text()
    assert_scrub_clean(c)


def test_hard_links_and_rename_over_purge_exactly_what_they_should(cluster_factory):
    c = cluster_factory(2)
    c.start_iods()
    c.start_unlinkd()
    made = c.create_with_data([b"a", b"b", b"c", b"d"], stripes=2)
    fs, root = c.fs, c.fs.root_fh
    fs.link(fs.lookup(root, b"a", ROOT)[0], root, b"a2", ROOT)
    c.remove(b"a")                                  # a2 keeps a's data
    fs.rename(root, b"c", root, b"b", ROOT)         # b's data goes
    fs.rename(root, b"d", root, b"a2", ROOT)        # a2 was a's last link: a's data goes
    fs.link(fs.lookup(root, b"b", ROOT)[0], root, b"e", ROOT)
    fs.rename(root, b"b", root, b"e", ROOT)         # onto another link of itself: nothing
    c.wait_drained()
    held = set().union(*(iod.held() for iod in c.iods))
    assert held == {made[b"c"], made[b"d"]}
    assert c.identity(b"e") == made[b"c"] and c.identity(b"a2") == made[b"d"]
    assert_scrub_clean(c)


def test_pending_purges_survive_a_metaserver_restart(cluster_factory):
    c = cluster_factory(2)
    c.start_iods()
    made = c.create_with_data([b"f%d" % i for i in range(40)], stripes=2)
    for i in range(20):
        c.remove(b"f%d" % i)
    c.stop_metaserver()        # no unlinkd ran: the purges exist only in the journal
    c.start_metaserver()
    for i in range(20, 40):
        c.remove(b"f%d" % i)
    c.start_unlinkd()
    c.wait_drained()
    assert_only_live_data(c, set(made.values()))
    assert_scrub_clean(c)


def test_unlinkd_started_before_the_journal_exists(cluster_factory):
    c = cluster_factory(2)
    c.start_iods()
    made = c.create_with_data([b"f%d" % i for i in range(30)], stripes=2)
    c.stop_metaserver()
    shutil.rmtree(c.journal_dir)       # as on a new installation: unlinkd comes up first
    c.start_unlinkd()
    c.start_metaserver()
    for name in made:
        c.remove(name)
    c.wait_drained()
    assert_only_live_data(c, set(made.values()))
    assert sum(c.batch_sizes()) == 2 * 30


@pytest.fixture
def journalled_ext4(tmp_path):
    """An ext4 as mke2fs makes it (with its journal), on a loop device."""
    with loopfs.ext4(str(tmp_path), size="256M") as mnt:
        yield pathlib.Path(mnt)


def test_removals_committed_with_their_purge_records_leave_exactly_the_live_data(
        journalled_ext4, ns):  # (mounted first: the namespace's mount table is a copy)
    # The journal on the export's ext4 grows by appending, and a flush makes
    # a batch's records and removals durable in one commit (nfspd/fs/commit.py);
    # the real unlinkd reads such segments, syncing them before it purges.
    c = Cluster(ns, journalled_ext4 / "c", 2, group_commit=True)
    try:
        assert c.queue.appended_on() == os.stat(c.export).st_dev
        c.start_iods()
        c.start_unlinkd()
        names = [b"f%03d" % i for i in range(120)]
        made = c.create_with_data(names, stripes=2)
        for start in range(0, 90, 30):  # three batches, a flush each
            c.remove_batch(names[start:start + 30])
        c.wait_drained()
        gone = {made[n] for n in names[:90]}
        assert_only_live_data(c, gone)
        held = set().union(*(iod.held() for iod in c.iods))
        assert held == {made[n] for n in names[90:]}
        segment = purgejournal.list_segments(c.journal_dir)[-1][1]
        assert os.path.getsize(segment) == 90 * purgejournal.RECORD.size  # appended
        assert_scrub_clean(c)
    finally:
        c.close()
