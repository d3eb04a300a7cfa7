"""The NFS version 3 service (RFC 1813 section 3) on top of MetaFS.

``procedures(resolver)`` gives the dispatcher one Procedure per NFSPROC3
number. Each handler resolves its handle(s) to (MetaFS, Caller), calls MetaFS,
and turns the outcome into the procedure's result union. An FsError becomes the
union's status with the resfail arm filled as far as the server can (post-op
attributes fetched again; MetaFS does not report pre-op attributes of a failed
change); anything else escapes to the dispatcher, which answers SYSTEM_ERR.
"""

import struct

from common import nfs3
from common.nfs3 import (
    FSF3_CANSETTIME, FSF3_HOMOGENEOUS, FSF3_LINK, FSF3_SYMLINK, NFSPROC3, createmode3, fattr3,
    ftype3, nfsstat3, nfstime3, specdata3, time_how, wcc_attr, wcc_data,
)
from nfspd import metafs, replies
from nfspd.dispatch import NO_REPLY, Encoded, Procedure, Wait
from nfspd.metafs import CreateHow, FileType, FsError, SetAttr

OK = nfsstat3.NFS3_OK

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

_NS = 1_000_000_000
_U32_MAX = 0xFFFFFFFF
_new = object.__new__  # XDR structs have __slots__; skips the generic __init__ on hot paths
_FTYPE3 = {int(t): ftype3(int(t)) for t in FileType}


def max_io(ctx):
    return MAX_IO_TCP if ctx.transport == "tcp" else MAX_IO_UDP


def data_io(ctx, fs):
    """rtmax/wtmax: the data path may want less (over UDP with iods: what keeps
    an aligned READ or WRITE within one stripe)."""
    io = fs.max_io(ctx.transport)
    return max_io(ctx) if io is None else min(io, max_io(ctx))


def _read_failed(xid, attrs):
    """The reply to send when the iod a READ was forwarded to answers an error."""
    def reply(code, message):
        status = status_of(metafs.fs_error_of(OSError(code, message)))
        return replies.encode(xid, nfs3.READ3res, nfs3.READ3res(status, nfs3.READ3resfail(attrs)))
    return reply


def _write_failed(xid, w):
    def reply(code, message):
        status = status_of(metafs.fs_error_of(OSError(code, message)))
        fail = nfs3.WRITE3resfail(wcc_data(None, post_op(w.post)))
        return replies.encode(xid, nfs3.WRITE3res, nfs3.WRITE3res(status, fail))
    return reply


# --- Conversions between MetaFS values and RFC 1813 types ---------------------


def time3(ns):
    """nfstime3 seconds are unsigned 32 bits: times outside 1970..2106 wrap, as
    Linux's nfsd sends them (rather than failing the whole reply)."""
    s, n = divmod(ns, _NS)
    t = _new(nfstime3)
    t.seconds = s & _U32_MAX
    t.nseconds = n
    return t


def time_ns(t):
    if t.nseconds >= _NS:
        raise FsError(nfsstat3.NFS3ERR_INVAL, "nseconds out of range")
    return t.seconds * _NS + t.nseconds


def fattr(a):
    """metafs.Attr -> fattr3 (called for nearly every reply, hence by hand)."""
    f = _new(fattr3)
    f.type = _FTYPE3[a.type]
    f.mode = a.mode & 0o7777
    f.nlink = a.nlink
    f.uid = a.uid
    f.gid = a.gid
    f.size = a.size
    f.used = a.used
    rdev = f.rdev = _new(specdata3)
    rdev.specdata1 = a.rdev_major
    rdev.specdata2 = a.rdev_minor
    f.fsid = a.fsid
    f.fileid = a.fileid
    f.atime = time3(a.atime_ns)
    f.mtime = time3(a.mtime_ns)
    f.ctime = time3(a.ctime_ns)
    return f


_fattr3_pack = nfs3.fattr3_wire.pack
_u32 = struct.Struct(">I").pack
_OK_WORD = _u32(OK)
_TRUE_WORD = _u32(1)
_FALSE_WORD = _u32(0)
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


def fattr3_bytes(a):
    """metafs.Attr -> the XDR of its fattr3, what fattr() then packing gives."""
    at, mt, ct = a.atime_ns, a.mtime_ns, a.ctime_ns
    return _fattr3_pack(a.type, a.mode & 0o7777, a.nlink, a.uid, a.gid, a.size, a.used,
                        a.rdev_major, a.rdev_minor, a.fsid, a.fileid,
                        (at // _NS) & _U32_MAX, at % _NS, (mt // _NS) & _U32_MAX, mt % _NS,
                        (ct // _NS) & _U32_MAX, ct % _NS)


def post_op(a):
    return None if a is None else fattr(a)


def wcc(w):
    """metafs.Wcc -> wcc_data."""
    pre = w.pre
    before = None if pre is None else wcc_attr(pre.size, time3(pre.mtime_ns), time3(pre.ctime_ns))
    return wcc_data(before, post_op(w.post))


def _set_time(how):
    if how.disc == time_how.SET_TO_CLIENT_TIME:
        return time_ns(how.body)
    if how.disc == time_how.SET_TO_SERVER_TIME:
        return metafs.SET_TO_SERVER_TIME
    return None


def to_setattr(s):
    """sattr3 -> metafs.SetAttr. File type bits in a mode are ignored, as the
    mode3 of an existing object cannot change its type."""
    return SetAttr(mode=None if s.mode is None else s.mode & 0o7777, uid=s.uid, gid=s.gid,
                   size=s.size, atime=_set_time(s.atime), mtime=_set_time(s.mtime))


def status_of(e):
    # An FsError claiming success would select the resok arm for a resfail body.
    return e.status if e.status != OK else nfsstat3.NFS3ERR_SERVERFAULT


def _post(fs, fh):
    """Best-effort post-op attributes for a resfail arm: none when the handle
    never resolved (nothing may be disclosed) or the object is gone."""
    if fs is None:
        return None
    try:
        return fattr(fs.getattr(fh))
    except FsError:
        return None


def _failed_wcc(fs, fh):
    return wcc_data(None, _post(fs, fh))


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


# --- The procedures ------------------------------------------------------------


def procedures(resolver):
    """{NFSPROC3 number: Procedure} for the dispatcher. ``resolver.resolve(ctx, fh)``
    returns (MetaFS, Caller) or raises FsError (BADHANDLE, STALE, ACCES, PERM)."""
    resolve = resolver.resolve

    def NULL(ctx, args):
        return None

    def GETATTR(ctx, args):
        try:
            fs, _ = resolve(ctx, args.object)
            attr = fs.getattr(args.object)
        except FsError as e:
            return nfs3.GETATTR3res(status_of(e))
        return Encoded(_OK_WORD + fattr3_bytes(attr))

    def SETATTR(ctx, args):
        fh, fs = args.object, None
        try:
            fs, caller = resolve(ctx, fh)
            sattr = to_setattr(args.new_attributes)
            guard = None if args.guard is None else time_ns(args.guard)
            w = fs.setattr(fh, caller, sattr, guard_ctime_ns=guard)
        except FsError as e:
            return nfs3.SETATTR3res(status_of(e), nfs3.SETATTR3resfail(_failed_wcc(fs, fh)))
        return nfs3.SETATTR3res(OK, nfs3.SETATTR3resok(wcc(w)))

    def LOOKUP(ctx, args):
        d, name, fs = args.what.dir, args.what.name, None
        try:
            fs, caller = resolve(ctx, d)
            fh, attr, dattr = fs.lookup(d, name, caller)
        except FsError as e:
            return nfs3.LOOKUP3res(status_of(e), nfs3.LOOKUP3resfail(_post(fs, d)))
        n = len(fh)
        if n > nfs3.NFS3_FHSIZE:
            return nfs3.LOOKUP3res(OK, nfs3.LOOKUP3resok(fh, fattr(attr), post_op(dattr)))
        return Encoded(b"".join((
            _OK_WORD, _u32(n), fh, _PAD[n & 3], _TRUE_WORD, fattr3_bytes(attr),
            _FALSE_WORD if dattr is None else _TRUE_WORD + fattr3_bytes(dattr))))

    def ACCESS(ctx, args):
        fh, fs = args.object, None
        try:
            fs, caller = resolve(ctx, fh)
            granted, attr = fs.access(fh, caller, args.access)
        except FsError as e:
            return nfs3.ACCESS3res(status_of(e), nfs3.ACCESS3resfail(_post(fs, fh)))
        # The reply may only grant what was asked (RFC 1813 3.3.4).
        return Encoded(_OK_WORD + _TRUE_WORD + fattr3_bytes(attr) + _u32(granted & args.access))

    def READLINK(ctx, args):
        fh, fs = args.symlink, None
        try:
            fs, caller = resolve(ctx, fh)
            target, attr = fs.readlink(fh, caller)
        except FsError as e:
            return nfs3.READLINK3res(status_of(e), nfs3.READLINK3resfail(_post(fs, fh)))
        return nfs3.READLINK3res(OK, nfs3.READLINK3resok(fattr(attr), target))

    def READ(ctx, args):
        """Over UDP the READ is usually forwarded to an iod: then nothing here
        waits, and the call is done at once; otherwise it goes on as a task."""
        fh, fs = args.file, None
        try:
            fs, caller = resolve(ctx, fh)
            # A server may return less than asked; rtmax is the most it offers.
            count = min(args.count, data_io(ctx, fs))
            if ctx.transport != "udp" or not fs.forwards:
                return Wait(_read, fs, caller, fh, args.offset, count)
            # Cut at the stripe boundary, so one iod holds it all (a short
            # read, which the client continues), and let that iod answer.
            plan = fs.read_plan_now(fh, caller, args.offset, count, at_stripe=True)
            if plan is None:
                return Wait(_read_forwarded, ctx, fs, caller, fh, args.offset, count)
            if not plan.count:  # at or past the end: no data to fetch
                return nfs3.READ3res(OK, nfs3.READ3resok(fattr(plan.attr), 0, bool(plan.eof), b""))
            if _forwarded(ctx, fs, plan):
                return NO_REPLY
        except FsError as e:
            return nfs3.READ3res(status_of(e), nfs3.READ3resfail(_post(fs, fh)))
        return Wait(_relay, fs, fh, plan)

    def _forwarded(ctx, fs, plan):
        if not plan.count:
            return False
        attrs = fattr(plan.attr)
        head = replies.read3_head(ctx.xid, attrs, plan.count, plan.eof)
        return fs.forward_read(plan, head, ctx, _read_failed(ctx.xid, attrs))

    async def _read_forwarded(ctx, fs, caller, fh, offset, count):
        try:
            plan = await fs.read_plan(fh, caller, offset, count, at_stripe=True)
            if _forwarded(ctx, fs, plan):
                return NO_REPLY
        except FsError as e:
            return nfs3.READ3res(status_of(e), nfs3.READ3resfail(_post(fs, fh)))
        return await _relay(fs, fh, plan)

    async def _relay(fs, fh, plan):
        try:
            data = await fs.read_data(plan)
        except FsError as e:
            return nfs3.READ3res(status_of(e), nfs3.READ3resfail(_post(fs, fh)))
        return nfs3.READ3res(OK, nfs3.READ3resok(fattr(plan.attr), len(data), bool(plan.eof), data))

    async def _read(fs, caller, fh, offset, count):
        try:
            data, eof, attr = await fs.read(fh, caller, offset, count)
        except FsError as e:
            return nfs3.READ3res(status_of(e), nfs3.READ3resfail(_post(fs, fh)))
        return nfs3.READ3res(OK, nfs3.READ3resok(fattr(attr), len(data), bool(eof), data))

    def WRITE(ctx, args):
        """Like READ: a WRITE forwarded to an iod is done at once."""
        fh, fs = args.file, None
        try:
            fs, caller = resolve(ctx, fh)
            if args.count != len(args.data):
                raise FsError(nfsstat3.NFS3ERR_INVAL, "count does not match the data length")
            data = args.data
            plan = fs.write_plan_now(fh, caller, args.offset, len(data), args.stable)
            if plan is None:
                return Wait(_write, ctx, fs, caller, fh, args)
            if _write_forwarded(ctx, fs, plan, data):
                return NO_REPLY
        except FsError as e:
            return nfs3.WRITE3res(status_of(e), nfs3.WRITE3resfail(_failed_wcc(fs, fh)))
        return Wait(_write_data, fs, fh, plan, data)

    def _write_forwarded(ctx, fs, plan, data):
        if ctx.transport != "udp" or not fs.forwards or not data:
            return False
        ok = nfs3.WRITE3res(OK, nfs3.WRITE3resok(
            wcc(plan.wcc), len(data), nfs3.stable_how(plan.committed), fs.verifier))
        reply = replies.encode(ctx.xid, nfs3.WRITE3res, ok)
        return fs.forward_write(plan, data, reply, ctx, _write_failed(ctx.xid, plan.wcc))

    async def _write(ctx, fs, caller, fh, args):
        data = args.data
        try:
            plan = await fs.write_plan(fh, caller, args.offset, len(data), args.stable)
            if _write_forwarded(ctx, fs, plan, data):
                return NO_REPLY
        except FsError as e:
            return nfs3.WRITE3res(status_of(e), nfs3.WRITE3resfail(_failed_wcc(fs, fh)))
        return await _write_data(fs, fh, plan, data)

    async def _write_data(fs, fh, plan, data):
        try:
            verf = await fs.write_data(plan, data)
        except FsError as e:
            return nfs3.WRITE3res(status_of(e), nfs3.WRITE3resfail(_failed_wcc(fs, fh)))
        return nfs3.WRITE3res(OK, nfs3.WRITE3resok(
            wcc(plan.wcc), len(data), nfs3.stable_how(plan.committed), verf))

    def _created(res, resok, resfail, make):
        """CREATE, MKDIR, SYMLINK and MKNOD differ only in how they make the object."""
        def handler(ctx, args):
            d, name, fs = args.where.dir, args.where.name, None
            try:
                fs, caller = resolve(ctx, d)
                fh, attr, w = make(fs, d, name, caller, args)
            except FsError as e:
                return res(status_of(e), resfail(_failed_wcc(fs, d)))
            return res(OK, resok(fh, fattr(attr), wcc(w)))
        return handler

    def _create(fs, d, name, caller, args):
        how = args.how
        if how.disc == createmode3.EXCLUSIVE:
            return fs.create(d, name, caller, CreateHow.EXCLUSIVE, SetAttr(), verf=how.body)
        return fs.create(d, name, caller, CreateHow(int(how.disc)), to_setattr(how.body))

    def _mkdir(fs, d, name, caller, args):
        return fs.mkdir(d, name, caller, to_setattr(args.attributes))

    def _symlink(fs, d, name, caller, args):
        s = args.symlink
        return fs.symlink(d, name, caller, s.symlink_data, to_setattr(s.symlink_attributes))

    def _mknod(fs, d, name, caller, args):
        what = args.what
        if what.disc in (ftype3.NF3CHR, ftype3.NF3BLK):
            dev = what.body
            return fs.mknod(d, name, caller, FileType(int(what.disc)),
                            to_setattr(dev.dev_attributes),
                            rdev=(dev.spec.specdata1, dev.spec.specdata2))
        if what.disc in (ftype3.NF3SOCK, ftype3.NF3FIFO):
            return fs.mknod(d, name, caller, FileType(int(what.disc)), to_setattr(what.body))
        raise FsError(nfsstat3.NFS3ERR_BADTYPE, f"MKNOD of {what.disc.name}")

    CREATE = _created(nfs3.CREATE3res, nfs3.CREATE3resok, nfs3.CREATE3resfail, _create)
    MKDIR = _created(nfs3.MKDIR3res, nfs3.MKDIR3resok, nfs3.MKDIR3resfail, _mkdir)
    SYMLINK = _created(nfs3.SYMLINK3res, nfs3.SYMLINK3resok, nfs3.SYMLINK3resfail, _symlink)
    MKNOD = _created(nfs3.MKNOD3res, nfs3.MKNOD3resok, nfs3.MKNOD3resfail, _mknod)

    def _removed(res, resok, resfail, method):
        def handler(ctx, args):
            d, name, fs = args.object.dir, args.object.name, None
            try:
                fs, caller = resolve(ctx, d)
                w = getattr(fs, method)(d, name, caller)
            except FsError as e:
                return res(status_of(e), resfail(_failed_wcc(fs, d)))
            return res(OK, resok(wcc(w)))
        return handler

    REMOVE = _removed(nfs3.REMOVE3res, nfs3.REMOVE3resok, nfs3.REMOVE3resfail, "remove")
    RMDIR = _removed(nfs3.RMDIR3res, nfs3.RMDIR3resok, nfs3.RMDIR3resfail, "rmdir")

    def _xdev(fs, fs2):
        # Objects in different exports cannot be renamed or linked across.
        if fs2 is not fs:
            raise FsError(nfsstat3.NFS3ERR_XDEV)

    def RENAME(ctx, args):
        f, t = args.from_, args.to
        fs = fs_to = None
        try:
            fs, caller = resolve(ctx, f.dir)
            fs_to, _ = resolve(ctx, t.dir)
            _xdev(fs, fs_to)
            wf, wt = fs.rename(f.dir, f.name, t.dir, t.name, caller)
        except FsError as e:
            return nfs3.RENAME3res(status_of(e), nfs3.RENAME3resfail(
                _failed_wcc(fs, f.dir), _failed_wcc(fs_to, t.dir)))
        return nfs3.RENAME3res(OK, nfs3.RENAME3resok(wcc(wf), wcc(wt)))

    def LINK(ctx, args):
        fh, d, name = args.file, args.link.dir, args.link.name
        fs = fs_dir = None
        try:
            fs, caller = resolve(ctx, fh)
            fs_dir, _ = resolve(ctx, d)
            _xdev(fs, fs_dir)
            attr, w = fs.link(fh, d, name, caller)
        except FsError as e:
            return nfs3.LINK3res(status_of(e), nfs3.LINK3resfail(
                _post(fs, fh), _failed_wcc(fs_dir, d)))
        return nfs3.LINK3res(OK, nfs3.LINK3resok(fattr(attr), wcc(w)))

    def READDIR(ctx, args):
        d, fs = args.dir, None
        try:
            fs, caller = resolve(ctx, d)
            limit = min(args.count, max_io(ctx))
            want = max(limit - _RESOK_FIXED, 0) // _ENTRY_MIN + 1
            entries, eof, verf, dattr = fs.readdir(d, args.cookie, args.cookieverf, caller, want)
            size, n = _RESOK_FIXED, 0
            for e in entries:
                size += _entry_size(e.name)
                if size > limit:
                    break
                n += 1
            n = _cut(entries, n)
            if entries and not n:
                raise FsError(nfsstat3.NFS3ERR_TOOSMALL)
        except FsError as e:
            return nfs3.READDIR3res(status_of(e), nfs3.READDIR3resfail(_post(fs, d)))
        out = [nfs3.entry3(e.fileid, e.name, e.cookie) for e in entries[:n]]
        # eof only if nothing fetched was left out.
        reply = nfs3.dirlist3(out, bool(eof) and n == len(entries))
        return nfs3.READDIR3res(OK, nfs3.READDIR3resok(post_op(dattr), verf, reply))

    def READDIRPLUS(ctx, args):
        d, fs = args.dir, None
        try:
            fs, caller = resolve(ctx, d)
            limit = min(args.maxcount, max_io(ctx))
            # Sized for entries with attributes and a handle like the directory's.
            typical = _ENTRY_MIN + _POST_OP_ATTR + 4 + _pad4(len(d))
            want = min(args.dircount // _ENTRY_MIN, max(limit - _RESOK_FIXED, 0) // typical) + 1
            entries, eof, verf, dattr = fs.readdir(d, args.cookie, args.cookieverf, caller, want)
            size, dirsize = _RESOK_FIXED, 0
            out = []
            for e in entries:
                esize = _entry_size(e.name)
                # dircount covers the entry3 part only. The first entry is always
                # let through by it, so a tiny dircount still makes progress;
                # TOOSMALL is about maxcount alone.
                if out and dirsize + esize > args.dircount:
                    break
                try:
                    fh, attr, _ = fs.lookup(d, e.name, caller)
                    attrs = fattr(attr)
                except FsError:
                    fh = attrs = None  # gone meanwhile or not searchable: name and fileid still go
                size += esize + 4 + 4
                if attrs is not None:
                    size += 84
                if fh is not None:
                    size += 4 + _pad4(len(fh))
                if size > limit:
                    break
                dirsize += esize
                out.append(nfs3.entryplus3(e.fileid, e.name, e.cookie, attrs, fh))
            n = _cut(entries, len(out))
            if entries and not n:
                raise FsError(nfsstat3.NFS3ERR_TOOSMALL)
        except FsError as e:
            return nfs3.READDIRPLUS3res(status_of(e), nfs3.READDIRPLUS3resfail(_post(fs, d)))
        reply = nfs3.dirlistplus3(out[:n], bool(eof) and n == len(entries))
        return nfs3.READDIRPLUS3res(OK, nfs3.READDIRPLUS3resok(post_op(dattr), verf, reply))

    def FSSTAT(ctx, args):
        fh, fs = args.fsroot, None
        try:
            fs, _ = resolve(ctx, fh)
            st = fs.fsstat(fh)
            attr = fs.getattr(fh)
        except FsError as e:
            return nfs3.FSSTAT3res(status_of(e), nfs3.FSSTAT3resfail(_post(fs, fh)))
        return nfs3.FSSTAT3res(OK, nfs3.FSSTAT3resok(
            fattr(attr), st.tbytes, st.fbytes, st.abytes, st.tfiles, st.ffiles, st.afiles, 0))

    def FSINFO(ctx, args):
        fh, fs = args.fsroot, None
        try:
            fs, _ = resolve(ctx, fh)
            attr = fs.getattr(fh)
        except FsError as e:
            return nfs3.FSINFO3res(status_of(e), nfs3.FSINFO3resfail(_post(fs, fh)))
        io = data_io(ctx, fs)
        return nfs3.FSINFO3res(OK, nfs3.FSINFO3resok(
            obj_attributes=fattr(attr), rtmax=io, rtpref=io, rtmult=4096,
            wtmax=io, wtpref=io, wtmult=4096, dtpref=min(DTPREF, max_io(ctx)),
            maxfilesize=MAXFILESIZE, time_delta=TIME_DELTA, properties=PROPERTIES))

    def PATHCONF(ctx, args):
        fh, fs = args.object, None
        try:
            fs, _ = resolve(ctx, fh)
            attr = fs.getattr(fh)
        except FsError as e:
            return nfs3.PATHCONF3res(status_of(e), nfs3.PATHCONF3resfail(_post(fs, fh)))
        return nfs3.PATHCONF3res(OK, nfs3.PATHCONF3resok(
            obj_attributes=fattr(attr),
            linkmax=_pathconf(fs, fh, "PC_LINK_MAX", LINK_MAX_DEFAULT), name_max=NAME_MAX,
            no_trunc=True, chown_restricted=True, case_insensitive=False, case_preserving=True))

    async def COMMIT(ctx, args):
        fh, fs = args.file, None
        try:
            fs, caller = resolve(ctx, fh)
            verf, w = await fs.commit(fh, caller, args.offset, args.count)
        except FsError as e:
            return nfs3.COMMIT3res(status_of(e), nfs3.COMMIT3resfail(_failed_wcc(fs, fh)))
        return nfs3.COMMIT3res(OK, nfs3.COMMIT3resok(wcc(w), verf))

    handlers = {
        NFSPROC3.NULL: NULL, NFSPROC3.GETATTR: GETATTR, NFSPROC3.SETATTR: SETATTR,
        NFSPROC3.LOOKUP: LOOKUP, NFSPROC3.ACCESS: ACCESS, NFSPROC3.READLINK: READLINK,
        NFSPROC3.READ: READ, NFSPROC3.WRITE: WRITE, NFSPROC3.CREATE: CREATE,
        NFSPROC3.MKDIR: MKDIR, NFSPROC3.SYMLINK: SYMLINK, NFSPROC3.MKNOD: MKNOD,
        NFSPROC3.REMOVE: REMOVE, NFSPROC3.RMDIR: RMDIR, NFSPROC3.RENAME: RENAME,
        NFSPROC3.LINK: LINK, NFSPROC3.READDIR: READDIR, NFSPROC3.READDIRPLUS: READDIRPLUS,
        NFSPROC3.FSSTAT: FSSTAT, NFSPROC3.FSINFO: FSINFO, NFSPROC3.PATHCONF: PATHCONF,
        NFSPROC3.COMMIT: COMMIT,
    }
    return {
        int(num): Procedure(name, args_type, res_type, handlers[num],
                            idempotent=num not in NON_IDEMPOTENT)
        for num, (name, args_type, res_type) in nfs3.PROCEDURES.items()
    }


# Replayed, these would fail (EXIST, NOENT) or redo a change after another
# client's, so their replies go to the duplicate request cache.
NON_IDEMPOTENT = frozenset({
    NFSPROC3.SETATTR, NFSPROC3.WRITE, NFSPROC3.CREATE, NFSPROC3.MKDIR, NFSPROC3.SYMLINK,
    NFSPROC3.MKNOD, NFSPROC3.REMOVE, NFSPROC3.RMDIR, NFSPROC3.RENAME, NFSPROC3.LINK,
})
