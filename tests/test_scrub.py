"""`nfsp scrub` (tools/scrub.py): the export walk and the analysis on their own,
then the real command against real iods."""

import os
import sys

import pytest

from common.metafile import HEADER as META_HEADER
from common.metafile import Metafile
from common.runtime import metarecord
from nfspd.fs.types import CreateHow, SetAttr
from tools import scrub
from tools.dev import REPO
from tools.dev.unlinkd_cluster import ROOT, STRIPE, Cluster


def metafile(path, seed, size=0):
    """One of the form made before the record moved to its attribute."""
    with open(path, "wb") as f:
        f.write(Metafile(seed=seed, size=size).encode())
    return os.stat(path).st_ino, seed


def metafile_with_attribute(path, seed, size=0):
    """As nfspd makes them: the record in trusted.nfsp.meta, the length telling the size."""
    with open(path, "wb") as f:
        f.truncate(META_HEADER + size)
    os.setxattr(path, metarecord.XATTR, Metafile(seed=seed, size=size).encode())
    return os.stat(path).st_ino, seed


# --- the walk and the analysis --------------------------------------------------------


def test_walk_finds_every_metafile_once_without_following_symlinks(tmp_path):
    root = tmp_path / "export"
    (root / "a" / "b").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    f1 = metafile(root / "top", 11, 5)
    f2 = metafile(root / "a" / "b" / "deep", 22)
    f3 = metafile_with_attribute(root / "a" / "new", 44, 9)
    metafile_with_attribute(root / "copied", 55)
    os.removexattr(root / "copied", metarecord.XATTR)     # copied without its attribute
    os.link(root / "top", root / "a" / "hardlink")
    metafile(outside / "foreign", 33)
    os.symlink(outside, root / "a" / "link-to-dir")
    os.symlink(outside / "foreign", root / "link-to-file")
    (root / "a" / "junk").write_bytes(b"not a metafile")
    os.mkfifo(root / "fifo")
    walk = scrub.walk_exports([str(root)])
    assert set(walk.owned) == {f1, f2, f3} and not walk.incomplete
    assert walk.bad_inos == {os.stat(root / n).st_ino for n in ("a/junk", "copied")}
    assert walk.owned[f1].meta.size == 5 and walk.owned[f3].meta.size == 9
    assert sorted((os.path.basename(p), why.split(":")[0]) for p, why in walk.bad) == \
        [("copied", "not a metafile"), ("junk", "not a metafile")]


def test_walk_reports_an_unreadable_export(tmp_path):
    walk = scrub.walk_exports([str(tmp_path / "missing")])
    assert not walk.owned and "cannot read export" in walk.bad[0][1] and walk.incomplete


def owned(ino, seed, size, changed_ns=0):
    return scrub.Owned(f"/x/{ino}", Metafile(seed=seed, size=size), changed_ns)


def test_analysis_tells_leaks_from_data_in_flight_and_files_without_data():
    walk = scrub.Walk()
    for ino, seed, size in ((1, 10, 100), (2, 20, 100), (3, 30, 0), (4, 40, 7)):
        walk.owned[(ino, seed)] = owned(ino, seed, size)
    walk.owned[(5, 50)] = owned(5, 50, 9, changed_ns=2000)  # changed after the scrub began
    walk.bad_inos.add(7)  # a damaged metafile: its data may be (7, anything)
    listed = {"i0": {(1, 10), (9, 90), (2, 21), (7, 70)},   # (2, 21): an old seed of inode 2
              "i1": {(2, 20), (8, 80)}}
    found = scrub.analyse(walk, listed, pending={(8, 80)}, started_ns=1000)
    assert found.leaks == {"i0": [(2, 21), (9, 90)]}
    assert found.in_flight == 1
    # 3 is empty, 5 changed during the scrub: only 4 is a non-empty file with no data.
    assert [o.path for o in found.without_data] == ["/x/4"]


def test_an_iod_that_could_not_be_listed_makes_no_file_look_dataless():
    walk = scrub.Walk()
    walk.owned[(4, 40)] = owned(4, 40, 7)
    found = scrub.analyse(walk, {"i0": set(), "i1": scrub.IodError("i1: down")}, set(), 1000)
    assert found.unreachable == {"i1": "i1: down"} and found.without_data == []


# --- the command against real iods ------------------------------------------------------


@pytest.fixture
def cluster(ns, tmp_path):
    c = Cluster(ns, tmp_path / "c", 3)
    c.start_iods()
    yield c
    c.close()


def held(cluster):
    return set().union(*(iod.held() for iod in cluster.iods))


@pytest.mark.netns
def test_scrub_on_a_healthy_cluster_finds_nothing(cluster):
    made = cluster.create_with_data([b"a", b"b"], stripes=3)
    cluster.fs.mkdir(cluster.fs.root_fh, b"d", ROOT, SetAttr(mode=0o755))
    cluster.create(b"empty")
    r = cluster.scrub()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 metafiles, 0 unreadable; 3/3 iods listed, 6 datafiles;" in r.stdout
    assert "0 leaked datafiles, 0 purged; 0 non-empty files without data" in r.stdout
    assert held(cluster) == set(made.values())


@pytest.mark.netns
def test_scrub_reports_leaks_and_purge_removes_only_them(cluster):
    made = cluster.create_with_data([b"live"], stripes=3)
    ino, seed = made[b"live"]
    leaks = {(ino, seed + 1), (999999, 12345)}  # an old seed of a live inode; an unknown file
    cluster.write_stripes([(0, ino, seed + 1, 0), (2, 999999, 12345, STRIPE)])
    r = cluster.scrub()
    assert r.returncode == 1, r.stdout + r.stderr
    assert "iod 127.0.0.1:2050: 1 leaked datafiles" in r.stdout
    assert "iod 127.0.0.1:2052: 1 leaked datafiles" in r.stdout
    assert f"inode 999999 seed {12345:#018x}" in r.stdout
    assert held(cluster) == {made[b"live"]} | leaks  # reporting purges nothing
    r = cluster.scrub("--purge")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 leaked datafiles left, 2 purged;" in r.stdout
    assert held(cluster) == {made[b"live"]}
    assert cluster.scrub().returncode == 0


@pytest.mark.netns
def test_purges_still_in_the_journal_are_in_flight_not_leaks(cluster):
    made = cluster.create_with_data([b"gone", b"kept"], stripes=2)
    cluster.remove(b"gone")  # no unlinkd runs: the purge waits in the journal
    r = cluster.scrub("--purge")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 files awaiting purge (in flight); 0 leaked datafiles left" in r.stdout
    assert made[b"gone"] in held(cluster)  # scrub leaves that to unlinkd


@pytest.mark.netns
def test_a_non_empty_file_without_any_data_is_reported(cluster):
    cluster.create_with_data([b"fine"], stripes=1)
    fh = cluster.create(b"lost")
    cluster.fs.setattr(fh, ROOT, SetAttr(size=10))  # sized, never written
    r = cluster.scrub()
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 non-empty files have no data on any iod" in r.stdout
    assert "/lost (10 bytes)" in r.stdout


@pytest.mark.netns
def test_an_unreachable_iod_makes_the_scrub_incomplete_but_others_leaks_go(cluster):
    cluster.create_with_data([b"f"], stripes=1)
    cluster.write_stripes([(0, 424242, 1, 0)])
    cluster.iods[1].stop()
    r = cluster.scrub("--purge")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "iod 127.0.0.1:2051: NOT LISTED" in r.stdout
    assert "2/3 iods listed" in r.stdout and "1 purged" in r.stdout
    assert (424242, 1) not in cluster.iods[0].held()


@pytest.mark.netns
def test_an_unreadable_directory_stops_any_purge(cluster):
    """A directory scrub cannot read (here: root without its override
    capabilities, and a directory private to another user): the data of the
    files in there would look leaked, so nothing may be purged."""
    d = cluster.fs.mkdir(cluster.fs.root_fh, b"private", ROOT, SetAttr(mode=0o700))[0]
    cluster.setup_fs.create(d, b"inside", ROOT, CreateHow.UNCHECKED, SetAttr(mode=0o644))
    inside = cluster.identity(b"private/inside")
    cluster.write_stripes([(0, inside[0], inside[1], 0), (1, 424242, 1, 0)])
    os.chown(os.path.join(cluster.export, "private"), 65534, 65534)
    r = cluster.ns.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
                        sys.executable, "-m", "tools.scrub", "--iods", cluster.iods_conf,
                        "--key", cluster.key_path, "--state-dir", cluster.state, "--purge",
                        cluster.export], env=dict(os.environ, PYTHONPATH=REPO))
    assert r.returncode == 3, r.stdout + r.stderr
    assert "private: cannot read directory" in r.stdout
    assert "not purging: part of the exports could not be read" in r.stdout
    assert inside in held(cluster) and (424242, 1) in held(cluster)


@pytest.mark.netns
def test_scrub_walks_every_export_of_the_exports_file(cluster, tmp_path):
    other = tmp_path / "other-export"
    other.mkdir()
    ident = metafile(other / "x", 777, 1)
    cluster.write_stripes([(1, ident[0], ident[1], 0)])
    exports = tmp_path / "exports"
    exports.write_text(f"{cluster.export} *(rw)\n{other} *(ro)\n")
    argv = [sys.executable, "-m", "tools.scrub", "--iods", cluster.iods_conf, "--key",
            cluster.key_path, "--state-dir", cluster.state]
    env = dict(os.environ, PYTHONPATH=REPO)
    alone = cluster.ns.run(argv + [cluster.export], env=env)
    assert alone.returncode == 1 and "1 leaked datafiles" in alone.stdout
    both = cluster.ns.run(argv + ["--exports", str(exports)], env=env)
    assert both.returncode == 0, both.stdout + both.stderr
    assert "2 export(s), 1 metafiles," in both.stdout
