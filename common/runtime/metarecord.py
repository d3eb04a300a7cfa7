"""Where a metafile keeps its record (common/metafile.py): in the extended
attribute ``trusted.nfsp.meta``, or, for metafiles made before it was, or on
a file system without trusted attributes, in its first SIZE bytes.

Why an attribute: it is metadata. On a journalled ext4 the journal commit
that makes a new file's name durable carries it too, where a record in data
first needs its block allocated and written out (sync_file_range, the commit
waiting for the write). Measured with system calls alone, a new metafile and
a removal per pair, one flush per 6 pairs, journalled ext4 on a loop device,
3 rounds: 11,672-12,875 pairs/s and 17.8-18.5 us of the process's CPU per
pair with the record in the attribute, 8,992-9,266 and 31.5-32.4 us with it
in data; with no flush at all both cost the same (13.3-13.9 us per pair).
And the metafile has no block at all: none to allocate, write back or free.

Only root sets or reads ``trusted.`` attributes (CAP_SYS_ADMIN, which a
switch to a caller's file-system ids keeps): a user with a shell on the
metaserver cannot forge a record, as they could in the data of a file they own.

A record in the attribute takes precedence: the data of a metafile whose
record moved there is a hole or the stale old record, never read.
"""

import errno
import os

from common.metafile import SIZE, MetafileError, read

XATTR = "trusted.nfsp.meta"

# No trusted attributes on this file system, or none for this process (no
# CAP_SYS_ADMIN, say in a container: it then reads none either, ENODATA).
_UNSUPPORTED = (errno.ENOTSUP, errno.EOPNOTSUPP)
_NOT_SET = _UNSUPPORTED + (errno.EPERM,)


def load(fd, length):
    """The Metafile of the metafile open (readable) as ``fd``, ``length``
    bytes long; MetafileError if it holds none, OSError as reading fails."""
    try:
        record = os.getxattr(fd, XATTR)
    except OSError as e:
        if e.errno != errno.ENODATA and e.errno not in _UNSUPPORTED:
            raise
        return read(os.pread(fd, SIZE + 1, 0), length)
    if len(record) != SIZE:
        raise MetafileError(f"record attribute is {len(record)} bytes, expected {SIZE}")
    return read(record, length)


def store(fd, meta):
    """Write ``meta``'s record into the metafile open (for writing) as ``fd``:
    True if into the attribute, False if into data (no trusted attributes
    here, or not for this process, which then could not read one either)."""
    record = meta.encode()
    try:
        os.setxattr(fd, XATTR, record)
        return True
    except OSError as e:
        if e.errno not in _NOT_SET:
            raise
    if os.pwrite(fd, record, 0) != len(record):
        raise OSError(errno.EIO, "short metafile write")
    return False


def of_path(path):
    """The Metafile of the metafile at ``path`` (for tools and tests)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return load(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
