"""The NFS version 3 procedures (RFC 1813 section 3) on top of MetaFS: one
function per procedure, named as the RFC names it, and PROCEDURES, the table
the dispatcher serves (one row per procedure).

A handler resolves its handle(s) through ``ctx.service`` (an NfsService) to
(MetaFS, Caller), calls MetaFS and returns the resok arm of the procedure's
result union. A failure is raised as an FsError; the dispatcher hands it to
the row's failure builder, which fills the resfail arm as far as the server
can (post-op attributes fetched again; MetaFS does not report pre-op
attributes of a failed change). Anything else escapes to the dispatcher,
which answers SYSTEM_ERR.

Over UDP with iods, READ and WRITE are forwarded: the handler gives the data
path the reply (or its head) and an iod sends it to the client (NO_REPLY).
"""

import functools
import operator
import struct

from common import nfs3
from common.nfs3 import (
    ACCESS3args, ACCESS3res, COMMIT3args, COMMIT3res, CREATE3args, CREATE3res, FSF3_CANSETTIME,
    FSF3_HOMOGENEOUS, FSF3_LINK, FSF3_SYMLINK, FSINFO3args, FSINFO3res, FSSTAT3args, FSSTAT3res,
    GETATTR3args, GETATTR3res, LINK3args, LINK3res, LOOKUP3args, LOOKUP3res, MKDIR3args,
    MKDIR3res, MKNOD3args, MKNOD3res, NFSPROC3, PATHCONF3args, PATHCONF3res, READ3args, READ3res,
    READDIR3args, READDIR3res, READDIRPLUS3args, READDIRPLUS3res, READLINK3args, READLINK3res,
    REMOVE3args, REMOVE3res, RENAME3args, RENAME3res, RMDIR3args, RMDIR3res, SETATTR3args,
    SETATTR3res, SYMLINK3args, SYMLINK3res, WRITE3args, WRITE3res, createmode3, fattr3_bytes,
    ftype3, nfsstat3, nfstime3, stable_how, wcc_data,
)
from common.xdr import Void
from nfspd import replies
from nfspd.dispatch import NO_REPLY, Encoded, ReplyParts, Wait, procedure_table
from nfspd.durable import layout_holder, when_stable, when_unlinked
from nfspd.fs.types import CreateHow, FileType, FsError, SetAttr, fs_error_of
from nfspd.nfs3attrs import OK, fattr, post_op, status_of, time_ns, to_setattr, wcc, wcc_bytes

# Transfer sizes. A UDP reply must fit one datagram, so UDP gets 32 KiB; TCP
# records can be large and 1 MiB is what Linux clients use at most.
MAX_IO_TCP = 1 << 20
MAX_IO_UDP = 32 << 10
# READDIR(PLUS) size the client should ask for. A READDIRPLUS page costs one
# synchronous MetaFS lookup per entry on the event loop, so a page is kept to a
# few hundred entries (~64 KiB) rather than rtmax, bounding that stall while
# still listing big directories in few round trips.
DTPREF = 64 << 10
NAME_MAX = 255
LINK_MAX_DEFAULT = 32000
MAXFILESIZE = (1 << 63) - 1
TIME_DELTA = nfstime3(0, 1)  # MetaFS keeps nanosecond times
PROPERTIES = FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME

_U32_MAX = 0xFFFFFFFF
_u32 = struct.Struct(">I").pack
_OK_WORD = _u32(OK)
_TRUE_WORD = _u32(1)
_FALSE_WORD = _u32(0)
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


def max_io(ctx):
    return MAX_IO_TCP if ctx.transport == "tcp" else MAX_IO_UDP


def data_io(ctx):
    """rtmax/wtmax: the data path may want less (over UDP with iods: what keeps
    an aligned READ or WRITE within one stripe)."""
    io = ctx.service.datapath.max_io(ctx.transport)
    return max_io(ctx) if io is None else min(io, max_io(ctx))


def _xdev(fs, fs2):
    # Objects in different exports cannot be renamed or linked across.
    if fs2 is not fs:
        raise FsError(nfsstat3.NFS3ERR_XDEV)


def _pad4(n):
    return (n + 3) & ~3


# Encoded sizes used to fill READDIR/READDIRPLUS replies up to the client's limit.
_POST_OP_ATTR = 4 + 84
_RESOK_FIXED = _POST_OP_ATTR + nfs3.NFS3_COOKIEVERFSIZE + 4 + 4  # + list end + eof
_ENTRY_FIXED = 4 + 8 + 4 + 8  # value-follows, fileid, name length, cookie
_ENTRY_MIN = _ENTRY_FIXED + 4  # a name of 1..4 bytes


def _entry_size(name):
    return _ENTRY_FIXED + _pad4(len(name))


def _cut(entries, n):
    """Where to end a page that only n entries fit: entries sharing a cookie
    must go together, since the client resumes after the last cookie it got."""
    while 0 < n < len(entries) and entries[n].cookie == entries[n - 1].cookie:
        n -= 1
    return n


def _pathconf(fs, fh, name, default):
    """MetaFS may offer ``pathconf(fh, name)`` (an os.pathconf name such as
    "PC_LINK_MAX"); the contract does not require it."""
    fn = getattr(fs, "pathconf", None)
    if fn is None:
        return default
    try:
        v = fn(fh, name)
    except (FsError, OSError, ValueError):
        return default
    return default if v is None or v < 0 else min(v, _U32_MAX)


# --- The procedures, in RFC 1813 order -------------------------------------------


def NULL(ctx, args):
    return None


def GETATTR(ctx, args):
    fh = args.object
    fs, _ = ctx.service.resolve(ctx, fh)
    return Encoded(_OK_WORD + fattr3_bytes(fs.getattr(fh)))


def SETATTR(ctx, args):
    fh = args.object
    fs, caller = ctx.service.resolve(ctx, fh)
    sattr = to_setattr(args.new_attributes)
    guard = None if args.guard is None else time_ns(args.guard)
    w = fs.setattr(fh, caller, sattr, guard_ctime_ns=guard)
    res = Encoded(_OK_WORD + wcc_bytes(w))
    v4 = ctx.service.v4
    if sattr.size is not None and v4 is not None:
        # NFSv4.1 clients writing this file through pNFS layouts are fenced
        # first (nfspd/nfs4service.py, truncation_fence).
        fence = v4.truncation_fence(fh)
        if fence is not None:
            return Wait(_fenced, fence, res)
    return res


async def _fenced(fence, res):
    await fence()
    return res


def LOOKUP(ctx, args):
    d = args.what.dir
    fs, caller = ctx.service.resolve(ctx, d)
    fh, attr, dattr = fs.lookup(d, args.what.name, caller)
    n = len(fh)
    if n > nfs3.NFS3_FHSIZE:
        return nfs3.LOOKUP3res(OK, nfs3.LOOKUP3resok(fh, fattr(attr), post_op(dattr)))
    return Encoded(b"".join((
        _OK_WORD, _u32(n), fh, _PAD[n & 3], _TRUE_WORD, fattr3_bytes(attr),
        _FALSE_WORD if dattr is None else _TRUE_WORD + fattr3_bytes(dattr))))


def ACCESS(ctx, args):
    fh = args.object
    fs, caller = ctx.service.resolve(ctx, fh)
    granted, attr = fs.access(fh, caller, args.access)
    # The reply may only grant what was asked (RFC 1813 3.3.4).
    return Encoded(_OK_WORD + _TRUE_WORD + fattr3_bytes(attr) + _u32(granted & args.access))


def READLINK(ctx, args):
    fh = args.symlink
    fs, caller = ctx.service.resolve(ctx, fh)
    target, attr = fs.readlink(fh, caller)
    return nfs3.READLINK3res(OK, nfs3.READLINK3resok(fattr(attr), target))


def READ(ctx, args):
    """Over UDP the READ is usually forwarded to an iod: then nothing here
    waits, and the call is done at once; otherwise it goes on as a task."""
    fh = args.file
    fs, caller = ctx.service.resolve(ctx, fh)
    # A server may return less than asked; rtmax is the most it offers.
    count = min(args.count, data_io(ctx))
    if ctx.transport != "udp" or not ctx.service.datapath.forwards:
        return Wait(_read, ctx, fs, caller, fh, args.offset, count)
    # Cut at the stripe boundary, so one iod holds it all (a short read,
    # which the client continues), and let that iod answer.
    plan = fs.read_plan_now(fh, caller, args.offset, count, at_stripe=True)
    if plan is None:
        return Wait(_read_forwarded, ctx, fs, caller, fh, args.offset, count)
    if not plan.count:  # at or past the end: no data to fetch
        return nfs3.READ3res(OK, nfs3.READ3resok(fattr(plan.attr), 0, bool(plan.eof), b""))
    if _forward_read(ctx, plan):
        return NO_REPLY
    return Wait(_relay, ctx, fs, plan)


def _forward_read(ctx, plan):
    """Have the iod holding the data send the reply; False when it cannot (the
    caller relays the data)."""
    if not plan.count:
        return False
    head = replies.read3_head(ctx.xid, plan.attr, plan.count, plan.eof)
    try:
        return ctx.service.datapath.forward_read(plan.meta, plan.ino, plan.offset, plan.count,
                                                 head, ctx.client, ctx.local,
                                                 _read_failed(ctx.xid, plan.attr))
    except OSError as e:
        raise fs_error_of(e) from None


def _read_failed(xid, attr):
    """The reply to send when the iod a READ was forwarded to answers an error."""
    def reply(code, message):
        status = status_of(fs_error_of(OSError(code, message)))
        fail = nfs3.READ3resfail(fattr(attr))
        return replies.encode(xid, nfs3.READ3res, nfs3.READ3res(status, fail))
    return reply


async def _read_forwarded(ctx, fs, caller, fh, offset, count):
    plan = await fs.read_plan(fh, caller, offset, count, at_stripe=True)
    if _forward_read(ctx, plan):
        return NO_REPLY
    return await _relay(ctx, fs, plan)


async def _relay(ctx, fs, plan):
    return _read_reply(ctx.xid, plan.attr, await fs.read_data(plan), plan.eof)


async def _read(ctx, fs, caller, fh, offset, count):
    data, eof, attr = await fs.read(fh, caller, offset, count)
    return _read_reply(ctx.xid, attr, data, eof)


def _read_reply(xid, attr, data, eof):
    """READ3res NFS3_OK as the buffers of the whole reply: the data goes out
    from where the data path received it, never copied into an encoding
    (the head is the forwarded READ's, byte for byte the codec's)."""
    n = len(data)
    return ReplyParts((replies.read3_head(xid, attr, n, eof), data, _PAD[n % 4]))


def WRITE(ctx, args):
    """Like READ: a WRITE forwarded to an iod is done at once."""
    fh, data = args.file, args.data
    fs, caller = ctx.service.resolve(ctx, fh)
    if args.count != len(data):
        raise FsError(nfsstat3.NFS3ERR_INVAL, "count does not match the data length")
    plan = fs.write_plan_now(fh, caller, args.offset, len(data), args.stable)
    if plan is None:
        return Wait(_write, ctx, fs, caller, args)
    if _forward_write(ctx, fs, plan, data):
        return NO_REPLY
    return Wait(_write_data, fs, plan, data)


def _forward_write(ctx, fs, plan, data):
    """Have the iod write the data and then send the reply; False when it
    cannot (the data is written from here)."""
    datapath = ctx.service.datapath
    if ctx.transport != "udp" or not datapath.forwards or not data:
        return False
    reply = replies.write3_ok(ctx.xid, plan.wcc, len(data), plan.committed, datapath.verifier)
    try:
        return datapath.forward_write(plan.meta, plan.ino, plan.offset, data, plan.stable,
                                      reply, ctx.client, ctx.local,
                                      _write_failed(ctx, plan),
                                      functools.partial(fs.write_landed, plan))
    except OSError as e:
        try:
            fs.write_failed(plan)      # (the iod went down since the plan)
        except FsError:
            pass                       # the file went meanwhile: nothing to undo
        raise fs_error_of(e) from None


def _write_failed(ctx, plan):
    """The reply to send when the iod a WRITE was forwarded to refuses it: the
    size the WRITE grew the file to undone first, the attributes after that."""
    xid = ctx.xid

    def reply(code, message):
        status = status_of(fs_error_of(OSError(code, message)))
        try:
            fs, _ = ctx.service.resolve(ctx, plan.fh)
            fs.write_failed(plan)
            post = fs.getattr(plan.fh)
        except FsError:
            post = None
        fail = nfs3.WRITE3resfail(wcc_data(None, post_op(post)))
        return replies.encode(xid, nfs3.WRITE3res, nfs3.WRITE3res(status, fail))
    return reply


async def _write(ctx, fs, caller, args):
    data = args.data
    plan = await fs.write_plan(args.file, caller, args.offset, len(data), args.stable)
    if _forward_write(ctx, fs, plan, data):
        return NO_REPLY
    return await _write_data(fs, plan, data)


async def _write_data(fs, plan, data):
    verf = await fs.write_data(plan, data)
    return nfs3.WRITE3res(OK, nfs3.WRITE3resok(
        wcc(plan.wcc), len(data), stable_how(plan.committed), verf))


def CREATE(ctx, args):
    d, name, how = args.where.dir, args.where.name, args.how
    fs, caller = ctx.service.resolve(ctx, d)
    if how.disc == createmode3.EXCLUSIVE:
        fh, attr, w = fs.create(d, name, caller, CreateHow.EXCLUSIVE, SetAttr(), verf=how.body)
    else:
        fh, attr, w = fs.create(d, name, caller, _CREATE_HOW[how.disc], to_setattr(how.body))
    return when_stable(fs, caller, _made(fh, attr, w))


_CREATE_HOW = {m: CreateHow(int(m)) for m in createmode3}


def _made(fh, attr, w):
    """The packed reply of a CREATE, MKDIR, SYMLINK or MKNOD that made ``fh``
    (their resok are alike: post_op_fh3, post_op_attr, wcc_data): what the
    codec gives, without building it (tests/test_nfs3_service.py)."""
    n = len(fh)
    if n > nfs3.NFS3_FHSIZE:
        raise FsError(nfsstat3.NFS3ERR_SERVERFAULT, "handle too long")
    return Encoded(b"".join((_OK_WORD, _TRUE_WORD, _u32(n), fh, _PAD[n & 3], _TRUE_WORD,
                             fattr3_bytes(attr), wcc_bytes(w))))


def MKDIR(ctx, args):
    d, name = args.where.dir, args.where.name
    fs, caller = ctx.service.resolve(ctx, d)
    fh, attr, w = fs.mkdir(d, name, caller, to_setattr(args.attributes))
    return when_stable(fs, caller, _made(fh, attr, w))


def SYMLINK(ctx, args):
    d, name, s = args.where.dir, args.where.name, args.symlink
    fs, caller = ctx.service.resolve(ctx, d)
    fh, attr, w = fs.symlink(d, name, caller, s.symlink_data, to_setattr(s.symlink_attributes))
    return when_stable(fs, caller, _made(fh, attr, w))


def MKNOD(ctx, args):
    d, name, what = args.where.dir, args.where.name, args.what
    fs, caller = ctx.service.resolve(ctx, d)
    if what.disc in (ftype3.NF3CHR, ftype3.NF3BLK):
        dev = what.body
        fh, attr, w = fs.mknod(d, name, caller, FileType(int(what.disc)),
                               to_setattr(dev.dev_attributes),
                               rdev=(dev.spec.specdata1, dev.spec.specdata2))
    elif what.disc in (ftype3.NF3SOCK, ftype3.NF3FIFO):
        fh, attr, w = fs.mknod(d, name, caller, FileType(int(what.disc)), to_setattr(what.body))
    else:
        raise FsError(nfsstat3.NFS3ERR_BADTYPE, f"MKNOD of {what.disc.name}")
    return when_stable(fs, caller, _made(fh, attr, w))


def REMOVE(ctx, args):
    d = args.object.dir
    fs, caller = ctx.service.resolve(ctx, d)
    held = layout_holder(ctx, fs, d, args.object.name, caller)
    w = fs.remove(d, args.object.name, caller)
    return when_unlinked(ctx, fs, caller, held, Encoded(_OK_WORD + wcc_bytes(w)))


def RMDIR(ctx, args):
    d = args.object.dir
    fs, caller = ctx.service.resolve(ctx, d)
    w = fs.rmdir(d, args.object.name, caller)
    return when_stable(fs, caller, Encoded(_OK_WORD + wcc_bytes(w)))


def RENAME(ctx, args):
    f, t = args.from_, args.to
    resolve = ctx.service.resolve
    fs, caller = resolve(ctx, f.dir)
    fs_to, _ = resolve(ctx, t.dir)
    _xdev(fs, fs_to)
    held = layout_holder(ctx, fs, t.dir, t.name, caller)
    wf, wt = fs.rename(f.dir, f.name, t.dir, t.name, caller)
    return when_unlinked(ctx, fs, caller, held, Encoded(_OK_WORD + wcc_bytes(wf) + wcc_bytes(wt)))


def LINK(ctx, args):
    fh, d = args.file, args.link.dir
    resolve = ctx.service.resolve
    fs, caller = resolve(ctx, fh)
    fs_dir, _ = resolve(ctx, d)
    _xdev(fs, fs_dir)
    attr, w = fs.link(fh, d, args.link.name, caller)
    return when_stable(fs, caller,
                       Encoded(_OK_WORD + _TRUE_WORD + fattr3_bytes(attr) + wcc_bytes(w)))


def READDIR(ctx, args):
    d = args.dir
    fs, caller = ctx.service.resolve(ctx, d)
    limit = min(args.count, max_io(ctx))
    # The page is cut to what count holds as it is read (entries sharing a
    # cookie kept together); TOOSMALL if not even the first entry fits.
    entries, eof, verf, dattr = fs.readdir(d, args.cookie, args.cookieverf, caller,
                                           max(limit - _RESOK_FIXED, 0) // _ENTRY_MIN + 1,
                                           budget=max(limit - _RESOK_FIXED, 0),
                                           entry_size=_entry_size)
    if not entries and not eof:
        raise FsError(nfsstat3.NFS3ERR_TOOSMALL)
    encode = nfs3.entry3_bytes
    return Encoded(b"".join((
        _OK_WORD, _FALSE_WORD if dattr is None else _TRUE_WORD + fattr3_bytes(dattr), verf,
        *[encode(e.fileid, e.name, e.cookie) for e in entries], nfs3.dirlist_end(bool(eof)))))


def READDIRPLUS(ctx, args):
    """A page of entries with handles and attributes, filled up to maxcount
    (the whole reply); dircount (RFC 1813: the bytes of names, fileids and
    cookies) is not used, as Linux's nfsd does not use it
    (nfsd3_proc_readdirplus sizes the reply from maxcount alone) and
    nfs-ganesha's replies are not cut by it either. The Linux client sends
    dircount = maxcount / 8 (4 KiB against 32 KiB): honoured, it cut a page
    to ~128 short names where maxcount holds ~200, for half again as many
    calls per listing, each with its own fixed cost to client and server.
    TOOSMALL when not even the first entry fits maxcount. A page holds at
    most DTPREF bytes whatever maxcount asks (the size FSINFO tells clients
    to use): its lookups run on the event loop, one per entry, and 1 MiB of
    entries (~6,500) would hold every other call back for tens of ms."""
    d = args.dir
    fs, caller = ctx.service.resolve(ctx, d)
    limit = min(args.maxcount, max_io(ctx), DTPREF)
    # Entries are fetched (each costs a lookup) while they would fit with
    # attributes and a handle as long as the directory's; the page is cut
    # exactly below, as they are encoded.
    fixed = _ENTRY_FIXED + _POST_OP_ATTR + 4 + _pad4(len(d))
    room = max(limit - _RESOK_FIXED, 0)
    try:
        rows, eof, verf, dattr = fs.readdirplus(
            d, args.cookie, args.cookieverf, caller, room // (fixed + 4) + 1, budget=room,
            entry_size=lambda name: fixed + ((len(name) + 3) & ~3), encoded=True,
            page_key=fixed)
    except FsError as e:
        if e.status != nfsstat3.NFS3ERR_TOOSMALL:
            raise
        rows = eof = None
    if not rows and not eof:  # the first entry goes to the exact cut below
        rows, eof, verf, dattr = fs.readdirplus(d, args.cookie, args.cookieverf, caller, 1,
                                                encoded=True)
    size = _RESOK_FIXED
    out = []
    for _, entry in rows:
        size += len(entry)
        if size > limit:
            break
        out.append(entry)
    n = len(out)
    if n < len(rows):
        n = _cut([r[0] for r in rows], n)
        if not n:
            raise FsError(nfsstat3.NFS3ERR_TOOSMALL)
    # eof only if nothing fetched was left out.
    return Encoded(b"".join((
        _OK_WORD, _FALSE_WORD if dattr is None else _TRUE_WORD + fattr3_bytes(dattr), verf,
        *out[:n], nfs3.dirlist_end(bool(eof) and n == len(rows)))))


def FSSTAT(ctx, args):
    fh = args.fsroot
    fs, _ = ctx.service.resolve(ctx, fh)
    st = fs.fsstat(fh)
    attr = fs.getattr(fh)
    return nfs3.FSSTAT3res(OK, nfs3.FSSTAT3resok(
        fattr(attr), st.tbytes, st.fbytes, st.abytes, st.tfiles, st.ffiles, st.afiles, 0))


def FSINFO(ctx, args):
    fh = args.fsroot
    fs, _ = ctx.service.resolve(ctx, fh)
    attr = fs.getattr(fh)
    io = data_io(ctx)
    return nfs3.FSINFO3res(OK, nfs3.FSINFO3resok(
        obj_attributes=fattr(attr), rtmax=io, rtpref=io, rtmult=4096,
        wtmax=io, wtpref=io, wtmult=4096, dtpref=min(DTPREF, max_io(ctx)),
        maxfilesize=MAXFILESIZE, time_delta=TIME_DELTA, properties=PROPERTIES))


def PATHCONF(ctx, args):
    fh = args.object
    fs, _ = ctx.service.resolve(ctx, fh)
    attr = fs.getattr(fh)
    return nfs3.PATHCONF3res(OK, nfs3.PATHCONF3resok(
        obj_attributes=fattr(attr),
        linkmax=_pathconf(fs, fh, "PC_LINK_MAX", LINK_MAX_DEFAULT), name_max=NAME_MAX,
        no_trunc=True, chown_restricted=True, case_insensitive=False, case_preserving=True))


async def COMMIT(ctx, args):
    fh = args.file
    fs, caller = ctx.service.resolve(ctx, fh)
    verf, w = await fs.commit(fh, caller, args.offset, args.count)
    return nfs3.COMMIT3res(OK, nfs3.COMMIT3resok(wcc(w), verf))


# --- Failures: the resfail arms ------------------------------------------------------
# ``failed(ctx, args, error, res)``: the result union ``res`` with the FsError's
# status and its resfail arm (``res.default``). A failure does not say how far
# the handler got, so the handles are resolved again (the registry caches the
# answer): attributes are only disclosed for a handle that resolves.


def _resolved(ctx, fh):
    try:
        return ctx.service.resolve(ctx, fh)[0]
    except FsError:
        return None


def _post(fs, fh):
    """Best-effort post-op attributes: none when the handle never resolved
    (nothing may be disclosed) or the object is gone."""
    if fs is None:
        return None
    try:
        return fattr(fs.getattr(fh))
    except FsError:
        return None


def status_only(ctx, args, e, res):
    return res(status_of(e))


def post_op_of(handle):
    """The resfail arm is the post_op_attr of the object ``handle`` (an
    attribute path into the arguments, e.g. "what.dir") names."""
    handle_of = operator.attrgetter(handle)

    def failed(ctx, args, e, res):
        fh = handle_of(args)
        return res(status_of(e), res.default(_post(_resolved(ctx, fh), fh)))
    return failed


def wcc_of(handle):
    """The resfail arm is the wcc_data of the object ``handle`` names."""
    handle_of = operator.attrgetter(handle)

    def failed(ctx, args, e, res):
        fh = handle_of(args)
        return res(status_of(e), res.default(wcc_data(None, _post(_resolved(ctx, fh), fh))))
    return failed


def rename_failed(ctx, args, e, res):
    f, t = args.from_, args.to
    fs = _resolved(ctx, f.dir)
    fs_to = None if fs is None else _resolved(ctx, t.dir)
    return res(status_of(e), nfs3.RENAME3resfail(
        wcc_data(None, _post(fs, f.dir)), wcc_data(None, _post(fs_to, t.dir))))


def link_failed(ctx, args, e, res):
    fh, d = args.file, args.link.dir
    fs = _resolved(ctx, fh)
    fs_dir = None if fs is None else _resolved(ctx, d)
    return res(status_of(e), nfs3.LINK3resfail(_post(fs, fh), wcc_data(None, _post(fs_dir, d))))


# --- The table ---------------------------------------------------------------------
# "cached": replayed, these would fail (EXIST, NOENT) or redo a change after
# another client's, so their replies go to the duplicate request cache.

P = NFSPROC3
PROCEDURES = procedure_table([
    # procedure     arguments         results          handler      cached on FsError
    (P.NULL,        Void,             Void,            NULL,        False, None),
    (P.GETATTR,     GETATTR3args,     GETATTR3res,     GETATTR,     False, status_only),
    (P.SETATTR,     SETATTR3args,     SETATTR3res,     SETATTR,     True,  wcc_of("object")),
    (P.LOOKUP,      LOOKUP3args,      LOOKUP3res,      LOOKUP,      False, post_op_of("what.dir")),
    (P.ACCESS,      ACCESS3args,      ACCESS3res,      ACCESS,      False, post_op_of("object")),
    (P.READLINK,    READLINK3args,    READLINK3res,    READLINK,    False, post_op_of("symlink")),
    (P.READ,        READ3args,        READ3res,        READ,        False, post_op_of("file")),
    (P.WRITE,       WRITE3args,       WRITE3res,       WRITE,       True,  wcc_of("file")),
    (P.CREATE,      CREATE3args,      CREATE3res,      CREATE,      True,  wcc_of("where.dir")),
    (P.MKDIR,       MKDIR3args,       MKDIR3res,       MKDIR,       True,  wcc_of("where.dir")),
    (P.SYMLINK,     SYMLINK3args,     SYMLINK3res,     SYMLINK,     True,  wcc_of("where.dir")),
    (P.MKNOD,       MKNOD3args,       MKNOD3res,       MKNOD,       True,  wcc_of("where.dir")),
    (P.REMOVE,      REMOVE3args,      REMOVE3res,      REMOVE,      True,  wcc_of("object.dir")),
    (P.RMDIR,       RMDIR3args,       RMDIR3res,       RMDIR,       True,  wcc_of("object.dir")),
    (P.RENAME,      RENAME3args,      RENAME3res,      RENAME,      True,  rename_failed),
    (P.LINK,        LINK3args,        LINK3res,        LINK,        True,  link_failed),
    (P.READDIR,     READDIR3args,     READDIR3res,     READDIR,     False, post_op_of("dir")),
    (P.READDIRPLUS, READDIRPLUS3args, READDIRPLUS3res, READDIRPLUS, False, post_op_of("dir")),
    (P.FSSTAT,      FSSTAT3args,      FSSTAT3res,      FSSTAT,      False, post_op_of("fsroot")),
    (P.FSINFO,      FSINFO3args,      FSINFO3res,      FSINFO,      False, post_op_of("fsroot")),
    (P.PATHCONF,    PATHCONF3args,    PATHCONF3res,    PATHCONF,    False, post_op_of("object")),
    (P.COMMIT,      COMMIT3args,      COMMIT3res,      COMMIT,      False, wcc_of("file")),
], error_type=FsError)
del P
