"""The lookups of a READDIRPLUS page (and of an NFSv4 READDIR asking for
attributes): each entry's handle and attributes, at one stat per entry when
its handle is known.

MetaFS.lookup of every name would resolve the directory's handle, stat it and
build its attributes again for each entry, then stat the name twice (once for
the attributes, once to check that the handle it made in between is of the
same object). Here the directory is resolved once per page, and each name
stat'ed once:

- an object whose handle was made lately gets it again: the handle codec
  remembers handles by inode number and ctime (HandleCodec.known), which name
  one object; listing a directory again costs a stat per entry, no more;
- an object whose descriptor is in the handle cache (its inode pinned, so its
  number names no other object) gets the cached handle (and a regular file
  whose size is in its record has it read through that descriptor);
- any other object gets its handle from its name (name_to_handle_at), then a
  second stat must find the same inode with the same ctime behind the name,
  so that handle and attributes are of one object (a rename changes the
  ctime too), and the handle is remembered.

Whatever does not fit those cases (a regular file whose metafile must be
opened for its size, a name that changed under the second stat, a directory the
caller may only search under its own credentials) takes MetaFS.lookup, as
before. A name that cannot be looked up at all (gone meanwhile, a mount
point, no search permission) comes back without handle and attributes, as
RFC 1813 allows.

For NFSv3's READDIRPLUS (``encoded``), an entry whose size its stat tells is
packed straight from that stat (Objects.entryplus3), no Attr made for it: a
page is some 200 entries.

With an AttrCache (attrcache.py), such an entry's lookup (handle, stat,
packed entry) is kept, and a listing read again while nothing has changed
reuses it: no stat at all, a dict lookup per entry (0.5-0.9 against 3.9 us of
CPU per entry, in-process).
"""

import os
import stat

from common.metafile import HEADER as META_HEADER
from common.nfs3 import entryplus3_bytes
from nfspd.fs.types import FsError

_S_IFMT = 0o170000
_S_IFREG = stat.S_IFREG
_DOTS = (b".", b"..")


def lookup_entries(objects, lookup, dir_fh, entries, caller, encoded=False, cache=None):
    """[(DirEntry, handle, Attr)] for entries of the directory dir_fh, handle
    and Attr None for a name that cannot be looked up. ``lookup`` is
    MetaFS.lookup, for the cases done the long way. ``encoded``: rows
    (DirEntry, the XDR of its NFSv3 entryplus3) instead, packed straight from
    the stat where it tells the size (Objects.entryplus3), with no Attr.
    ``cache``: an AttrCache (attrcache.py), whose lookups are reused and
    filled where the stat alone made the entry."""
    out = []
    if not entries:
        return out
    dfd, _, dst = objects.dir(dir_fh)
    if not objects.searchable_by(dfd, dst, caller):
        # Each lookup under the caller's credentials (it may not search here).
        for e in entries:
            out.append(_looked_up(lookup, dir_fh, e, caller, encoded))
        return out
    # Keyed by the directory's times too: a name added, removed or renamed
    # here, even behind nfspd's back, starts the directory over.
    names = None if cache is None else \
        cache.directory((dst.st_ino, dst.st_mtime_ns, dst.st_ctime_ns))
    remembered = reused = 0
    codec = objects.codec
    cached_inode, encode_at, known, remember = (codec.cached_inode, codec.encode_at, codec.known,
                                                codec.remember)
    attr, dev, pack = objects.attr, objects.dev, objects.entryplus3
    lstat = os.stat
    append = out.append
    for e in entries:
        name = e.name
        if name in _DOTS:
            append(_looked_up(lookup, dir_fh, e, caller, encoded))
            dfd = objects.dir(dir_fh)[0]  # (the borrowed fd may have been evicted)
            continue
        if names is not None:
            hit = names.get(name)
            if hit is not None:
                fh, st, packed = hit
                if not encoded:
                    append((e, fh, attr(None, st)))
                elif packed is not None and packed[0] == e.cookie and packed[1] == e.fileid:
                    append((e, packed[2]))
                else:
                    append((e, pack(e.fileid, name, e.cookie, st, fh)))
                reused += 1
                continue
        try:
            st = lstat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError:
            append(_nothing(e, encoded))  # gone meanwhile: name and fileid still go
            continue
        if st.st_dev == dev:
            if st.st_mode & _S_IFMT != _S_IFREG or st.st_size >= META_HEADER:
                # The size is in the stat: only a handle to find. One made
                # lately (the usual case when a listing is read again) is
                # good whether or not the object is in the handle cache.
                fh = known(st)
                if fh is None:
                    hit = cached_inode(st.st_ino)
                    if hit is not None:
                        # Its fd pins the inode, so st is of the object fh
                        # names; remembered, the next listing finds it first
                        # (a file made here is in the handle cache only).
                        fh = hit[1]
                        remember(st, fh)
                    else:
                        try:
                            fh = encode_at(dfd, name)
                            again = lstat(name, dir_fd=dfd, follow_symlinks=False)
                        except (OSError, FsError):
                            append(_nothing(e, encoded))
                            continue
                        if again.st_ino != st.st_ino or again.st_ctime_ns != st.st_ctime_ns \
                                or again.st_dev != dev:
                            append(_looked_up(lookup, dir_fh, e, caller, encoded))
                            dfd = objects.dir(dir_fh)[0]
                            continue
                        st = again
                        remember(st, fh)
                if encoded:
                    entry = pack(e.fileid, name, e.cookie, st, fh)
                    append((e, entry))
                    packed = (e.cookie, e.fileid, entry)
                else:
                    append((e, fh, attr(None, st)))
                    packed = None
                if names is not None:
                    names[name] = (fh, st, packed)
                    remembered += 1
                continue
            hit = cached_inode(st.st_ino)
            if hit is not None:  # its metafile read through the cached descriptor
                try:
                    a = attr(hit[0], st)
                except FsError:
                    # Not a valid metafile (logged): this entry goes without,
                    # as its LOOKUP fails, and the rest of the page with theirs.
                    append(_nothing(e, encoded))
                    continue
                append((e, entryplus3_bytes(e.fileid, name, e.cookie, a, hit[1])) if encoded
                       else (e, hit[1], a))
                continue
        append(_looked_up(lookup, dir_fh, e, caller, encoded))
        dfd = objects.dir(dir_fh)[0]
    if names is not None:
        cache.added(remembered)
        cache.served(len(entries), reused)
    return out


def _nothing(e, encoded):
    return (e, entryplus3_bytes(e.fileid, e.name, e.cookie, None, None)) if encoded else \
        (e, None, None)


def _looked_up(lookup, dir_fh, e, caller, encoded):
    try:
        fh, a, _ = lookup(dir_fh, e.name, caller)
    except FsError:
        return _nothing(e, encoded)
    if encoded:
        return e, entryplus3_bytes(e.fileid, e.name, e.cookie, a, fh)
    return e, fh, a
