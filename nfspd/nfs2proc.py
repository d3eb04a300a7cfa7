"""The NFS version 2 procedures (RFC 1094 section 2.2) on top of MetaFS: one
function per procedure, named as the RFC names it, and PROCEDURES, the table
the dispatcher serves (one row per procedure).

Handlers work like NFSv3's (nfspd/nfs3proc.py): the handle resolves through
``ctx.service``, a failure is raised as an FsError, and the table's one
failure builder, ``v2_status``, turns it into the v2 status (folded as
nfspd/nfs2attrs.py says; JUKEBOX: no reply at all).

Where RFC 1094 is silent or obsolete, this follows what the Linux kernel
server does for v2 clients (fs/nfsd/nfsproc.c), since that is what clients are
tested against:

- an explicit "set both times to about now" refused for lack of ownership is
  retried as "set to server time" (what `touch` means);
- CREATE is creat(2): an existing regular file keeps all but its size; the
  type bits of the mode ask for a directory or a device/fifo/socket (the size
  field carries rdev; NFCHR without one is a FIFO, Sun's convention);
- v2 sizes and offsets are 32-bit: a WRITE whose end would pass 0xFFFFFFFF
  fails with NFSERR_FBIG, so v2 never grows a file beyond what v2 can describe.
"""

import functools
import stat as _st

from common import nfs2
from common.nfs2 import (
    NFSPROC, attrstat, createargs, diropargs, diropres, fhandle, linkargs, nfsstat, nfsstat_t,
    readargs, readdirargs, readdirres, readlinkres, readres, renameargs, sattrargs, statfsres,
    symlinkargs, writeargs,
)
from common.nfs3 import nfsstat3
from common.xdr import Void
from nfspd import replies
from nfspd.dispatch import NO_REPLY, procedure_table
from nfspd.durable import layout_holder, when_stable, when_unlinked
from nfspd.fs.types import FILE_SYNC, SET_TO_SERVER_TIME, CreateHow, FileType, FsError, SetAttr, \
    fs_error_of
from nfspd.nfs2attrs import (
    FILETYPE_OF_IFMT, U32_MAX, UNSET, cookie_in, cookie_out, fattr, fh_out, fold32,
    new_decode_dev, setattr_from_sattr, status2, statfs_reply,
)

# How far from "now" an explicit time may be and still be taken for `touch`.
MAX_TOUCH_TIME_ERROR = 30 * 60

_NSEC = 1_000_000_000


def _check_name(name):
    # A component never holds "/" or NUL; the VFS answers EACCES to one that does.
    if b"/" in name or b"\0" in name:
        raise FsError(nfsstat3.NFS3ERR_ACCES, "a name with / or NUL")


def _same_fs(a, b):
    # v2 has no XDEV; Linux answers ACCES to a link or rename across exports.
    if a is not b:
        raise FsError(nfsstat3.NFS3ERR_ACCES, "across exports")


def _looks_like_touch(sa, now):
    """Both times set explicitly to the same second, within half an hour of now:
    most likely an old client's way of saying "now" (Linux nfsd_proc_setattr)."""
    return (isinstance(sa.atime, int) and isinstance(sa.mtime, int)
            and sa.atime // _NSEC == sa.mtime // _NSEC
            and abs(sa.atime // _NSEC - now) < MAX_TOUCH_TIME_ERROR)


def _forward_failed(xid, res_type, undo=None):
    """The reply to send when the iod a READ or WRITE was forwarded to answers
    an error (None: JUKEBOX, no reply, the client retries); ``undo()`` first,
    for a WRITE (the size it grew the file to)."""
    def reply(code, message):
        if undo is not None:
            try:
                undo()
            except FsError:
                pass   # the file went meanwhile
        status = status2(fs_error_of(OSError(code, message)).status)
        if status is NO_REPLY:
            return None
        return replies.encode(xid, res_type, res_type(status))
    return reply


# --- The procedures, in RFC 1094 order ---------------------------------------------


def NULL(ctx, args):
    return None


def GETATTR(ctx, fh):
    fs, _ = ctx.service.resolve(ctx, fh)
    return attrstat(nfsstat.NFS_OK, fattr(fs.getattr(fh)))


def SETATTR(ctx, args):
    fh = args.file
    fs, caller = ctx.service.resolve(ctx, fh)
    sa = setattr_from_sattr(args.attributes)
    try:
        wcc = fs.setattr(fh, caller, sa)
    except FsError as e:
        if e.status not in (nfsstat3.NFS3ERR_PERM, nfsstat3.NFS3ERR_ACCES) \
                or not _looks_like_touch(sa, ctx.service.clock()):
            raise
        sa.atime = sa.mtime = SET_TO_SERVER_TIME
        wcc = fs.setattr(fh, caller, sa)
    attr = wcc.post if wcc.post is not None else fs.getattr(fh)
    return attrstat(nfsstat.NFS_OK, fattr(attr))


def ROOT(ctx, args):
    return None  # obsolete (RFC 1094 2.2.3)


def LOOKUP(ctx, args):
    _check_name(args.name)
    fs, caller = ctx.service.resolve(ctx, args.dir)
    fh, attr, _ = fs.lookup(args.dir, args.name, caller)
    return diropres(nfsstat.NFS_OK, nfs2.diropok(fh_out(fh), fattr(attr)))


def READLINK(ctx, fh):
    fs, caller = ctx.service.resolve(ctx, fh)
    target, _ = fs.readlink(fh, caller)
    if len(target) > nfs2.NFS_MAXPATHLEN:
        # Linux silently cuts it to 1024 bytes, which names another file.
        raise FsError(nfsstat3.NFS3ERR_NAMETOOLONG, "symlink target over 1024 bytes")
    return readlinkres(nfsstat.NFS_OK, target)


async def READ(ctx, args):
    fs, caller = ctx.service.resolve(ctx, args.file)
    count = min(args.count, nfs2.NFS_MAXDATA)
    datapath = ctx.service.datapath
    if ctx.transport == "udp" and datapath.forwards:
        # Not cut at the stripe boundary: RFC 1094 has no eof flag and old
        # clients take a short read for EOF, so a READ that spans two iods
        # (only an unaligned one can) is relayed instead.
        plan = await fs.read_plan(args.file, caller, args.offset, count)
        attrs = fattr(plan.attr)
        if plan.count:
            head = replies.read2_head(ctx.xid, attrs, plan.count)
            try:
                forwarded = datapath.forward_read(plan.meta, plan.ino, plan.offset, plan.count,
                                                  head, ctx.client, ctx.local,
                                                  _forward_failed(ctx.xid, readres))
            except OSError as e:
                raise fs_error_of(e) from None
            if forwarded:
                return NO_REPLY
        data = await fs.read_data(plan)
        return readres(nfsstat.NFS_OK, nfs2.readokres(attrs, bytes(data)))
    data, _, attr = await fs.read(args.file, caller, args.offset, count)
    return readres(nfsstat.NFS_OK, nfs2.readokres(fattr(attr), bytes(data[:count])))


def WRITECACHE(ctx, args):
    return None  # obsolete (RFC 1094 2.2.8)


async def WRITE(ctx, args):
    fh, data = args.file, args.data
    fs, caller = ctx.service.resolve(ctx, fh)
    if args.offset + len(data) > U32_MAX:
        raise FsError(nfsstat3.NFS3ERR_FBIG, "beyond what v2 offsets reach")
    # v2 writes are synchronous (FILE_SYNC), and the reply has no count:
    # the whole write is done (or failed) before the reply.
    plan = await fs.write_plan(fh, caller, args.offset, len(data), FILE_SYNC)
    attr = plan.wcc.post if plan.wcc.post is not None else fs.getattr(fh)
    ok = attrstat(nfsstat.NFS_OK, fattr(attr))
    datapath = ctx.service.datapath
    if ctx.transport == "udp" and datapath.forwards and data:
        reply = replies.encode(ctx.xid, attrstat, ok)
        try:
            forwarded = datapath.forward_write(plan.meta, plan.ino, plan.offset, data,
                                               plan.stable, reply, ctx.client, ctx.local,
                                               _forward_failed(ctx.xid, attrstat,
                                                               lambda: fs.write_failed(plan)),
                                               functools.partial(fs.write_landed, plan))
        except OSError as e:
            try:
                fs.write_failed(plan)      # (the iod went down since the plan)
            except FsError:
                pass                       # the file went meanwhile: nothing to undo
            raise fs_error_of(e) from None
        if forwarded:
            return NO_REPLY
    await fs.write_data(plan, data)
    return ok


def CREATE(ctx, args):
    where, s = args.where, args.attributes
    _check_name(where.name)
    fs, caller = ctx.service.resolve(ctx, where.dir)
    try:
        fh, existing, _ = fs.lookup(where.dir, where.name, caller)
    except FsError as e:
        if e.status != nfsstat3.NFS3ERR_NOENT:
            raise
        fh = existing = None

    ftype = None
    if s.mode not in (UNSET, 0xFFFF) and _st.S_IFMT(s.mode):
        ftype = FILETYPE_OF_IFMT.get(_st.S_IFMT(s.mode))
        if ftype is None or ftype == FileType.LNK:
            raise FsError(nfsstat3.NFS3ERR_INVAL, "CREATE of that type")  # IO for v2, as Linux
    if existing is not None:
        etype = FileType(existing.type)
        if ftype is not None and ftype != etype:
            raise FsError(nfsstat3.NFS3ERR_EXIST)
        if etype == FileType.REG and s.size != UNSET:
            # creat(2) on an existing file truncates it and changes nothing else.
            wcc = fs.setattr(fh, caller, SetAttr(size=s.size))
            existing = wcc.post if wcc.post is not None else fs.getattr(fh)
        return diropres(nfsstat.NFS_OK, nfs2.diropok(fh_out(fh), fattr(existing)))

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
    return when_stable(fs, caller,
                       diropres(nfsstat.NFS_OK, nfs2.diropok(fh_out(fh), fattr(attr))))


def REMOVE(ctx, args):
    _check_name(args.name)
    fs, caller = ctx.service.resolve(ctx, args.dir)
    held = layout_holder(ctx, fs, args.dir, args.name, caller)
    fs.remove(args.dir, args.name, caller)
    return when_unlinked(ctx, fs, caller, held, nfsstat.NFS_OK)


def RENAME(ctx, args):
    frm, to = args.from_, args.to
    _check_name(frm.name)
    _check_name(to.name)
    resolve = ctx.service.resolve
    fs, caller = resolve(ctx, frm.dir)
    fs2, _ = resolve(ctx, to.dir)
    _same_fs(fs, fs2)
    held = layout_holder(ctx, fs, to.dir, to.name, caller)
    fs.rename(frm.dir, frm.name, to.dir, to.name, caller)
    return when_unlinked(ctx, fs, caller, held, nfsstat.NFS_OK)


def LINK(ctx, args):
    to = args.to
    _check_name(to.name)
    resolve = ctx.service.resolve
    fs, caller = resolve(ctx, to.dir)
    fs2, _ = resolve(ctx, args.from_)
    _same_fs(fs, fs2)
    fs.link(args.from_, to.dir, to.name, caller)
    return when_stable(fs, caller, nfsstat.NFS_OK)


def SYMLINK(ctx, args):
    frm = args.from_
    _check_name(frm.name)
    fs, caller = ctx.service.resolve(ctx, frm.dir)
    fs.symlink(frm.dir, frm.name, caller, args.to,
               setattr_from_sattr(args.attributes, with_size=False))
    return when_stable(fs, caller, nfsstat.NFS_OK)


def MKDIR(ctx, args):
    where = args.where
    _check_name(where.name)
    fs, caller = ctx.service.resolve(ctx, where.dir)
    fh, attr, _ = fs.mkdir(where.dir, where.name, caller,
                           setattr_from_sattr(args.attributes, with_size=False))
    return when_stable(fs, caller,
                       diropres(nfsstat.NFS_OK, nfs2.diropok(fh_out(fh), fattr(attr))))


def RMDIR(ctx, args):
    _check_name(args.name)
    fs, caller = ctx.service.resolve(ctx, args.dir)
    fs.rmdir(args.dir, args.name, caller)
    return when_stable(fs, caller, nfsstat.NFS_OK)


# Bytes of a readdirok around the entries (the list terminator and eof), and
# of one entry besides its name (value-follows, fileid, name length, cookie).
_READDIR_OVERHEAD = 8
_ENTRY_OVERHEAD = 16


def _entry_size(name):
    return _ENTRY_OVERHEAD + len(name) + (-len(name) % 4)


def READDIR(ctx, args):
    """MetaFS keeps a 32-bit cookie space for v2 (cookie_bits=32) and cuts the
    page itself, so that entries sharing a cookie are never split across
    pages. A count too small for a single entry is NFS3ERR_TOOSMALL there, IO
    here: an empty, non-eof page would have the client ask again forever."""
    fs, caller = ctx.service.resolve(ctx, args.dir)
    budget = min(args.count, nfs2.NFS_MAXDATA) - _READDIR_OVERHEAD
    if budget < _ENTRY_OVERHEAD:
        raise FsError(nfsstat3.NFS3ERR_TOOSMALL)
    entries, eof, _, _ = fs.readdir(args.dir, cookie_in(args.cookie), None, caller,
                                    budget // _ENTRY_OVERHEAD, cookie_bits=32,
                                    budget=budget, entry_size=_entry_size)
    return readdirres(nfsstat.NFS_OK, nfs2.readdirok(
        [nfs2.entry(fold32(e.fileid), e.name, cookie_out(e.cookie)) for e in entries], eof))


def STATFS(ctx, fh):
    fs, _ = ctx.service.resolve(ctx, fh)
    return statfsres(nfsstat.NFS_OK, statfs_reply(fs.fsstat(fh)))


# --- Failures, and the table -------------------------------------------------------


def v2_status(ctx, args, e, res):
    """The reply to an FsError: its v2 status, the whole result for REMOVE &
    co. (a bare nfsstat), the union's status otherwise; JUKEBOX: none."""
    status = status2(e.status)
    if status is NO_REPLY or res is nfsstat_t:
        return status
    return res(status)


# "cached": these change something, so their replies go to the duplicate
# request cache.
P = NFSPROC
PROCEDURES = procedure_table([
    # procedure    arguments    results      handler     cached  on FsError
    (P.NULL,       Void,        Void,        NULL,       False,  None),
    (P.GETATTR,    fhandle,     attrstat,    GETATTR,    False,  v2_status),
    (P.SETATTR,    sattrargs,   attrstat,    SETATTR,    True,   v2_status),
    (P.ROOT,       Void,        Void,        ROOT,       False,  None),
    (P.LOOKUP,     diropargs,   diropres,    LOOKUP,     False,  v2_status),
    (P.READLINK,   fhandle,     readlinkres, READLINK,   False,  v2_status),
    (P.READ,       readargs,    readres,     READ,       False,  v2_status),
    (P.WRITECACHE, Void,        Void,        WRITECACHE, False,  None),
    (P.WRITE,      writeargs,   attrstat,    WRITE,      True,   v2_status),
    (P.CREATE,     createargs,  diropres,    CREATE,     True,   v2_status),
    (P.REMOVE,     diropargs,   nfsstat_t,   REMOVE,     True,   v2_status),
    (P.RENAME,     renameargs,  nfsstat_t,   RENAME,     True,   v2_status),
    (P.LINK,       linkargs,    nfsstat_t,   LINK,       True,   v2_status),
    (P.SYMLINK,    symlinkargs, nfsstat_t,   SYMLINK,    True,   v2_status),
    (P.MKDIR,      createargs,  diropres,    MKDIR,      True,   v2_status),
    (P.RMDIR,      diropargs,   nfsstat_t,   RMDIR,      True,   v2_status),
    (P.READDIR,    readdirargs, readdirres,  READDIR,    False,  v2_status),
    (P.STATFS,     fhandle,     statfsres,   STATFS,     False,  v2_status),
], error_type=FsError)
del P
