"""What READDIRPLUS looked up lately, reused while nothing has changed.

A listing read again (8 clients walking one directory, ``ls -l`` in a loop,
every node of a job reading the same input directory) costs a stat per entry,
about half of nfspd's CPU per entry. nfs-ganesha keeps attributes for 60 s
whatever happens meanwhile; here they are kept only while provably right:

- Changes counts every change made through this process's MetaFS objects.
  Each MetaFS method that may change an attribute of anything (a namespace
  change, SETATTR, a WRITE's size and mtime, a READ's atime, a truncation
  settled) bumps it when it returns; one that waits (the data path) counts
  as busy from its start to its end, so that nothing it changes on the way
  goes unseen. Classifying a new MetaFS method is not optional:
  tests/test_attrcache.py fails on one that is in neither list.
- AttrCache holds, per directory, what each name's lookup gave (stat and
  handle, and the packed NFSv3 entry) and the pages made of them (Pages:
  NFSv3 READDIRPLUS's rows, NFSv4 READDIR's replies), and drops all of it at
  the first change or while one is under way. A page either reuses a name's
  lookup or stats it as before; it never mixes the two for one entry.
- Changes made behind nfspd's back (an admin editing the export tree) are not
  counted: those show within ``ttl`` (3 s), the age at which everything is
  dropped anyway. A directory's own listing is checked against its mtime on
  every page, as before, so added and removed names show at once.

With worker processes (nfspd/workers.py), which make namespace changes and
move directories' atimes too, every process counts in SharedChanges, a few
words of memory they share, and each keeps its own cache by their sums.
"""

import functools
import inspect
import mmap
import os
import time

TTL = 3.0
"""Seconds a lookup is reused at most: the bound for changes made outside
nfspd, what a Linux client's own attribute cache allows anyway (acregmin,
3 s). Each time it runs out, a directory's every entry costs its stat
again: 1 s was a quarter of nfspd's CPU with 8 clients listing 10,000
entries."""

MAX_ENTRIES = 65536
"""Names (and pages) remembered at most, all directories, give or take a
page: some 30 MB."""


class Changes:
    """The count of changes made through this process's file-system layer,
    and how many are under way (a change that waits on the data path)."""

    __slots__ = ("count", "busy")

    def __init__(self):
        self.count = 0
        self.busy = 0

    def made(self):
        self.count += 1

    def begin(self):
        self.busy += 1
        self.count += 1

    def end(self):
        self.busy -= 1
        self.count += 1

    def counting(self, fn):
        """``fn`` (a function or an ``async def``) counted as a change: a
        plain one when it returns or raises, an async one as busy from its
        call to its end."""
        return _counting(self, fn)


class SharedChanges:
    """Changes, counted by several processes (nfspd and its workers): each
    bumps its own slot of a shared memory file, (count, busy) per process,
    and ``count`` and ``busy`` are the sums over them all. Only the
    process owning a slot writes it, so no lock: a read that races a bump
    sees the old or the new sum, and a change a reply has told a client of
    was counted before that reply left."""

    def __init__(self, fd, slot, processes):
        self._map = mmap.mmap(fd, processes * _SLOT_BYTES)
        self._words = memoryview(self._map).cast("Q")
        self._counts = self._words[0::2]
        self._busies = self._words[1::2]
        self._count, self._busy = 2 * slot, 2 * slot + 1
        # A process that died mid-change (its slot's next owner is here) left
        # its busy count behind.
        self._words[self._busy] = 0
        self._depth = 0      # changes of this process under way, one inside another
        self._others = 0     # the others' count when the outermost one began

    @staticmethod
    def memory(processes):
        """A descriptor of zeroed shared memory for ``processes``, to map in
        each (inherited across exec)."""
        fd = os.memfd_create("nfspd-changes", 0)
        os.ftruncate(fd, processes * _SLOT_BYTES)
        return fd

    @property
    def count(self):
        return sum(self._counts)

    @property
    def busy(self):
        return sum(self._busies)

    def made(self):
        self._words[self._count] += 1

    def begin(self):
        words = self._words
        words[self._busy] += 1
        words[self._count] += 1

    def end(self):
        words = self._words
        words[self._busy] -= 1
        words[self._count] += 1

    def counting(self, fn):
        """As Changes.counting, except that a change that does not wait is
        busy too while it runs, and notes the others' count when it begins:
        what others_quiet() looks at."""
        if inspect.iscoroutinefunction(fn):
            return _counting(self, fn)
        enter, leave = self._enter, self._leave

        @functools.wraps(fn)
        def changing(*args, **kwargs):
            enter()
            try:
                return fn(*args, **kwargs)
            finally:
                leave()
        return changing

    def _enter(self):
        words = self._words
        if not self._depth:
            self._others = self.count - words[self._count]
        self._depth += 1
        words[self._busy] += 1

    def _leave(self):
        self._depth -= 1
        words = self._words
        words[self._busy] -= 1
        words[self._count] += 1

    def others_quiet(self):
        """Whether no other process has changed anything since this one's
        change under way began, nor is changing anything now: what a
        directory's listing kept in step with that change needs
        (listings.Listings.changed), the directory's timestamps alone
        telling one change from two only where a stat came between them."""
        words = self._words
        return (self.busy == words[self._busy]
                and self.count - words[self._count] == self._others)


_SLOT_BYTES = 16  # a process's count and busy, unsigned 64-bit words ("Q")


def _counting(changes, fn):
    made, begin, end = changes.made, changes.begin, changes.end
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def changing(*args, **kwargs):
            begin()
            try:
                return await fn(*args, **kwargs)
            finally:
                end()
    else:
        @functools.wraps(fn)
        def changing(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            finally:
                made()
    return changing


class AttrCache:
    """Per directory (by inode number), per name: what its lookup gave,
    reused while ``changes`` counts nothing new and for ``ttl`` seconds at
    most. ``clock`` gives seconds (time.monotonic)."""

    def __init__(self, changes, ttl=TTL, max_entries=MAX_ENTRIES, clock=time.monotonic):
        self._changes = changes
        self._ttl = ttl
        self._max = max_entries
        self._size = 0
        self._clock = clock
        self._dirs = {}
        self._count = None
        self._until = 0.0
        # For `nfsp status`: entries listed, and of them those given from
        # what was kept (a lookup or a whole page).
        self.listed = 0
        self.reused = 0

    def directory(self, dir_ino):
        """The dict {name: what its lookup gave} of a directory for this page
        to read and fill, or None while a change is under way (look every
        name up, remember nothing)."""
        changes = self._changes
        if changes.busy:
            return None
        now = self._clock()
        if changes.count != self._count or now >= self._until or self._size >= self._max:
            self._dirs = {}
            self._size = 0
            self._count = changes.count
            self._until = now + self._ttl
        names = self._dirs.get(dir_ino)
        if names is None:
            names = self._dirs[dir_ino] = {}
        return names

    def added(self, n):
        """A page remembered ``n`` more names: past max_entries (and one
        page), the next page starts over empty."""
        self._size += n

    def served(self, listed, reused):
        """A page of ``listed`` entries went out, ``reused`` of them from
        what was kept."""
        self.listed += listed
        self.reused += reused


class Pages:
    """What a caller made of a directory's listing (pages, keyed as it
    likes), kept with the directory's names in an AttrCache: gone at the
    next change like them."""

    __slots__ = ("_names", "_cache")

    def __init__(self, names, cache):
        self._names, self._cache = names, cache

    def get(self, key):
        """The page kept under ``key``, or None."""
        hit = self._names.get(("page", key))
        if hit is None:
            return None
        self._cache.served(hit[1], hit[1])
        return hit[0]

    def put(self, key, page, entries):
        """Keep ``page`` (not to be modified once kept) of ``entries``
        entries, which count as names against max_entries."""
        self._names[("page", key)] = (page, entries)
        self._cache.added(entries)
