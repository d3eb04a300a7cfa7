"""Between MetaFS values and the RFC 1094 types the NFSv2 procedures carry:
statuses, handles, attributes (fattr, sattr), directory cookies, STATFS.

Where RFC 1094 is silent or obsolete, this follows what the Linux kernel
server does for v2 clients (fs/nfsd/nfsxdr.c), since that is what clients are
tested against:

- statuses v2 does not have are folded: BADHANDLE -> STALE, XDEV -> ACCES,
  everything else v3-only -> IO; JUKEBOX drops the request, so the client
  retransmits later (v2 has no "try again" status).
- sattr: 0xFFFFFFFF leaves a field alone (mode 0xFFFF too: old Sun clients);
  a time with useconds 1000000 means "server time", and for mtime it means
  both times.
- fattr: a FIFO is NFCHR with rdev NFS2_FIFO_DEV, rdev is new_encode_dev(),
  blocks are 512-byte units, fsid and fileid are folded to 32 bits. A size
  beyond 4 GiB - 1 is reported as 0xFFFFFFFF (clamped, not truncated as Linux
  does: a 5 GiB file must not look like a 1 GiB one to a client deciding
  where EOF is).
"""

import logging
import stat as _st

from common import nfs2
from common.nfs2 import nfsstat
from common.nfs3 import nfsstat3
from nfspd.dispatch import NO_REPLY
from nfspd.fs.types import SET_TO_SERVER_TIME, FileType, FsError, SetAttr

log = logging.getLogger(__name__)

UNSET = nfs2.SATTR_UNSET
U32_MAX = 0xFFFFFFFF
BLOCKSIZE = 4096
STATFS_TSIZE = nfs2.NFS_MAXDATA

_NSEC = 1_000_000_000

# --- statuses ----------------------------------------------------------------

_V2_VALUES = {s.value for s in nfsstat} - {nfsstat.NFSERR_INVAL}
_SAME = {s3: nfsstat(s3.value) for s3 in nfsstat3 if s3.value in _V2_VALUES}
_FOLDED = {
    nfsstat3.NFS3ERR_BADHANDLE: nfsstat.NFSERR_STALE,
    nfsstat3.NFS3ERR_XDEV: nfsstat.NFSERR_ACCES,
}


def status2(status3):
    """The v2 status for an nfsstat3, or NO_REPLY for JUKEBOX. NFSERR_INVAL
    never goes out: RFC 1094 has no such status (Linux folds it to IO too)."""
    if status3 == nfsstat3.NFS3ERR_JUKEBOX:
        return NO_REPLY
    if status3 in _SAME:
        return _SAME[status3]
    return _FOLDED.get(status3, nfsstat.NFSERR_IO)


# --- handles -------------------------------------------------------------------


def fh_out(fh):
    """MetaFS handles are at most 32 bytes and tolerate zero padding."""
    if len(fh) > nfs2.NFS_FHSIZE:
        log.error("MetaFS returned a %d-byte handle; NFSv2 handles are 32 bytes", len(fh))
        raise FsError(nfsstat3.NFS3ERR_SERVERFAULT, "handle too long for NFSv2")
    return fh + bytes(nfs2.NFS_FHSIZE - len(fh))


# --- attributes ----------------------------------------------------------------

IFMT = {FileType.REG: _st.S_IFREG, FileType.DIR: _st.S_IFDIR, FileType.BLK: _st.S_IFBLK,
        FileType.CHR: _st.S_IFCHR, FileType.LNK: _st.S_IFLNK, FileType.SOCK: _st.S_IFSOCK,
        FileType.FIFO: _st.S_IFIFO}
_FTYPE = {FileType.REG: nfs2.ftype.NFREG, FileType.DIR: nfs2.ftype.NFDIR,
          FileType.BLK: nfs2.ftype.NFBLK, FileType.CHR: nfs2.ftype.NFCHR,
          FileType.LNK: nfs2.ftype.NFLNK, FileType.SOCK: nfs2.ftype.NFSOCK,
          FileType.FIFO: nfs2.ftype.NFCHR}
FILETYPE_OF_IFMT = {v: k for k, v in IFMT.items()}


def fold32(n):
    """64 -> 32 bits, the identity below 2**32 (Linux folds export UUIDs the same way)."""
    return (n ^ (n >> 32)) & U32_MAX


def new_encode_dev(major, minor):
    return ((minor & 0xFF) | ((major & 0xFFF) << 8) | ((minor & ~0xFF) << 12)) & U32_MAX


def new_decode_dev(dev):
    return (dev & 0xFFF00) >> 8, (dev & 0xFF) | ((dev >> 12) & 0xFFF00)


def _timeval(ns):
    sec, rest = divmod(ns, _NSEC)
    return nfs2.timeval(sec & U32_MAX, rest // 1000)


def fattr(attr):
    ftype = FileType(attr.type)
    size = min(attr.size, U32_MAX)
    if ftype == FileType.LNK:
        size = min(size, nfs2.NFS_MAXPATHLEN)
    if ftype in (FileType.CHR, FileType.BLK):
        rdev = new_encode_dev(attr.rdev_major, attr.rdev_minor)
    else:
        rdev = nfs2.NFS2_FIFO_DEV  # what Linux sends for everything else too
    return nfs2.fattr(
        type=_FTYPE[ftype],
        mode=(attr.mode & 0o7777) | IFMT[ftype],
        nlink=min(attr.nlink, U32_MAX),
        uid=attr.uid & U32_MAX,
        gid=attr.gid & U32_MAX,
        size=size,
        blocksize=BLOCKSIZE,
        rdev=rdev,
        blocks=min((attr.used + 511) // 512, U32_MAX),
        fsid=fold32(attr.fsid),
        fileid=fold32(attr.fileid),
        atime=_timeval(attr.atime_ns),
        mtime=_timeval(attr.mtime_ns),
        ctime=_timeval(attr.ctime_ns),
    )


def _set_time(tv):
    if tv.seconds == UNSET or tv.useconds == UNSET:
        return None
    if tv.useconds == nfs2.SATTR_USECONDS_SERVER_TIME:
        return SET_TO_SERVER_TIME
    if tv.useconds > nfs2.SATTR_USECONDS_SERVER_TIME:
        # Not a time; Linux answers INVAL, which v2 folds to IO.
        raise FsError(nfsstat3.NFS3ERR_INVAL, "useconds out of range")
    return tv.seconds * _NSEC + tv.useconds * 1000


def setattr_from_sattr(s, *, with_size=True):
    mode = None if s.mode in (UNSET, 0xFFFF) else s.mode & 0o7777
    atime, mtime = _set_time(s.atime), _set_time(s.mtime)
    if mtime is SET_TO_SERVER_TIME and atime is not None:
        atime = SET_TO_SERVER_TIME  # Sun: useconds 1000000 in mtime means "both to now"
    return SetAttr(
        mode=mode,
        uid=None if s.uid == UNSET else s.uid,
        gid=None if s.gid == UNSET else s.gid,
        size=None if (s.size == UNSET or not with_size) else s.size,
        atime=atime,
        mtime=mtime,
    )


# --- READDIR cookies and STATFS -------------------------------------------------


def cookie_in(c):
    return int.from_bytes(c, "big")


def cookie_out(cookie):
    if cookie > U32_MAX:
        raise FsError(nfsstat3.NFS3ERR_SERVERFAULT, f"directory cookie {cookie:#x} exceeds 32 bits")
    return cookie.to_bytes(4, "big")


def statfs_reply(fsstat):
    # Linux truncates block counts to 32 bits; a bigger block size keeps them
    # true on file systems over 16 TiB.
    bsize = BLOCKSIZE
    while fsstat.tbytes // bsize > U32_MAX:
        bsize *= 2
    return nfs2.statfsokres(
        tsize=STATFS_TSIZE,
        bsize=bsize,
        blocks=fsstat.tbytes // bsize,
        bfree=min(fsstat.fbytes // bsize, U32_MAX),
        bavail=min(fsstat.abytes // bsize, U32_MAX),
    )
