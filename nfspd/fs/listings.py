"""Directory listings and READDIR cookies.

A cookie is a keyed hash of the entry's name, not a position: it stays valid
whatever else is added to or removed from the directory, so a client resuming a
listing neither skips nor repeats an entry that is still there. 0 starts a
listing, 1 and 2 are "." and ".."; names are returned in cookie order, so a
directory is read and sorted once and then kept (a few, most recently used)
until it changes. NFSv2 gets 32-bit cookies, NFSv3 (and NFSv4) 64-bit ones.

Names whose hashes collide share a cookie and always go out in the same page.
The cookie verifier of a directory is fixed for its lifetime (a keyed hash of
its handle), so that changes to it do not send clients back to the start.
"""

import bisect
import collections
import hashlib
import hmac
import os

from common.nfs3 import nfsstat3
from nfspd.fs.syscalls import proc_path
from nfspd.fs.types import DirEntry, FsError

CACHED = 32


class Listing:
    """A directory's entries sorted by cookie, and each name's cookie. Entries
    whose names hash alike share a cookie and are always returned in one page."""

    __slots__ = ("keys", "names", "inos", "keyof", "mtime_ns", "ctime_ns")

    def __init__(self, rows, keyof, st):
        self.keys = [r[0] for r in rows]
        self.names = [r[1] for r in rows]
        self.inos = [r[2] for r in rows]
        self.keyof = keyof
        self.stamp(st)

    def stamp(self, st):
        # Linux >= 6.13 gives a change following a stat() a finer timestamp than
        # the one that stat() saw (multigrain timestamps), so a change made by
        # someone else right after we read the directory still shows. Older
        # kernels may miss such a change within one clock tick; only changes
        # made outside this server are exposed to that.
        self.mtime_ns, self.ctime_ns = st.st_mtime_ns, st.st_ctime_ns

    def matches(self, st):
        return self.mtime_ns == st.st_mtime_ns and self.ctime_ns == st.st_ctime_ns

    def _position(self, key, name):
        lo = bisect.bisect_left(self.keys, key)
        hi = bisect.bisect_right(self.keys, key, lo)
        return bisect.bisect_left(self.names, name, lo, hi), hi

    def add(self, key, name, ino):
        i, hi = self._position(key, name)
        if i < hi and self.names[i] == name:
            self.inos[i] = ino
            return
        self.keys.insert(i, key)
        self.names.insert(i, name)
        self.inos.insert(i, ino)
        self.keyof[name] = key

    def discard(self, name):
        key = self.keyof.pop(name, None)
        if key is None:
            return
        i, hi = self._position(key, name)
        if i < hi and self.names[i] == name:
            del self.keys[i], self.names[i], self.inos[i]

    def page(self, cookie, max_entries, budget, entry_size, ino, parent_ino):
        """(entries, eof): at most max_entries (>= 1) DirEntry after ``cookie``,
        "." (fileid ``ino``) and ".." (``parent_ino()``) first when the listing
        starts. With a ``budget``, entries also stop where the sum of
        entry_size(name) would exceed it; TOOSMALL if not even the first fits."""
        out, used = [], 0

        def fits(name):
            nonlocal used
            if budget is None:
                return True
            cost = entry_size(name)
            if used + cost > budget:
                return False
            used += cost
            return True

        stop = False
        if cookie == 0:
            if not fits(b"."):
                raise FsError(nfsstat3.NFS3ERR_TOOSMALL)
            out.append(DirEntry(ino, b".", 1))
        if cookie <= 1:
            if len(out) >= max_entries or not fits(b".."):
                stop = True
            else:
                out.append(DirEntry(parent_ino(), b"..", 2))
        keys, names, inos = self.keys, self.names, self.inos
        n = len(keys)
        i = 0 if cookie <= 2 else bisect.bisect_right(keys, cookie)
        append = out.append
        while not stop and i < n and len(out) < max_entries:
            j = i + 1
            if j >= n or keys[j] != keys[i]:
                # A cookie of its own, nearly always (no group to look at):
                # fits() inlined, this runs for every entry of a page.
                name = names[i]
                if budget is not None:
                    cost = entry_size(name)
                    if used + cost > budget:
                        if not out:
                            raise FsError(nfsstat3.NFS3ERR_TOOSMALL)
                        break
                    used += cost
                append(DirEntry(inos[i], name, keys[i]))
                i = j
                continue
            # Entries sharing a cookie go out together or not at all.
            j = bisect.bisect_right(keys, keys[i], i)
            if out and len(out) + (j - i) > max_entries:
                break
            if not all(fits(names[k]) for k in range(i, j)):
                if not out:
                    raise FsError(nfsstat3.NFS3ERR_TOOSMALL)
                break
            out.extend(DirEntry(inos[k], names[k], keys[k]) for k in range(i, j))
            i = j
        return out, not stop and i >= n


class Listings:
    """The listings of one export's directories, most recently used kept,
    cookies and verifiers keyed by the export's secret."""

    def __init__(self, handle_key, atime_moved=None, others_quiet=None):
        # atime_moved(): called when reading a directory moved its atime
        # (relatime, strictatime): a change to count (attrcache.py).
        self._atime_moved = atime_moved
        # others_quiet(): whether no other process (a worker) changed
        # anything during this one's change (attrcache.SharedChanges); None:
        # there is no other.
        self._others_quiet = others_quiet
        self._cookie_key = hmac.digest(handle_key, b"nfsp readdir cookie", "sha256")[:32]
        self._verifier_key = hmac.digest(handle_key, b"nfsp readdir verifier", "sha256")
        self._cache = collections.OrderedDict()  # (dev, ino, bits) -> Listing

    def cookie(self, name, bits):
        digest = hashlib.blake2b(name, key=self._cookie_key, digest_size=8).digest()
        h = int.from_bytes(digest, "big")
        h >>= 1 if bits == 64 else 64 - bits
        return h if h > 2 else 3  # 0 starts a listing, 1 and 2 are "." and ".."

    def verifier(self, cfh):
        """The 8-byte cookie verifier of the directory with canonical handle cfh."""
        return hmac.digest(self._verifier_key, cfh, "sha256")[:8]

    def get(self, dir_fd, st, bits):
        """The current listing of directory dir_fd (stat st) with bits-bit cookies."""
        key = (st.st_dev, st.st_ino, bits)
        cached = self._cache.get(key)
        if cached is not None and cached.matches(st):
            self._cache.move_to_end(key)
            return cached
        with os.scandir(proc_path(dir_fd).encode()) as it:  # bytes path: bytes names
            raw = {e.name: e.inode() for e in it}
        # Stamped with the stat from before the read: one taken after it
        # could hold a change made in between, which the names read lack.
        if self._atime_moved is not None and os.fstat(dir_fd).st_atime_ns != st.st_atime_ns:
            self._atime_moved()
        cookie = self.cookie
        if cached is not None:
            # Changed behind our back: patch the old listing when that is cheaper
            # than sorting anew.
            keyof, names, inos = cached.keyof, cached.names, cached.inos
            removed = [n for n in keyof if n not in raw]
            if len(removed) <= max(1000, len(raw) // 20):
                for n in removed:
                    cached.discard(n)
                changed = [i for i, n in enumerate(names) if raw[n] != inos[i]]
                for i in changed:
                    inos[i] = raw[names[i]]
                if len(raw) > len(names):
                    for n in raw:
                        if n not in keyof:
                            cached.add(cookie(n, bits), n, raw[n])
                cached.stamp(st)
                self._cache.move_to_end(key)
                return cached
        old = cached.keyof if cached is not None else {}
        keyof = {n: old.get(n) or cookie(n, bits) for n in raw}
        rows = sorted((keyof[n], n, ino) for n, ino in raw.items())
        listing = Listing(rows, keyof, st)
        self._cache[key] = listing
        self._cache.move_to_end(key)
        while len(self._cache) > CACHED:
            self._cache.popitem(last=False)
        return listing

    def changed(self, dir_st_before, dir_fd, added=(), removed=()):
        """Keep cached listings of a directory we just changed in step (cheaper
        than re-reading 100,000 entries), if they were current before the change.
        added: (name, ino) pairs; removed: names. A worker's change made
        meanwhile is noticed (others_quiet); one made outside nfspd between
        its first stat of the directory and the one here is not, and shows
        with the directory's next change."""
        for bits in (64, 32):
            key = (dir_st_before.st_dev, dir_st_before.st_ino, bits)
            listing = self._cache.get(key)
            if listing is None:
                continue
            if not listing.matches(dir_st_before):
                continue  # already behind: the next read compares it with the directory
            after = os.fstat(dir_fd)
            if self._others_quiet is not None and not self._others_quiet():
                # Another process changed something meanwhile, perhaps this
                # directory: its change may be in that stat and not in the
                # listing. Read again next time.
                del self._cache[key]
                continue
            for name in removed:
                listing.discard(name)
            for name, ino in added:
                listing.add(self.cookie(name, bits), name, ino)
            listing.stamp(after)
