"""The NFS version 2 service (RFC 1094) on top of MetaFS.

Where RFC 1094 is silent or obsolete, this follows what the Linux kernel
server does for v2 clients (fs/nfsd/nfsproc.c, nfsxdr.c), since that is what
clients are tested against:

- statuses v2 does not have are folded: BADHANDLE -> STALE, XDEV -> ACCES,
  everything else v3-only -> IO; JUKEBOX drops the request, so the client
  retransmits later (v2 has no "try again" status).
- sattr: 0xFFFFFFFF leaves a field alone (mode 0xFFFF too: old Sun clients);
  a time with useconds 1000000 means "server time", and for mtime it means
  both times; an explicit "set both to about now" refused for lack of
  ownership is retried as "set to server time" (what `touch` means).
- CREATE is creat(2): an existing regular file keeps all but its size; the
  type bits of the mode ask for a directory or a device/fifo/socket (the size
  field carries rdev; NFCHR without one is a FIFO, Sun's convention).
- fattr: a FIFO is NFCHR with rdev NFS2_FIFO_DEV, rdev is new_encode_dev(),
  blocks are 512-byte units, fsid and fileid are folded to 32 bits.

Sizes: v2 sizes and offsets are 32-bit. fattr reports a size beyond 4 GiB - 1
as 0xFFFFFFFF (clamped, not truncated as Linux does: a 5 GiB file must not
look like a 1 GiB one to a client deciding where EOF is), and a WRITE whose
end would pass 0xFFFFFFFF fails with NFSERR_FBIG, so v2 never grows a file
beyond what v2 can describe.
"""

import inspect
import logging
import stat as _st
import time

from common import nfs2
from common.nfs2 import NFSPROC, nfsstat
from common.nfs3 import nfsstat3
from nfspd import replies
from nfspd.dispatch import NO_REPLY, Procedure
from nfspd.metafs import (FILE_SYNC, SET_TO_SERVER_TIME, CreateHow, FileType, FsError, SetAttr,
                          fs_error_of)

log = logging.getLogger(__name__)

UNSET = nfs2.SATTR_UNSET
U32_MAX = 0xFFFFFFFF
BLOCKSIZE = 4096
STATFS_TSIZE = nfs2.NFS_MAXDATA
# How far from "now" an explicit time may be and still be taken for `touch`.
MAX_TOUCH_TIME_ERROR = 30 * 60

_NSEC = 1_000_000_000

# --- status mapping -------------------------------------------------------

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


class _Fail(Exception):
    """A v2 status decided here rather than by MetaFS."""

    def __init__(self, status):
        super().__init__(status.name)
        self.status = status


# --- handles ---------------------------------------------------------------


def fh_out(fh):
    """MetaFS handles are at most 32 bytes and tolerate zero padding."""
    if len(fh) > nfs2.NFS_FHSIZE:
        log.error("MetaFS returned a %d-byte handle; NFSv2 handles are 32 bytes", len(fh))
        raise FsError(nfsstat3.NFS3ERR_SERVERFAULT, "handle too long for NFSv2")
    return fh + bytes(nfs2.NFS_FHSIZE - len(fh))


def _check_name(name):
    # A component never holds "/" or NUL; the VFS answers EACCES to one that does.
    if b"/" in name or b"\0" in name:
        raise _Fail(nfsstat.NFSERR_ACCES)


# --- attributes -------------------------------------------------------------

_IFMT = {FileType.REG: _st.S_IFREG, FileType.DIR: _st.S_IFDIR, FileType.BLK: _st.S_IFBLK,
         FileType.CHR: _st.S_IFCHR, FileType.LNK: _st.S_IFLNK, FileType.SOCK: _st.S_IFSOCK,
         FileType.FIFO: _st.S_IFIFO}
_FTYPE = {FileType.REG: nfs2.ftype.NFREG, FileType.DIR: nfs2.ftype.NFDIR,
          FileType.BLK: nfs2.ftype.NFBLK, FileType.CHR: nfs2.ftype.NFCHR,
          FileType.LNK: nfs2.ftype.NFLNK, FileType.SOCK: nfs2.ftype.NFSOCK,
          FileType.FIFO: nfs2.ftype.NFCHR}
_FILETYPE_OF_IFMT = {v: k for k, v in _IFMT.items()}


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
        mode=(attr.mode & 0o7777) | _IFMT[ftype],
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
        raise _Fail(nfsstat.NFSERR_IO)  # not a time; Linux answers INVAL, i.e. IO for v2
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


def _looks_like_touch(sa, now):
    """Both times set explicitly to the same second, within half an hour of now:
    most likely an old client's way of saying "now" (Linux nfsd_proc_setattr)."""
    return (isinstance(sa.atime, int) and isinstance(sa.mtime, int)
            and sa.atime // _NSEC == sa.mtime // _NSEC
            and abs(sa.atime // _NSEC - now) < MAX_TOUCH_TIME_ERROR)


def _failed(xid, res_type):
    """The reply to send when the iod a READ or WRITE was forwarded to answers
    an error (None: JUKEBOX, no reply, the client retries)."""
    def reply(code, message):
        status = status2(fs_error_of(OSError(code, message)).status)
        if status is NO_REPLY:
            return None
        return replies.encode(xid, res_type, res_type(status))
    return reply


# --- the service -------------------------------------------------------------


def procedures(resolver, clock=time.time):
    """{procedure number: Procedure} of NFS version 2 over ``resolver``
    (``resolve(ctx, fh) -> (MetaFS, Caller)``)."""

    def resolve(ctx, fh):
        return resolver.resolve(ctx, fh)

    def same_fs(a, b):
        # v2 has no XDEV; Linux answers ACCES to a link or rename across exports.
        if a is not b:
            raise _Fail(nfsstat.NFSERR_ACCES)

    def null(ctx, args):
        return None

    def getattr_(ctx, fh):
        fs, _ = resolve(ctx, fh)
        return nfs2.attrstat(nfsstat.NFS_OK, fattr(fs.getattr(fh)))

    def setattr_(ctx, args):
        fh = args.file
        fs, caller = resolve(ctx, fh)
        sa = setattr_from_sattr(args.attributes)
        try:
            wcc = fs.setattr(fh, caller, sa)
        except FsError as e:
            if e.status not in (nfsstat3.NFS3ERR_PERM, nfsstat3.NFS3ERR_ACCES) \
                    or not _looks_like_touch(sa, clock()):
                raise
            sa.atime = sa.mtime = SET_TO_SERVER_TIME
            wcc = fs.setattr(fh, caller, sa)
        attr = wcc.post if wcc.post is not None else fs.getattr(fh)
        return nfs2.attrstat(nfsstat.NFS_OK, fattr(attr))

    def obsolete(ctx, args):
        return None  # ROOT and WRITECACHE: RFC 1094 2.2.3, 2.2.8

    def lookup(ctx, args):
        _check_name(args.name)
        fs, caller = resolve(ctx, args.dir)
        fh, attr, _ = fs.lookup(args.dir, args.name, caller)
        return nfs2.diropres(nfsstat.NFS_OK, nfs2.diropok(fh_out(fh), fattr(attr)))

    def readlink(ctx, fh):
        fs, caller = resolve(ctx, fh)
        target, _ = fs.readlink(fh, caller)
        if len(target) > nfs2.NFS_MAXPATHLEN:
            # Linux silently cuts it to 1024 bytes, which names another file.
            raise _Fail(nfsstat.NFSERR_NAMETOOLONG)
        return nfs2.readlinkres(nfsstat.NFS_OK, target)

    async def read(ctx, args):
        fs, caller = resolve(ctx, args.file)
        count = min(args.count, nfs2.NFS_MAXDATA)
        if ctx.transport == "udp" and fs.forwards:
            # Not cut at the stripe boundary: RFC 1094 has no eof flag and old
            # clients take a short read for EOF, so a READ that spans two iods
            # (only an unaligned one can) is relayed instead.
            plan = await fs.read_plan(args.file, caller, args.offset, count)
            attrs = fattr(plan.attr)
            if plan.count:
                head = replies.read2_head(ctx.xid, attrs, plan.count)
                if fs.forward_read(plan, head, ctx, _failed(ctx.xid, nfs2.readres)):
                    return NO_REPLY
            data = await fs.read_data(plan)
            return nfs2.readres(nfsstat.NFS_OK, nfs2.readokres(attrs, bytes(data)))
        data, _, attr = await fs.read(args.file, caller, args.offset, count)
        return nfs2.readres(nfsstat.NFS_OK, nfs2.readokres(fattr(attr), bytes(data[:count])))

    async def write(ctx, args):
        fh, data = args.file, args.data
        fs, caller = resolve(ctx, fh)
        if args.offset + len(data) > U32_MAX:
            raise _Fail(nfsstat.NFSERR_FBIG)
        # v2 writes are synchronous (FILE_SYNC), and the reply has no count:
        # the whole write is done (or failed) before the reply.
        plan = await fs.write_plan(fh, caller, args.offset, len(data), FILE_SYNC)
        attr = plan.wcc.post if plan.wcc.post is not None else fs.getattr(fh)
        ok = nfs2.attrstat(nfsstat.NFS_OK, fattr(attr))
        if ctx.transport == "udp" and fs.forwards and data:
            reply = replies.encode(ctx.xid, nfs2.attrstat, ok)
            if fs.forward_write(plan, data, reply, ctx, _failed(ctx.xid, nfs2.attrstat)):
                return NO_REPLY
        await fs.write_data(plan, data)
        return ok

    def create(ctx, args):
        where, s = args.where, args.attributes
        _check_name(where.name)
        fs, caller = resolve(ctx, where.dir)
        try:
            fh, existing, _ = fs.lookup(where.dir, where.name, caller)
        except FsError as e:
            if e.status != nfsstat3.NFS3ERR_NOENT:
                raise
            fh = existing = None

        ftype = None
        if s.mode not in (UNSET, 0xFFFF) and _st.S_IFMT(s.mode):
            ftype = _FILETYPE_OF_IFMT.get(_st.S_IFMT(s.mode))
            if ftype is None or ftype == FileType.LNK:
                raise _Fail(nfsstat.NFSERR_IO)  # Linux: INVAL, which is IO for v2
        if existing is not None:
            etype = FileType(existing.type)
            if ftype is not None and ftype != etype:
                raise _Fail(nfsstat.NFSERR_EXIST)
            if etype == FileType.REG and s.size != UNSET:
                # creat(2) on an existing file truncates it and changes nothing else.
                wcc = fs.setattr(fh, caller, SetAttr(size=s.size))
                existing = wcc.post if wcc.post is not None else fs.getattr(fh)
            return nfs2.diropres(nfsstat.NFS_OK, nfs2.diropok(fh_out(fh), fattr(existing)))

        ftype = ftype or FileType.REG
        if ftype == FileType.REG:
            fh, attr, _ = fs.create(where.dir, where.name, caller, CreateHow.UNCHECKED,
                                    setattr_from_sattr(s))
        elif ftype == FileType.DIR:
            fh, attr, _ = fs.mkdir(where.dir, where.name, caller,
                                   setattr_from_sattr(s, with_size=False))
        else:
            rdev = (0, 0)
            if ftype in (FileType.CHR, FileType.BLK):
                if s.size == UNSET:
                    if ftype == FileType.CHR:
                        ftype = FileType.FIFO
                else:
                    rdev = new_decode_dev(s.size)
            fh, attr, _ = fs.mknod(where.dir, where.name, caller, ftype,
                                   setattr_from_sattr(s, with_size=False), rdev)
        return nfs2.diropres(nfsstat.NFS_OK, nfs2.diropok(fh_out(fh), fattr(attr)))

    def remove(ctx, args):
        _check_name(args.name)
        fs, caller = resolve(ctx, args.dir)
        fs.remove(args.dir, args.name, caller)
        return nfsstat.NFS_OK

    def rename(ctx, args):
        frm, to = args.from_, args.to
        _check_name(frm.name)
        _check_name(to.name)
        fs, caller = resolve(ctx, frm.dir)
        fs2, _ = resolve(ctx, to.dir)
        same_fs(fs, fs2)
        fs.rename(frm.dir, frm.name, to.dir, to.name, caller)
        return nfsstat.NFS_OK

    def link(ctx, args):
        to = args.to
        _check_name(to.name)
        fs, caller = resolve(ctx, to.dir)
        fs2, _ = resolve(ctx, args.from_)
        same_fs(fs, fs2)
        fs.link(args.from_, to.dir, to.name, caller)
        return nfsstat.NFS_OK

    def symlink(ctx, args):
        frm = args.from_
        _check_name(frm.name)
        fs, caller = resolve(ctx, frm.dir)
        fs.symlink(frm.dir, frm.name, caller, args.to,
                   setattr_from_sattr(args.attributes, with_size=False))
        return nfsstat.NFS_OK

    def mkdir(ctx, args):
        where = args.where
        _check_name(where.name)
        fs, caller = resolve(ctx, where.dir)
        fh, attr, _ = fs.mkdir(where.dir, where.name, caller,
                               setattr_from_sattr(args.attributes, with_size=False))
        return nfs2.diropres(nfsstat.NFS_OK, nfs2.diropok(fh_out(fh), fattr(attr)))

    def rmdir(ctx, args):
        _check_name(args.name)
        fs, caller = resolve(ctx, args.dir)
        fs.rmdir(args.dir, args.name, caller)
        return nfsstat.NFS_OK

    def readdir(ctx, args):
        fs, caller = resolve(ctx, args.dir)
        return nfs2.readdirres(nfsstat.NFS_OK, readdir_reply(fs, caller, args))

    def statfs(ctx, fh):
        fs, _ = resolve(ctx, fh)
        return nfs2.statfsres(nfsstat.NFS_OK, statfs_reply(fs.fsstat(fh)))

    def guarded(handler, res_type):
        """FsError and local refusals become the v2 status reply of res_type
        (a Union, or the bare nfsstat of REMOVE & co.)."""
        def failed(e):
            if isinstance(e, FsError):
                status = status2(e.status)
                if status is NO_REPLY:
                    return NO_REPLY
            else:
                status = e.status
            return status if res_type is nfs2.nfsstat_t else res_type(status)

        if inspect.iscoroutinefunction(handler):
            async def run_async(ctx, args):
                try:
                    return await handler(ctx, args)
                except (FsError, _Fail) as e:
                    return failed(e)
            return run_async

        # Kept a plain function, so that the dispatcher answers it at once.
        def run(ctx, args):
            try:
                return handler(ctx, args)
            except (FsError, _Fail) as e:
                return failed(e)
        return run

    table = {
        NFSPROC.NULL: null,
        NFSPROC.GETATTR: getattr_,
        NFSPROC.SETATTR: setattr_,
        NFSPROC.ROOT: obsolete,
        NFSPROC.LOOKUP: lookup,
        NFSPROC.READLINK: readlink,
        NFSPROC.READ: read,
        NFSPROC.WRITECACHE: obsolete,
        NFSPROC.WRITE: write,
        NFSPROC.CREATE: create,
        NFSPROC.REMOVE: remove,
        NFSPROC.RENAME: rename,
        NFSPROC.LINK: link,
        NFSPROC.SYMLINK: symlink,
        NFSPROC.MKDIR: mkdir,
        NFSPROC.RMDIR: rmdir,
        NFSPROC.READDIR: readdir,
        NFSPROC.STATFS: statfs,
    }
    changes = {NFSPROC.SETATTR, NFSPROC.WRITE, NFSPROC.CREATE, NFSPROC.REMOVE, NFSPROC.RENAME,
               NFSPROC.LINK, NFSPROC.SYMLINK, NFSPROC.MKDIR, NFSPROC.RMDIR}
    procs = {}
    for proc, handler in table.items():
        args_type, res_type = nfs2.PROCEDURE_TYPES[proc]
        if res_type is not nfs2.Void:
            handler = guarded(handler, res_type)
        procs[int(proc)] = Procedure(proc.name, args_type, res_type, handler,
                                     idempotent=proc not in changes)
    return procs


# --- READDIR and STATFS --------------------------------------------------------

# Bytes of a readdirok around the entries (the list terminator and eof), and
# of one entry besides its name (value-follows, fileid, name length, cookie).
_READDIR_OVERHEAD = 8
_ENTRY_OVERHEAD = 16


def _entry_size(name):
    return _ENTRY_OVERHEAD + len(name) + (-len(name) % 4)


def readdir_reply(fs, caller, args):
    """MetaFS keeps a 32-bit cookie space for v2 (cookie_bits=32) and cuts the
    page itself, so that entries sharing a cookie are never split across
    pages. A count too small for a single entry is NFS3ERR_TOOSMALL there, IO
    here: an empty, non-eof page would have the client ask again forever."""
    budget = min(args.count, nfs2.NFS_MAXDATA) - _READDIR_OVERHEAD
    if budget < _ENTRY_OVERHEAD:
        raise FsError(nfsstat3.NFS3ERR_TOOSMALL)
    entries, eof, _, _ = fs.readdir(args.dir, cookie_in(args.cookie), None, caller,
                                    budget // _ENTRY_OVERHEAD, cookie_bits=32,
                                    budget=budget, entry_size=_entry_size)
    return nfs2.readdirok(
        [nfs2.entry(fold32(e.fileid), e.name, cookie_out(e.cookie)) for e in entries], eof)


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
