"""nfspd --iods with its own unlinkd (the default, --unlinkd spawn): a REMOVE's
stripes leave every iod, a crashed unlinkd is restarted and loses nothing."""

import os
import signal
import subprocess

from common import nfs3
from common.nfs3 import NFSPROC3
from common.runtime import metarecord
from tools.dev.netns import wait_until


def identity(export, name):
    path = os.path.join(export, name)
    return os.stat(path).st_ino, metarecord.of_path(path).seed


def remove(client, root, name):
    res = client.call(NFSPROC3.REMOVE, nfs3.REMOVE3args(nfs3.diropargs3(root, name.encode())))
    assert res.disc == nfs3.nfsstat3.NFS3_OK


def stored(c):
    return {pair for pairs in c.datafiles().values() for pair in pairs}


def unlinkd_pids(c):
    """This cluster's unlinkd processes (matched on its own journal path)."""
    journal = os.path.join(os.path.abspath(c.nfspd.state), "purge")
    out = subprocess.run(["pgrep", "-f", f"unlinkd.cli --journal {journal}"],
                         capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def test_removed_files_leave_every_iod_and_kept_files_stay(cluster):
    c = cluster(n_iods=2, stripe_unit=65536)
    client, root = c.connect()
    ids = {}
    for i in range(12):
        fh = client.create(root, f"f{i}".encode())
        client.write_all(fh, bytes([i]) * 150_000)  # three stripes: both iods hold data
        ids[i] = identity(c.export, f"f{i}")
    assert set(ids.values()) <= stored(c)
    for i in range(0, 12, 2):
        remove(client, root, f"f{i}")
    gone = {ids[i] for i in range(0, 12, 2)}
    kept = {ids[i] for i in range(1, 12, 2)}
    wait_until(lambda: not (gone & stored(c)), 20, what="purged stripes gone from the iods")
    assert kept <= stored(c)
    assert client.read_all(client.lookup(root, b"f1")) == b"\x01" * 150_000
    assert "unlinkd started" in c.nfspd_log()


def test_a_killed_unlinkd_is_restarted_and_the_journal_loses_nothing(cluster):
    c = cluster(n_iods=2)
    client, root = c.connect()
    before = unlinkd_pids(c)
    assert before, "nfspd --iods should have spawned unlinkd"
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    ids = []
    for i in range(5):
        fh = client.create(root, f"g{i}".encode())
        client.write_all(fh, b"x" * 70_000)
        ids.append(identity(c.export, f"g{i}"))
        remove(client, root, f"g{i}")  # answered while unlinkd may be down
    wait_until(lambda: unlinkd_pids(c) - before, 20, what="unlinkd restarted by nfspd")
    wait_until(lambda: not (set(ids) & stored(c)), 30, what="pending purges drained")
