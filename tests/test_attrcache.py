"""READDIRPLUS lookups reused while nothing changes (nfspd/fs/attrcache.py).

The specification: a listing read through the cache is, byte for byte, the
listing a MetaFS without one reads at the same moment, whatever was changed
through MetaFS before it; and a listing read again with nothing changed costs
no stat per entry."""

import inspect
import os

import pytest
import trio
import trio.testing

from nfspd.datapath import DataPath
from nfspd.fs import attrcache, metafiles, metafs
from nfspd.fs.attrcache import AttrCache, Changes, Pages, SharedChanges
from nfspd.fs.metafs import MetaFS
from nfspd.fs.types import Caller, CreateHow, FileType, SetAttr

ROOT = Caller(0, 0)
EXPORT_ID, KEY = 0x5EED_A77C, b"k" * 32


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class GatedDataPath(DataPath):
    """Data that goes nowhere, a WRITE held until ``gate`` is set."""

    def __init__(self):
        self.gate = None
        self.writing = None

    @property
    def verifier(self):
        return b"verifier"

    async def read(self, meta, ino, offset, count):
        return bytes(count)

    async def write(self, meta, ino, offset, data, stable):
        if self.gate is not None:
            self.writing.set()
            await self.gate.wait()

    async def commit(self, meta, ino):
        pass

    async def truncate(self, meta, ino, size):
        pass

    def purge(self, ino, seed):
        pass


@pytest.fixture
def export(tmp_path):
    root = tmp_path / "export"
    root.mkdir()
    return root


@pytest.fixture
def pair(export):
    """(MetaFS counting its changes, with its cache's clock; a MetaFS without
    a cache over the same export, the same handles and cookies)."""
    data = GatedDataPath()
    cached = MetaFS(str(export), EXPORT_ID, KEY, data, changes=Changes())
    clock = Clock()
    cached._attrcache._clock = clock
    fresh = MetaFS(str(export), EXPORT_ID, KEY, data)
    yield cached, fresh, clock
    cached.close()
    fresh.close()


def listing(fs, encoded=True, page=3, page_key=None, caller=ROOT, dir_fh=None):
    """A whole listing of a directory (the export's root), page by page."""
    out, cookie, verf = [], 0, None
    while True:
        rows, eof, verf, _ = fs.readdirplus(dir_fh or fs.root_fh, cookie, verf, caller, page,
                                            encoded=encoded, page_key=page_key)
        if encoded:
            out += [(e.name, e.cookie, entry) for e, entry in rows]
        else:
            out += [(e.name, e.cookie, fh, None if a is None else {s: getattr(a, s) for s in a.__slots__})
                    for e, fh, a in rows]
        if eof:
            return out
        cookie = rows[-1][0].cookie


def same_as_fresh(cached, fresh):
    # fresh first: its own first read of the directory may move the
    # directory's atime ("." and ".."), which cached could not know of.
    listing(fresh)
    for encoded, page_key in ((True, None), (True, "pages"), (False, None)):
        assert listing(cached, encoded, page_key=page_key) == listing(fresh, encoded), page_key


def populated(fs):
    d = fs.root_fh
    fhs = {}
    for name in (b"a", b"b", b"c", b"d", b"e"):
        fhs[name], _, _ = fs.create(d, name, ROOT, CreateHow.GUARDED, SetAttr(mode=0o644))
    fhs[b"sub"], _, _ = fs.mkdir(d, b"sub", ROOT, SetAttr(mode=0o755))
    fhs[b"link"], _, _ = fs.symlink(d, b"link", ROOT, b"a", SetAttr())
    return fhs


def count_stats(monkeypatch):
    calls = []
    real = os.stat

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)
    monkeypatch.setattr(os, "stat", counting)
    return calls


# --- which MetaFS methods change something ------------------------------------------


def test_every_public_method_of_metafs_is_counted_as_a_change_or_listed_as_none(export):
    fs = MetaFS(str(export), EXPORT_ID, KEY, GatedDataPath())
    try:
        public = {name for name in dir(fs) if not name.startswith("_")
                  and not isinstance(inspect.getattr_static(MetaFS, name, None), property)
                  and callable(getattr(fs, name))}
    finally:
        fs.close()
    assert not set(metafs.CHANGING) & set(metafs.UNCHANGING)
    assert public == set(metafs.CHANGING) | set(metafs.UNCHANGING)


def test_a_change_counts_when_it_returns_or_fails():
    changes = Changes()

    def change(fail):
        assert changes.count == 0  # counted after, not before
        if fail:
            raise OSError("no")
        return "done"
    counted = changes.counting(change)
    assert counted(False) == "done" and changes.count == 1
    changes.count = 0
    with pytest.raises(OSError):
        counted(True)
    assert changes.count == 1 and changes.busy == 0


def test_a_change_that_waits_is_busy_from_its_start_to_its_end_even_cancelled():
    changes = Changes()
    seen = []

    async def change(event):
        seen.append(changes.busy)
        await event.wait()

    async def main():
        counted = changes.counting(change)
        event = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(counted, event)
            await trio.testing.wait_all_tasks_blocked()
            assert changes.busy == 1
            event.set()
        assert changes.busy == 0 and changes.count == 2
        with trio.move_on_after(0):
            await counted(trio.Event())
        assert changes.busy == 0 and changes.count == 4
    trio.run(main)
    assert seen == [1, 1]


# --- the cache itself -----------------------------------------------------------------


def test_a_directory_is_kept_until_a_change_while_one_is_under_way_and_for_ttl_at_most():
    changes, clock = Changes(), Clock()
    cache = AttrCache(changes, ttl=1.0, clock=clock)
    names = cache.directory(7)
    names[b"x"] = "lookup"
    assert cache.directory(7) is names
    assert cache.directory(8) is not names and cache.directory(8) == {}

    changes.made()
    assert cache.directory(7) == {}

    cache.directory(7)[b"x"] = "lookup"
    changes.begin()
    assert cache.directory(7) is None       # nothing read, nothing kept
    changes.end()
    assert cache.directory(7) == {}

    cache.directory(7)[b"x"] = "lookup"
    clock.now += 0.999
    assert cache.directory(7) == {b"x": "lookup"}
    clock.now += 0.001
    assert cache.directory(7) == {}


def test_past_max_entries_the_next_page_starts_over():
    cache = AttrCache(Changes(), max_entries=4, clock=Clock())
    cache.directory(1)[b"a"] = 1
    cache.added(3)
    assert cache.directory(1) == {b"a": 1}
    cache.added(1)
    assert cache.directory(1) == {}


def test_pages_kept_count_as_their_entries_and_go_with_the_names():
    changes = Changes()
    cache = AttrCache(changes, max_entries=10, clock=Clock())
    pages = Pages(cache.directory(1), cache)
    pages.put("first", b"reply", 6)
    assert Pages(cache.directory(1), cache).get("first") == b"reply"
    Pages(cache.directory(1), cache).put("second", b"reply 2", 4)
    assert Pages(cache.directory(1), cache).get("first") is None   # 10 entries: over
    pages = Pages(cache.directory(1), cache)
    pages.put("third", b"reply 3", 1)
    changes.made()
    assert Pages(cache.directory(1), cache).get("third") is None


# --- through MetaFS -----------------------------------------------------------------


def test_a_listing_read_again_with_nothing_changed_stats_no_entry(pair, monkeypatch):
    cached, fresh, _ = pair
    populated(cached)
    first = listing(cached)
    stats = count_stats(monkeypatch)
    assert listing(cached) == first
    assert stats == []
    assert listing(cached, encoded=False) == listing(fresh, encoded=False)


def test_the_same_page_asked_again_with_nothing_changed_is_built_once(pair, monkeypatch):
    cached, _, _ = pair
    populated(cached)
    d = cached.root_fh
    cached.readdir(d, 0, None, ROOT, 4)   # its atime moved on this first read: a change
    first = cached.readdirplus(d, 0, None, ROOT, 4, encoded=True, page_key=1)
    again = cached.readdirplus(d, 0, None, ROOT, 4, encoded=True, page_key=1)
    assert again[0] is first[0] and again[1:3] == first[1:3]
    # Another page size, or another key (another entry_size): built anew.
    assert cached.readdirplus(d, 0, None, ROOT, 5, encoded=True, page_key=1)[0] is not first[0]
    assert cached.readdirplus(d, 0, None, ROOT, 4, encoded=True, page_key=2)[0] is not first[0]
    cached.setattr(cached.lookup(d, b"a", ROOT)[0], ROOT, SetAttr(mode=0o600))
    assert cached.readdirplus(d, 0, None, ROOT, 4, encoded=True, page_key=1)[0] is not first[0]


def test_the_owner_of_a_private_directory_has_its_listings_lookups_kept(pair, monkeypatch):
    # She may search it by her owner bits alone (0700): her lookups are the
    # ones root would make, kept and reused like root's.
    cached, fresh, _ = pair
    fhs = populated(cached)
    sub = fhs[b"sub"]
    for name in (b"x", b"y"):
        cached.create(sub, name, ROOT, CreateHow.GUARDED, SetAttr(mode=0o644))
    user = Caller(1000, 1000)
    cached.setattr(sub, ROOT, SetAttr(uid=1000, gid=1000, mode=0o700))
    first = listing(cached, page=10, caller=user, dir_fh=sub)
    assert first == listing(fresh, page=10, caller=user, dir_fh=sub)
    stats = count_stats(monkeypatch)
    assert listing(cached, page=10, caller=user, dir_fh=sub) == first
    assert [name for name in stats if name != ".."] == []  # (".." is looked up each time)
    # And a page asked again is built once for her too.
    page = cached.readdirplus(sub, 0, None, user, 10, encoded=True, page_key=1)
    assert cached.readdirplus(sub, 0, None, user, 10, encoded=True, page_key=1)[0] is page[0]


def test_a_caller_who_may_not_search_a_directory_never_gets_a_page_made_for_another(pair):
    cached, fresh, _ = pair
    fhs = populated(cached)
    sub = fhs[b"sub"]
    for name in (b"x", b"y"):
        cached.create(sub, name, ROOT, CreateHow.GUARDED, SetAttr(mode=0o644))
    cached.setattr(sub, ROOT, SetAttr(mode=0o744))     # others read it, may not search it
    user = Caller(1000, 1000)
    for caller in (ROOT, user, ROOT, user):
        got = listing(cached, page=10, page_key=1, caller=caller, dir_fh=sub)
        assert got == listing(fresh, page=10, caller=caller, dir_fh=sub)
        with_attrs = {name for name, _, entry in got if len(entry) > 40}
        assert with_attrs == ({b".", b"..", b"x", b"y"} if caller is ROOT else set())


def test_a_change_behind_nfspds_back_shows_within_the_ttl(pair, export):
    cached, fresh, clock = pair
    populated(cached)
    before = listing(cached)
    os.chmod(export / "b", 0o600)           # not through MetaFS
    assert listing(cached) == before        # (what ganesha does for 60 s)
    clock.now += attrcache.TTL
    assert listing(cached) == listing(fresh) != before


def test_a_name_added_behind_nfspds_back_shows_at_once(pair, export):
    cached, fresh, _ = pair
    populated(cached)
    listing(cached)
    os.rename(export / "c", export / "c2")
    os.rename(export / "b", export / "c")   # a name now of another object
    assert listing(cached) == listing(fresh)


def _changes(fs, fhs):
    """(the metafs.CHANGING methods it calls, a change made with them): every
    such method, some several ways; the async ones through trio."""
    d = fs.root_fh
    yield ("setattr",), lambda: fs.setattr(fhs[b"a"], ROOT, SetAttr(mode=0o600, uid=5, gid=6))
    yield ("setattr",), lambda: fs.setattr(fhs[b"a"], ROOT, SetAttr(size=12345))
    yield ("setattr",), lambda: fs.setattr(fhs[b"sub"], ROOT, SetAttr(atime=7 * 10**9 + 8,
                                                                     mtime=9 * 10**9 + 10))
    yield ("create",), lambda: fs.create(d, b"f", ROOT, CreateHow.UNCHECKED, SetAttr())
    yield ("create_or_open",), lambda: fs.create_or_open(d, b"a", ROOT, CreateHow.UNCHECKED,
                                                         SetAttr(size=0))
    yield ("mkdir",), lambda: fs.mkdir(d, b"sub2", ROOT, SetAttr())
    yield ("symlink",), lambda: fs.symlink(d, b"link2", ROOT, b"b", SetAttr())
    yield ("mknod",), lambda: fs.mknod(d, b"fifo", ROOT, FileType.FIFO, SetAttr(mode=0o600))
    yield ("link",), lambda: fs.link(fhs[b"b"], fhs[b"sub"], b"b-too", ROOT)   # b's nlink
    yield ("remove",), lambda: fs.remove(fhs[b"sub"], b"b-too", ROOT)          # b's nlink
    yield ("rename",), lambda: fs.rename(d, b"c", d, b"d", ROOT)
    yield ("rename",), lambda: fs.rename(d, b"e", fhs[b"sub"], b"e", ROOT)   # sub's nlink
    yield ("rmdir",), lambda: fs.rmdir(d, b"sub2", ROOT)

    def write_landed():
        fs.write_landed(fs.write_plan_now(fhs[b"b"], ROOT, 1000, 10, 0))
    yield ("write_plan_now", "write_landed"), write_landed

    def write_failed():
        fs.write_failed(fs.write_plan_now(fhs[b"b"], ROOT, 5000, 10, 0))  # back to 1010 bytes
    yield ("write_plan_now", "write_failed"), write_failed

    async def write_plan_data():
        plan = await fs.write_plan(fhs[b"b"], ROOT, 6000, 10, 2)
        await fs.write_data(plan, b"x" * 10)
    yield ("write_plan", "write_data"), lambda: trio.run(write_plan_data)
    yield ("write",), lambda: trio.run(fs.write, fhs[b"b"], ROOT, 9000, b"y" * 3, 0)
    yield ("commit",), lambda: trio.run(fs.commit, fhs[b"b"], ROOT, 0, 0)
    yield ("settled",), lambda: trio.run(fs.settled, fhs[b"b"])
    yield ("read_plan",), lambda: trio.run(fs.read_plan, fhs[b"b"], ROOT, 0, 10)
    yield ("read",), lambda: trio.run(fs.read, fhs[b"b"], ROOT, 0, 10)
    yield ("readlink",), lambda: fs.readlink(fhs[b"link"], ROOT)       # its atime
    yield ("remove",), lambda: fs.remove(d, b"b", ROOT)


def test_after_every_kind_of_change_the_listing_is_a_fresh_ones(pair):
    cached, fresh, _ = pair
    changes = cached._attrcache._changes
    fhs = populated(cached)
    called = set()
    for methods, change in _changes(cached, fhs):
        same_as_fresh(cached, fresh)        # (and fills the cache)
        before = changes.count
        change()
        assert changes.count > before and changes.busy == 0, methods
        same_as_fresh(cached, fresh)
        called.update(methods)
    assert called == set(metafs.CHANGING)


def test_a_reads_atime_shows_in_the_next_listing(pair, export):
    cached, fresh, _ = pair
    fhs = populated(cached)
    cached.setattr(fhs[b"a"], ROOT, SetAttr(atime=10**18, mtime=2 * 10**18))
    before = listing(cached)
    cached.read_plan_now(fhs[b"a"], ROOT, 0, 1)   # relatime too: atime <= mtime moves it
    assert os.stat(export / "a").st_atime_ns != 10**18
    assert listing(cached) == listing(fresh) != before


def test_reading_a_directory_for_its_own_listing_shows_in_its_parents(pair, export):
    cached, fresh, _ = pair
    fhs = populated(cached)
    sub = fhs[b"sub"]
    cached.create(sub, b"new", ROOT, CreateHow.GUARDED, SetAttr())
    os.utime(export / "sub", ns=(10**18, 2 * 10**18))   # relatime: the next read moves it
    before = listing(cached)
    cached.readdir(sub, 0, None, ROOT, 10)
    assert os.stat(export / "sub").st_atime_ns != 10**18
    assert listing(cached) == listing(fresh) != before


def test_while_a_write_waits_for_its_data_a_listing_is_fresh_and_kept_by_nobody(pair, monkeypatch):
    cached, fresh, _ = pair
    fhs = populated(cached)
    data = cached._io.datapath
    data.gate, data.writing = trio.Event(), trio.Event()

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cached.write, fhs[b"c"], ROOT, 0, b"z" * 100, 2)
            await data.writing.wait()
            # The size grew before the data moved: seen, and not kept.
            assert cached._attrcache.directory(0) is None
            same_as_fresh(cached, fresh)
            data.gate.set()
        same_as_fresh(cached, fresh)
        stats = count_stats(monkeypatch)
        listing(cached)
        assert stats == []
    listing(cached)
    trio.run(main)


def test_processes_sharing_changes_each_see_the_others_counts():
    fd = SharedChanges.memory(3)
    try:
        nfspd, worker, other = (SharedChanges(fd, i, 3) for i in range(3))
        worker.made()
        other.counting(lambda: None)()
        assert nfspd.count == worker.count == other.count == 2
        nfspd.begin()
        assert worker.busy == 1 and worker.count == 3
        nfspd.end()
        assert (worker.busy, worker.count) == (0, 4)
        # A worker started again in a slot whose process died mid-change.
        other.begin()
        assert nfspd.busy == 1
        SharedChanges(fd, 2, 3)
        assert nfspd.busy == 0 and nfspd.count == 5
    finally:
        os.close(fd)


@pytest.fixture
def with_worker(export):
    """(nfspd's MetaFS, a worker's) over one export, counting their changes
    in shared memory as the two processes do."""
    fd = SharedChanges.memory(2)
    data = GatedDataPath()
    pair = [MetaFS(str(export), EXPORT_ID, KEY, data, changes=SharedChanges(fd, slot, 2))
            for slot in (0, 1)]
    yield pair
    for fs in pair:
        fs.close()
    os.close(fd)


@pytest.mark.parametrize("ours", ("remove", "create", "rename"))
def test_a_change_another_process_makes_during_ours_shows_in_our_listings(
        export, with_worker, monkeypatch, ours):
    # nfspd keeps a directory's listing in step with its own changes instead
    # of reading it again; a worker's change to the same directory, made
    # between nfspd's look at the directory and its stat after its own
    # change, must not be absorbed (a name missing, or one pointing at
    # nothing, until the next change).
    nfspd, worker = with_worker
    d = nfspd.root_fh
    for name in (b"mine", b"theirs"):
        nfspd.create(d, name, ROOT, CreateHow.GUARDED, SetAttr(mode=0o644))
    listing(nfspd)  # kept from now on

    def names():
        return sorted(name for name, _, _ in listing(nfspd))
    where, what = {"remove": (os, "unlink"), "create": (metafiles, "link_fd"),
                   "rename": (os, "rename")}[ours]
    real = getattr(where, what)

    def then_the_worker(*args, **kwargs):
        real(*args, **kwargs)
        monkeypatch.undo()
        worker.remove(worker.root_fh, b"theirs", ROOT)
        worker.create(worker.root_fh, b"new", ROOT, CreateHow.GUARDED, SetAttr())
    monkeypatch.setattr(where, what, then_the_worker)
    if ours == "remove":
        nfspd.remove(d, b"mine", ROOT)
    elif ours == "create":
        nfspd.create(d, b"made", ROOT, CreateHow.GUARDED, SetAttr())
    else:
        nfspd.rename(d, b"mine", d, b"moved", ROOT)
    assert names() == sorted([b".", b"..", b"new"] + {"remove": [], "create": [b"made", b"mine"],
                                                      "rename": [b"moved"]}[ours])
    assert names() == sorted([b".", b".."] + [os.fsencode(n) for n in os.listdir(export)])


def test_with_workers_a_change_nobody_else_overlaps_keeps_the_listing_in_step(with_worker,
                                                                             monkeypatch):
    # (What the check above must not cost: a listing read again after each
    # change, however many changes the workers made before.)
    nfspd, worker = with_worker
    d = nfspd.root_fh
    worker.create(worker.root_fh, b"theirs", ROOT, CreateHow.GUARDED, SetAttr())
    listing(nfspd)
    reads = []
    real = os.scandir

    def scandir(*args):
        reads.append(args)
        return real(*args)
    monkeypatch.setattr(os, "scandir", scandir)
    nfspd.create(d, b"mine", ROOT, CreateHow.GUARDED, SetAttr())
    nfspd.remove(d, b"theirs", ROOT)
    assert sorted(name for name, _, _ in listing(nfspd)) == [b".", b"..", b"mine"]
    assert reads == []


def test_a_name_added_behind_nfspds_back_while_it_reads_the_directory_shows_next_time(
        pair, export, monkeypatch):
    # Made after nfspd's read of the directory and before its stat: the
    # listing must not be stamped with a time that includes it.
    _, fresh, _ = pair
    populated(fresh)
    real = os.scandir

    def scandir_then_added(*args):
        it = real(*args)
        entries = list(it)
        it.close()
        monkeypatch.undo()
        (export / "late").write_bytes(b"")

        class Done:
            def __enter__(self):
                return iter(entries)

            def __exit__(self, *exc):
                return False
        return Done()
    monkeypatch.setattr(os, "scandir", scandir_then_added)
    assert b"late" not in [name for name, _, _ in listing(fresh, page=100)]
    assert b"late" in [name for name, _, _ in listing(fresh, page=100)]
