"""unlinkd and iod store identity (issue 16, case 4): an iod that comes back on
another data store (a wiped or replaced disk, a mistyped data directory) must
not have its PURGEs counted as done, for the stripes on its real store would
stay. unlinkd applies nfspd's rule to nfspd's file (STATE_DIR/iod-stores.json):
purges for such an iod are held until its own store is back, or until the
admin accepts the new one (`nfsp accept-iod-store`, which edits that file).

Real iod processes and a real unlinkd in a private network namespace."""

import os

import pytest

from common.iodproto import Op
from common.runtime import iodstores, purgejournal
from tools.dev.netns import wait_until
from tools.dev.unlinkd_cluster import Cluster

pytestmark = pytest.mark.netns


@pytest.fixture
def cluster(ns, tmp_path):
    c = Cluster(ns, tmp_path / "c", 2)
    yield c
    c.close()


def remember_stores(c):
    """What nfspd would have written after its first PONG from each iod."""
    ids = {iod.address: c.call(iod, Op.PING).store for iod in c.iods}
    assert all(len(s) == 16 for s in ids.values())
    iodstores.write(os.path.join(c.state, iodstores.FILE_NAME), ids)
    return ids


def backlog(c):
    return purgejournal.backlog(c.journal_dir, [iod.address for iod in c.iods])


def restart_on(iod, data_dir):
    iod.stop()
    iod.data_dir = data_dir
    iod.start()


def hold_purges_of_a_wiped_iod(c):
    """Files on both iods are removed while iod 1 serves an empty new store:
    iod 0 acknowledges them all, iod 1's stay pending, and unlinkd says why."""
    c.start_iods()
    ids = remember_stores(c)
    c.start_unlinkd()
    made = c.create_with_data([b"f%d" % i for i in range(20)], stripes=2)
    real = c.iods[1].data_dir
    restart_on(c.iods[1], real + ".wiped")
    assert c.call(c.iods[1], Op.PING).store != ids[c.iods[1].address]
    for name in made:
        c.remove(name)
    first, second = (iod.address for iod in c.iods)
    wait_until(lambda: backlog(c)[first] == 0 and (
        backlog(c)[second] == 0 or "where it had store" in c.unlinkd_log_text()), 60,
        what="iod 0 acknowledging every purge, and iod 1 refused or acknowledging too")
    assert backlog(c)[second] == len(made)
    gone = set(made.values())
    assert not c.iods[0].held() & gone
    return real, gone


def test_purges_wait_for_an_iod_back_on_its_own_store(cluster):
    real, gone = hold_purges_of_a_wiped_iod(cluster)
    restart_on(cluster.iods[1], real)
    cluster.wait_drained(timeout=60)
    assert not cluster.iods[1].held() & gone
    assert "serves its own data store again" in cluster.unlinkd_log_text()


def test_accept_iod_store_releases_the_held_purges(cluster):
    hold_purges_of_a_wiped_iod(cluster)
    iod = cluster.iods[1]
    iodstores.forget(os.path.join(cluster.state, iodstores.FILE_NAME), iod.address)
    cluster.wait_drained(timeout=60)
