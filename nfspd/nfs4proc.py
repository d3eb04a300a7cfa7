"""The NFSv4.1/4.2 operations (RFC 8881 section 18, RFC 7862 section 15): one
function per operation, named as the RFC names it, and OPERATIONS, the table
the COMPOUND loop (nfspd/nfs4compound.py) runs them from.

An operation takes the request's Compound ``c`` (current and saved
filehandles, the session) and its decoded arguments, and returns the body of
its success arm; it fails by raising Nfs4Error, or FsError from the
file-system layer (mapped by the loop). Files are the exports' MetaFS objects
with the same handles, permission checks and data path as NFSv3 (a READ or
WRITE runs through MetaFS's read/write halves, as nfs3proc's TCP relay does);
the directories above the exports are the pseudo file system's
(nfspd/nfs4pseudo.py), which ``c.current_fs`` None marks. Client, session,
open/lock and layout state are nfspd/nfs4state.py's, reached through
``c.server``; the pNFS operations (LAYOUTGET, GETDEVICEINFO, LAYOUTRETURN,
LAYOUTCOMMIT) hand out the iods' data servers through nfspd/pnfs.py, and
answer NOTSUPP with --no-pnfs or without iods.
"""

import logging

from common import fileslayout, nfs4
from common.nfs3 import (
    ACCESS3_DELETE,
    ACCESS3_EXECUTE,
    ACCESS3_EXTEND,
    ACCESS3_LOOKUP,
    ACCESS3_MODIFY,
    ACCESS3_READ,
    nfsstat3,
)
from common.nfs4 import (
    NFSPROC4,
    OPEN4_RESULT_LOCKTYPE_POSIX,
    OPEN4_RESULT_PRESERVE_UNLINKED,
    OPEN4_SHARE_ACCESS_BOTH,
    OPEN4_SHARE_ACCESS_READ,
    OPEN4_SHARE_ACCESS_WRITE,
    change_info4,
    createmode4,
    data_content4,
    layoutiomode4,
    layoutreturn_type4,
    nfs_ftype4,
    nfs_opnum4,
    nfsstat4,
    open_claim_type4,
    opentype4,
)
from common.xdr import Void
from nfspd import nfs4attrs
from nfspd.dispatch import Encoded, procedure_table
from nfspd.fs.access import may_read, may_write
from nfspd.fs.types import (
    FILE_SYNC,
    SET_TO_SERVER_TIME,
    CreateHow,
    FileType,
    FsError,
    SetAttr,
    Wcc,
)
from nfspd.nfs3proc import data_io
from nfspd.nfs4compound import (
    CompoundArgs,
    Later,
    Nfs4Error,
    Op,
    compound,
    status_of_fs,
)
from nfspd.nfs4pseudo import is_pseudo, mounted_on_fileid

log = logging.getLogger(__name__)

AUTH_SYS = 1
ACCESS4_ALL = (ACCESS3_READ | ACCESS3_LOOKUP | ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_DELETE
               | ACCESS3_EXECUTE)
READDIR_MAX_ENTRIES = 512
# MetaFS lists "." and ".." first (cookies 1 and 2); NFSv4 READDIR never does.
_DOT_NAMES = (b".", b"..")


# --- helpers ---------------------------------------------------------------------------


def _real(c, in_pseudo=nfsstat4.NFS4ERR_ROFS):
    """(fh, MetaFS, Caller) for an operation that needs an object of an
    export. The pseudo file system holds only directories nobody may change:
    there a change is ROFS, and what needs a file gets ``in_pseudo``."""
    fh, fs = c.fh()
    if fs is None:
        raise Nfs4Error(in_pseudo)
    fs, caller = c.ctx.service.resolve(c.ctx, fh)
    return fh, fs, caller


def _cinfo(w):
    """change_info4 of a directory from its Wcc (not atomic: the two values
    are read apart from the change)."""
    def change(a):
        return 0 if a is None else nfs4attrs.change_of(a.size, a.mtime_ns, a.ctime_ns)
    if w is None:
        return change_info4(False, 0, 0)
    return change_info4(False, change(w.pre), change(w.post))


def _name(c, name):
    """A component4 as MetaFS takes it: INVAL for empty, BADNAME for "/" or NUL,
    NAMETOOLONG beyond 255 bytes (RFC 8881 18.*: ERRORS of each operation)."""
    name = bytes(name)
    if not name:
        raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
    if b"/" in name or b"\0" in name:
        raise Nfs4Error(nfsstat4.NFS4ERR_BADNAME)
    if len(name) > nfs4attrs.NAME_MAX:
        raise Nfs4Error(nfsstat4.NFS4ERR_NAMETOOLONG)
    return name


def _dir_name(c, name):
    """A name to look up: "." and ".." are not names in NFSv4 (LOOKUPP is)."""
    name = _name(c, name)
    if name in _DOT_NAMES:
        raise Nfs4Error(nfsstat4.NFS4ERR_BADNAME)
    return name


def obj_of(c, fh, fs, attr=None):
    """An nfs4attrs.Obj for a handle: a pseudo directory when fs is None."""
    server = c.server
    if fs is None:
        view = c.view
        return nfs4attrs.Obj(fh, view.attr(fh), None, server.pseudo_fsid, None, server.attrs)
    if attr is None:
        attr = fs.getattr(fh)
    mounted_on = mounted_on_fileid(fs.export_path) if fh == fs.root_fh else None
    return nfs4attrs.Obj(fh, attr, fs, (attr.fsid, 0), mounted_on, server.attrs_for(c, fh))


def fattr_of(obj, words):
    """The fattr4 of the attributes bitmap4 ``words`` asks (those supported)."""
    return nfs4.encode_attrs(nfs4attrs.values(obj, words))


def _stateid(c, sid):
    return c.resolve_stateid(sid)


def _check_io_stateid(c, sid, fh, write):
    c.server.check_stateid(c, _stateid(c, sid), fh, write)


# --- the operations, in RFC 8881 section 18's order ------------------------------------


def ACCESS(c, args):
    fh, fs = c.fh()
    asked = args.access
    supported = asked & ACCESS4_ALL
    if fs is None:
        granted = supported & (ACCESS3_READ | ACCESS3_LOOKUP | ACCESS3_EXECUTE)
    else:
        fs, caller = c.ctx.service.resolve(c.ctx, fh)
        granted, _ = fs.access(fh, caller, supported)
    return nfs4.ACCESS4resok(supported, granted & supported)


def CLOSE(c, args):
    fh, _ = c.fh()
    sid = c.server.state_close(c, _stateid(c, args.open_stateid), fh)
    return Encoded(nfs4.stateid4_bytes(sid))


async def COMMIT(c, args):
    fh, fs, caller = _real(c, nfsstat4.NFS4ERR_ISDIR)
    verf, _ = await fs.commit(fh, caller, args.offset, args.count)
    return nfs4.COMMIT4resok(verf)


def CREATE(c, args):
    """Directories, symlinks, devices, sockets, fifos (regular files are OPEN's)."""
    dfh, fs, caller = _real(c)
    name = _dir_name(c, args.objname)
    given = nfs4.decode_attrs(args.createattrs)
    sattr = nfs4attrs.to_setattr(given, c.server.attrs.domain)
    t = args.objtype.disc
    if t == nfs_ftype4.NF4DIR:
        fh, _, w = fs.mkdir(dfh, name, caller, sattr)
    elif t == nfs_ftype4.NF4LNK:
        fh, _, w = fs.symlink(dfh, name, caller, bytes(args.objtype.body), sattr)
    elif t in (nfs_ftype4.NF4BLK, nfs_ftype4.NF4CHR):
        dev = args.objtype.body
        ftype = FileType.BLK if t == nfs_ftype4.NF4BLK else FileType.CHR
        fh, _, w = fs.mknod(dfh, name, caller, ftype, sattr,
                            rdev=(dev.specdata1, dev.specdata2))
    elif t in (nfs_ftype4.NF4SOCK, nfs_ftype4.NF4FIFO):
        ftype = FileType.SOCK if t == nfs_ftype4.NF4SOCK else FileType.FIFO
        fh, _, w = fs.mknod(dfh, name, caller, ftype, sattr)
    else:
        raise Nfs4Error(nfsstat4.NFS4ERR_BADTYPE)
    c.set_fh(fh, fs)
    return nfs4.CREATE4resok(_cinfo(w), nfs4attrs.bitmap(given))


def DELEGPURGE(c, args):
    raise Nfs4Error(nfsstat4.NFS4ERR_NOTSUPP)


def DELEGRETURN(c, args):
    c.fh()
    c.server.state_delegreturn(c, _stateid(c, args.deleg_stateid))


def GETATTR(c, args):
    fh, fs = c.fh()
    # GETATTR4resok is its fattr4 alone: packed by the bitmap's compiled encoder.
    attr = None if fs is None else c.attr()
    return Encoded(nfs4attrs.fattr4_bytes(obj_of(c, fh, fs, attr), args.attr_request))


def GETFH(c, args):
    fh, _ = c.fh()
    return Encoded(nfs4.getfh4resok_bytes(fh))


def LINK(c, args):
    """The saved filehandle (the file) gets a new name in the current one (a directory)."""
    if c.saved_fh is None:
        raise Nfs4Error(nfsstat4.NFS4ERR_NOFILEHANDLE)
    dfh, fs, caller = _real(c)
    src_fs = c.saved_fs
    if src_fs is None:
        raise Nfs4Error(nfsstat4.NFS4ERR_ISDIR)
    if src_fs is not fs:
        raise Nfs4Error(nfsstat4.NFS4ERR_XDEV)
    _, w = fs.link(c.saved_fh, dfh, _dir_name(c, args.newname), caller)
    return nfs4.LINK4resok(_cinfo(w))


def LOCK(c, args):
    fh, fs = c.fh()
    if fs is None:
        raise Nfs4Error(nfsstat4.NFS4ERR_ISDIR)
    _check_lock_target(c, fh, fs)
    sid = c.server.state_lock(c, fh, args)
    c.current_stateid = sid
    return nfs4.LOCK4resok(sid)


def LOCKT(c, args):
    fh, fs = c.fh()
    if fs is None:
        raise Nfs4Error(nfsstat4.NFS4ERR_ISDIR)
    _check_lock_target(c, fh, fs)
    c.server.state_lockt(c, fh, args)


def LOCKU(c, args):
    fh, _ = c.fh()
    sid = c.server.state_locku(c, fh, args, _stateid(c, args.lock_stateid))
    c.current_stateid = sid
    return sid


def _check_lock_target(c, fh, fs):
    attr = fs.getattr(fh)
    if attr.type == FileType.DIR:
        raise Nfs4Error(nfsstat4.NFS4ERR_ISDIR)
    if attr.type != FileType.REG:
        raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)


def _must_be_dir(c):
    """LOOKUP and LOOKUPP from a symlink are SYMLINK, from anything else NOTDIR."""
    kind = c.attr().type
    if kind == FileType.LNK:
        raise Nfs4Error(nfsstat4.NFS4ERR_SYMLINK)
    if kind != FileType.DIR:
        raise Nfs4Error(nfsstat4.NFS4ERR_NOTDIR)


def LOOKUP(c, args):
    fh, fs = c.fh()
    name = _dir_name(c, args.objname)
    if fs is None:
        nfh, nfs = c.view.lookup(fh, name)
        if nfs is not None:
            # Entering an export: its own rules (secure port, client match).
            c.ctx.service.resolve(c.ctx, nfh)
        c.set_fh(nfh, nfs)
        return
    fs, caller = c.ctx.service.resolve(c.ctx, fh)
    _must_be_dir(c)
    nfh, attr, _ = fs.lookup(fh, name, caller)
    c.set_fh(nfh, fs, attr)


def LOOKUPP(c, args):
    fh, fs = c.fh()
    if fs is None:
        nfh, nfs = c.view.lookupp(fh)
        c.set_fh(nfh, nfs)
        return
    fs, caller = c.ctx.service.resolve(c.ctx, fh)
    _must_be_dir(c)
    if fh == fs.root_fh:
        parent = c.view.parent_of_export(fs)
        if parent is None:
            raise Nfs4Error(nfsstat4.NFS4ERR_NOENT)
        c.set_fh(parent, None)
        return
    nfh, _, _ = fs.lookup(fh, b"..", caller)
    c.set_fh(nfh, fs)


def _verify(c, args):
    """Whether the attributes given equal the object's (VERIFY/NVERIFY)."""
    fh, fs = c.fh()
    given = nfs4.decode_attrs(args.obj_attributes)
    for n in given:
        if n not in nfs4attrs.SUPPORTED:
            raise Nfs4Error(nfsstat4.NFS4ERR_ATTRNOTSUPP)
        if n in nfs4attrs.WRITE_ONLY or n == nfs4.FATTR4_RDATTR_ERROR:
            raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)  # RFC 8881 18.31.3
    mine = nfs4attrs.values(obj_of(c, fh, fs), nfs4attrs.bitmap(given))
    return all(mine.get(n) == v for n, v in given.items())


def NVERIFY(c, args):
    if _verify(c, args):
        raise Nfs4Error(nfsstat4.NFS4ERR_SAME)


def OPEN(c, args):
    """Claims NULL (by name in the current directory), FH and PREVIOUS (the
    current file: PREVIOUS reclaims after a restart, in the grace period);
    DELEGATE_CUR/PREV name delegations this server never grants (NOTSUPP)."""
    claim = args.claim
    kind = claim.disc
    cinfo = change_info4(False, 0, 0)
    attrset = []
    created = truncated = False
    if kind != open_claim_type4.CLAIM_PREVIOUS:
        c.server.check_grace(c)
    if kind == open_claim_type4.CLAIM_NULL:
        name = _dir_name(c, claim.body)
        pfh, pfs = c.fh()
        if pfs is None and args.openhow.disc != opentype4.OPEN4_CREATE:
            c.view.lookup(pfh, name)  # NOENT, or else an export: a directory
            raise Nfs4Error(nfsstat4.NFS4ERR_ISDIR)
        dfh, fs, caller = _real(c)
        if args.openhow.disc == opentype4.OPEN4_CREATE:
            fh, attr, w, attrset, created = _open_create(c, fs, caller, dfh, name,
                                                         args.openhow.body)
            cinfo = _cinfo(w)
            # UNCHECKED4 with a size (O_TRUNC) cuts an existing file.
            truncated = not created and args.openhow.body.disc == createmode4.UNCHECKED4 \
                and nfs4.FATTR4_SIZE in nfs4.decode_attrs(args.openhow.body.body)
        else:
            dattr = fs.getattr(dfh)
            if dattr.type != FileType.DIR:
                raise Nfs4Error(nfsstat4.NFS4ERR_NOTDIR)
            fh, attr, _ = fs.lookup(dfh, name, caller)
    elif kind in (open_claim_type4.CLAIM_FH, open_claim_type4.CLAIM_PREVIOUS):
        fh, fs, caller = _real(c, nfsstat4.NFS4ERR_ISDIR)
        attr = fs.getattr(fh)
    else:
        raise Nfs4Error(nfsstat4.NFS4ERR_NOTSUPP)
    _open_type(attr)
    if not created:
        _open_permission(args.share_access, attr, caller)
    sid = c.server.state_open(c, fh, args, reclaim=kind == open_claim_type4.CLAIM_PREVIOUS)
    c.server.opened(c, fh, fs, sid)
    # The GETATTR after OPEN (Linux always sends one) takes the attributes
    # the open found or made, unless it cut the file.
    c.set_fh(fh, fs, None if truncated else attr)
    c.current_stateid = sid
    # No delegations here: OPEN4resok is packed in one go.
    resok = Encoded(nfs4.open4resok_bytes(
        sid, cinfo, OPEN4_RESULT_LOCKTYPE_POSIX | OPEN4_RESULT_PRESERVE_UNLINKED, attrset))
    if truncated:
        return _after_truncation(c, fh, resok)
    return resok


def _open_create(c, fs, caller, dfh, name, how):
    """OPEN4_CREATE: (fh, Attr, directory Wcc, attrset, created)."""
    mode = how.disc
    domain = c.server.attrs.domain
    if mode in (createmode4.UNCHECKED4, createmode4.GUARDED4):
        given = nfs4.decode_attrs(how.body)
        sattr = nfs4attrs.to_setattr(given, domain)
        cmode = CreateHow.UNCHECKED if mode == createmode4.UNCHECKED4 else CreateHow.GUARDED
        verf = None
    else:
        if mode == createmode4.EXCLUSIVE4:
            verf, given = bytes(how.body), {}
        else:
            verf = bytes(how.body.cva_verf)
            given = nfs4.decode_attrs(how.body.cva_attrs)
        sattr = nfs4attrs.to_setattr(given, domain, allowed=nfs4attrs.EXCLCREAT)
        cmode = CreateHow.EXCLUSIVE
    # A file that existed (UNCHECKED, or EXCLUSIVE's retry): the permission
    # check and attrset differ from one made now.
    fh, attr, w, created = fs.create_or_open(dfh, name, caller, cmode, sattr, verf=verf)
    if not created:
        return fh, attr, Wcc(w.post, w.post), [], False
    return fh, attr, w, nfs4attrs.bitmap(given), True


def _open_type(attr):
    if attr.type == FileType.DIR:
        raise Nfs4Error(nfsstat4.NFS4ERR_ISDIR)
    if attr.type == FileType.LNK:
        raise Nfs4Error(nfsstat4.NFS4ERR_SYMLINK)
    if attr.type != FileType.REG:
        raise Nfs4Error(nfsstat4.NFS4ERR_WRONG_TYPE)


def _open_permission(share_access, attr, caller):
    """An OPEN for reading needs read (or execute) permission, for writing
    write permission, with the owner override of READ and WRITE (access.py)."""
    access = share_access & OPEN4_SHARE_ACCESS_BOTH
    if access & OPEN4_SHARE_ACCESS_READ and not may_read(attr.mode, attr.uid, attr.gid, caller):
        raise Nfs4Error(nfsstat4.NFS4ERR_ACCESS)
    if access & OPEN4_SHARE_ACCESS_WRITE:
        if caller.readonly:
            raise Nfs4Error(nfsstat4.NFS4ERR_ROFS)
        if not may_write(attr.mode, attr.uid, attr.gid, caller):
            raise Nfs4Error(nfsstat4.NFS4ERR_ACCESS)


def OPENATTR(c, args):
    raise Nfs4Error(nfsstat4.NFS4ERR_NOTSUPP)


def OPEN_DOWNGRADE(c, args):
    fh, _ = c.fh()
    sid = c.server.state_open_downgrade(c, fh, _stateid(c, args.open_stateid), args)
    c.current_stateid = sid
    return nfs4.OPEN_DOWNGRADE4resok(sid)


def PUTFH(c, args):
    fh = bytes(args.object)
    if is_pseudo(fh):
        c.view.node(fh)  # STALE unless this client sees it
        c.set_fh(fh, None)
        return
    fs, _ = c.ctx.service.resolve(c.ctx, fh)
    # STALE now rather than at the next operation; what it fetched is the
    # GETATTR (or LOOKUP's directory check) that usually follows.
    c.set_fh(fh, fs, fs.getattr(fh))


def PUTPUBFH(c, args):
    PUTROOTFH(c, args)


def PUTROOTFH(c, args):
    fh, fs = c.view.root()
    c.set_fh(fh, fs)


async def READ(c, args):
    fh, fs, caller = _real(c, nfsstat4.NFS4ERR_ISDIR)
    _check_io_stateid(c, args.stateid, fh, write=False)
    count = min(args.count, data_io(c.ctx))
    data, eof, _ = await fs.read(fh, caller, args.offset, count)
    return nfs4.READ4resok(bool(eof), data)


def READDIR(c, args):
    """Entries with the attributes asked, never "." or "..", bounded by maxcount
    (the whole reply) and, when not 0, dircount (their names and cookies, as
    Linux's nfsd counts it; the first entry goes whatever its size)."""
    fh, fs = c.fh()
    wanted = args.attr_request
    maxcount = min(args.maxcount, c.server.attrs.max_io)
    # A reply's fixed part: status, verifier, list end, eof.
    size, limit = 4 + 8 + 4 + 4, maxcount
    if fs is None:
        return _readdir_pseudo(c, fh, args, wanted, size, limit)
    fs, caller = c.ctx.service.resolve(c.ctx, fh)
    # Each entry costs a lookup on the event loop: a page is kept to a few
    # hundred entries, however large the client's buffer (Linux's is 1 MiB).
    want = min(max(limit // 32, 1), READDIR_MAX_ENTRIES) + 2
    cookie, verf = args.cookie, bytes(args.cookieverf)
    encode, needs_fsstat = nfs4attrs.encoder(wanted)
    config = c.server.attrs_for(c, fh)
    # The same page asked again while nothing changed: the reply kept
    # (nfspd/fs/attrcache.py), unless it carries the file system's figures,
    # which the iods' data moves without a change here.
    pages = None if needs_fsstat else fs.listing_pages(fh, cookie, verf, caller)
    key = (cookie, verf, args.dircount, maxcount, tuple(wanted), config)
    if pages is not None:
        reply = pages.get(key)
        if reply is not None:
            return reply
    budget = args.dircount or None
    if budget is not None and cookie == 0:
        budget += 2 * _name_and_cookie(b"..")  # MetaFS's "." and "..", not sent
    rows = eof = None
    try:
        rows, eof, verf, _ = fs.readdirplus(fh, cookie, verf, caller, want, budget=budget,
                                            entry_size=_name_and_cookie)
    except FsError as e:
        if e.status != nfsstat3.NFS3ERR_TOOSMALL:
            raise
    if not eof and not any(r[0].name not in _DOT_NAMES for r in rows or ()):
        # Not one entry within dircount: one goes anyway (after the dots).
        rows, eof, verf, _ = fs.readdirplus(fh, cookie, verf, caller, 3 if cookie == 0 else 1)
    st = None
    if needs_fsstat:
        try:
            st = fs.fsstat(fh)
        except (FsError, OSError):
            encode = None  # figures unavailable: each entry the generic way, which leaves them out
    obj = nfs4attrs.Obj(None, None, fs, (fs.fsid, 0), None, config)
    out = []
    cut = None  # the cookie of the first entry left out
    for e, efh, eattr in rows:
        if e.name in _DOT_NAMES:
            continue
        if efh is None:
            try:  # (what went wrong: the fast lookups do not say)
                efh, eattr, _ = fs.lookup(fh, e.name, caller)
            except FsError as err:
                if nfs4.FATTR4_RDATTR_ERROR not in nfs4attrs.plan(wanted)[0]:
                    raise
                attrs = nfs4attrs.rdattr_error_fattr4(status_of_fs(err))
        if efh is not None:
            obj.fh, obj.attr, obj.fsid = efh, eattr, (eattr.fsid, 0)
            attrs = encode(obj, eattr, config, st) if encode is not None else \
                nfs4attrs.fattr4_bytes(obj, wanted)
        entry = nfs4.entry4_bytes(e.cookie, e.name, attrs)
        if size + len(entry) > limit:
            cut = e.cookie
            break
        size += len(entry)
        out.append((e.cookie, entry))
    if cut is not None:
        # Entries sharing a cookie go together: the client resumes after the last.
        while out and out[-1][0] == cut:
            out.pop()
        if not out:
            raise Nfs4Error(nfsstat4.NFS4ERR_TOOSMALL)
    reply = Encoded(b"".join((verf, *(entry for _, entry in out),
                              nfs4.dirlist4_end(bool(eof) and cut is None))))
    if pages is not None:
        pages.put(key, reply, len(out))
    return reply


def _name_and_cookie(name):
    """What an entry costs of a READDIR's dircount."""
    return 4 + _pad4(len(name)) + 8


def _readdir_pseudo(c, fh, args, wanted, size, limit):
    entries = c.view.entries(fh)
    out = []
    cookie = args.cookie
    # Pseudo directories are tiny: cookies are positions, from 3 (clients
    # take 0-2 for the start and the dot entries); a page resumes after one.
    if cookie and cookie < 3:
        raise Nfs4Error(nfsstat4.NFS4ERR_BAD_COOKIE)
    start = min(cookie - 2, len(entries)) if cookie else 0
    cut = False
    for i, (name, efh, efs) in enumerate(entries[start:], start):
        try:
            attrs = fattr_of(obj_of(c, efh, efs), wanted)
        except FsError as err:
            attrs = nfs4.encode_attrs({nfs4.FATTR4_RDATTR_ERROR: int(status_of_fs(err))})
        raw = name.encode()
        esize = 4 + 8 + 4 + _pad4(len(raw)) + 4 + 4 * len(attrs.attrmask) + 4 + \
            _pad4(len(attrs.attr_vals))
        if size + esize > limit:
            cut = True
            break
        size += esize
        out.append(nfs4.entry4(3 + i, raw, attrs))
    if cut and not out:
        raise Nfs4Error(nfsstat4.NFS4ERR_TOOSMALL)
    return nfs4.READDIR4resok(bytes(8), nfs4.dirlist4(out, not cut))


def _pad4(n):
    return (n + 3) & ~3


def READLINK(c, args):
    fh, fs, caller = _real(c, nfsstat4.NFS4ERR_INVAL)
    target, _ = fs.readlink(fh, caller)
    return nfs4.READLINK4resok(target)


def REMOVE(c, args):
    """Files and (empty) directories alike, as NFSv4's REMOVE is both."""
    dfh, fs, caller = _real(c)
    name = _dir_name(c, args.target)
    c.server.check_grace(c)
    fh = _before_unlink(c, fs, dfh, name, caller)
    try:
        w = fs.remove(dfh, name, caller)
    except FsError as e:
        if e.status != nfsstat3.NFS3ERR_ISDIR:
            raise
        w = fs.rmdir(dfh, name, caller)
    return _after_unlink(c, fs, fh, nfs4.REMOVE4resok(_cinfo(w)))


def RENAME(c, args):
    """From the saved directory to the current one."""
    if c.saved_fh is None:
        raise Nfs4Error(nfsstat4.NFS4ERR_NOFILEHANDLE)
    tfh, fs, caller = _real(c)
    if c.saved_fs is None:
        raise Nfs4Error(nfsstat4.NFS4ERR_ROFS)
    if c.saved_fs is not fs:
        raise Nfs4Error(nfsstat4.NFS4ERR_XDEV)
    c.server.check_grace(c)
    newname = _dir_name(c, args.newname)
    fh = _before_unlink(c, fs, tfh, newname, caller)
    wf, wt = fs.rename(c.saved_fh, _dir_name(c, args.oldname), tfh, newname, caller)
    return _after_unlink(c, fs, fh, nfs4.RENAME4resok(_cinfo(wf), _cinfo(wt)))


def _before_unlink(c, fs, dfh, name, caller):
    """A file about to lose a name stays usable by the opens it has (OPEN
    promised OPEN4_RESULT_PRESERVE_UNLINKED). Its handle, if a regular file."""
    try:
        fh, attr, _ = fs.lookup(dfh, name, caller)
    except FsError:
        return None  # the REMOVE or RENAME itself says what is wrong
    if attr.type != FileType.REG:
        return None
    c.server.before_unlink(fs, fh)
    return fh


def _after_unlink(c, fs, fh, resok):
    """A file gone with its last name (not held for its opens) has its pNFS
    layouts revoked at the iods before the reply (Nfs4Service.unlinked)."""
    revoke = None if fh is None or c.server.pnfs is None else c.server.unlinked(fs, fh)
    if revoke is None:
        return resok

    async def finish():
        await revoke()
        return resok
    return Later(finish)


def RESTOREFH(c, args):
    if c.saved_fh is None:
        raise Nfs4Error(nfsstat4.NFS4ERR_RESTOREFH)
    c.current_fh, c.current_fs = c.saved_fh, c.saved_fs
    c.current_stateid = c.saved_stateid


def SAVEFH(c, args):
    c.fh()
    c.saved_fh, c.saved_fs = c.current_fh, c.current_fs
    c.saved_stateid = c.current_stateid


def _flavors(c):
    """AUTH_SYS, the one flavor nfspd serves (AUTH_NONE callers are mapped to
    the anonymous ids by resolve, as for v3, but not offered)."""
    return [nfs4.secinfo4(AUTH_SYS)]


def SECINFO(c, args):
    """The flavors for a name in the current directory; the current filehandle
    is consumed (RFC 8881 2.6.3.1.1.8)."""
    fh, fs = c.fh()
    name = _dir_name(c, args.name)
    if fs is None:
        c.view.lookup(fh, name)
    else:
        fs, caller = c.ctx.service.resolve(c.ctx, fh)
        fs.lookup(fh, name, caller)
    c.set_fh(None, None)
    return _flavors(c)


def SETATTR(c, args):
    fh, fs, caller = _real(c)
    given = nfs4.decode_attrs(args.obj_attributes)
    sattr = nfs4attrs.to_setattr(given, c.server.attrs.domain)
    if sattr.size is not None:
        _check_io_stateid(c, args.stateid, fh, write=True)
    fs.setattr(fh, caller, sattr)
    if sattr.size is not None:
        return _after_truncation(c, fh, nfs4attrs.bitmap(given))
    return nfs4attrs.bitmap(given)


def _after_truncation(c, fh, resok):
    """A file cut with RW layouts out: the writers fenced first
    (Nfs4Service.truncation_fence says why)."""
    fence = c.server.truncation_fence(fh)
    if fence is None:
        return resok

    async def finish():
        await fence()
        return resok
    return Later(finish)


def VERIFY(c, args):
    if not _verify(c, args):
        raise Nfs4Error(nfsstat4.NFS4ERR_NOT_SAME)


async def WRITE(c, args):
    fh, fs, caller = _real(c, nfsstat4.NFS4ERR_ISDIR)
    _check_io_stateid(c, args.stateid, fh, write=True)
    data = args.data
    plan = fs.write_plan_now(fh, caller, args.offset, len(data), int(args.stable))
    if plan is None:
        plan = await fs.write_plan(fh, caller, args.offset, len(data), int(args.stable))
    verf = await fs.write_data(plan, data)
    return nfs4.WRITE4resok(len(data), nfs4.stable_how4(plan.committed), verf)


# --- NFSv4.1 ---------------------------------------------------------------------------


def BACKCHANNEL_CTL(c, args):
    """Accepted and ignored: this server never calls back (no delegations; a
    layout is revoked at the data servers instead of recalled: nfspd/pnfs.py)."""


def BIND_CONN_TO_SESSION(c, args):
    return c.server.state_bind_conn(c, args)


def EXCHANGE_ID(c, args):
    return c.server.state_exchange_id(c, args)


def CREATE_SESSION(c, args):
    return c.server.state_create_session(c, args)


def DESTROY_SESSION(c, args):
    c.server.state_destroy_session(c, args)


def _pnfs(c):
    """The metaserver's pNFS (nfspd/pnfs.py); NOTSUPP with --no-pnfs or without iods."""
    pnfs = c.server.pnfs
    if pnfs is None:
        raise Nfs4Error(nfsstat4.NFS4ERR_NOTSUPP)
    return pnfs


def _layout_type(t):
    if t != fileslayout.FILES:
        raise Nfs4Error(nfsstat4.NFS4ERR_UNKNOWN_LAYOUTTYPE)


def GETDEVICEINFO(c, args):
    """The data servers of a device (one per layout generation: its iods);
    no notifications (no back channel to send them on)."""
    pnfs = _pnfs(c)
    _layout_type(args.gdia_layout_type)
    addr = pnfs.device_address(args.gdia_device_id, c.ctx.local[0])
    # device_addr4 and an empty bitmap4, as they go on the wire; 0 asks for
    # no check (as Linux nfsd reads it).
    needed = 4 + 4 + _pad4(len(addr.da_addr_body)) + 4
    if args.gdia_maxcount and needed > args.gdia_maxcount:
        raise Nfs4Error(nfsstat4.NFS4ERR_TOOSMALL, denied=needed)
    return nfs4.GETDEVICEINFO4resok(addr, [])


async def LAYOUTGET(c, args):
    """A whole-file files layout (common/fileslayout.py) with a handle minted
    for this client (common/dsfh.py); LAYOUTUNAVAILABLE when the file cannot
    have one now (its data in the local store, an iod of its generation down
    or without a data server, grace), so the client's I/O goes through the
    metaserver."""
    pnfs = _pnfs(c)
    fh, fs, caller = _real(c, nfsstat4.NFS4ERR_LAYOUTUNAVAILABLE)
    _layout_type(args.loga_layout_type)
    iomode = args.loga_iomode
    if iomode not in (layoutiomode4.LAYOUTIOMODE4_READ, layoutiomode4.LAYOUTIOMODE4_RW):
        raise Nfs4Error(nfsstat4.NFS4ERR_BADIOMODE)
    if args.loga_length < args.loga_minlength or (
            args.loga_minlength != nfs4.NFS4_UINT64_MAX
            and args.loga_offset + args.loga_minlength > nfs4.NFS4_UINT64_MAX):
        raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
    attr = fs.getattr(fh)
    if attr.type == FileType.DIR:
        raise Nfs4Error(nfsstat4.NFS4ERR_ISDIR)
    if attr.type != FileType.REG:
        raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
    write = iomode == layoutiomode4.LAYOUTIOMODE4_RW
    _open_permission(OPEN4_SHARE_ACCESS_WRITE if write else OPEN4_SHARE_ACCESS_READ, attr,
                     caller)
    sid = _stateid(c, args.loga_stateid)
    if not c.server.pnfs_allowed(c, fh):
        raise Nfs4Error(nfsstat4.NFS4ERR_LAYOUTUNAVAILABLE)     # exports(5) no_pnfs
    meta, ino = await fs.settled(fh, write)
    devid, n = pnfs.device(meta, c.ctx.local[0])
    if not write:
        # The READs go to the data servers: the file's atime moves now, as
        # a READ here would move it (the export's relatime or strictatime).
        await fs.read_plan(fh, caller, 0, 0)
    handle = pnfs.handle(meta, ino, c.ctx.client[0], write,
                         c.server.secure_port_required(c, fh))
    layout = fileslayout.whole_file_layout(iomode, devid, meta.stripe_unit, meta.seed, n,
                                           handle)
    # LAYOUTGET4resok as it goes on the wire: return_on_close, stateid, one layout4.
    size = 4 + 16 + 4 + 8 + 8 + 4 + 4 + 4 + _pad4(len(layout.lo_content.loc_body))
    if args.loga_maxcount and size > args.loga_maxcount:
        raise Nfs4Error(nfsstat4.NFS4ERR_TOOSMALL)
    sid = c.server.state_layoutget(c, sid, fh, iomode, fs, (ino, meta.seed, meta.layout_gen))
    c.current_stateid = sid
    # Return on close, as Linux nfsd: the client gives the layout back with
    # its last CLOSE, which keeps the layouts held to the files in use.
    return nfs4.LAYOUTGET4resok(True, sid, [layout])


def LAYOUTRETURN(c, args):
    _pnfs(c)
    _layout_type(args.lora_layout_type)
    iomode = args.lora_iomode
    if iomode not in (layoutiomode4.LAYOUTIOMODE4_READ, layoutiomode4.LAYOUTIOMODE4_RW,
                      layoutiomode4.LAYOUTIOMODE4_ANY):
        raise Nfs4Error(nfsstat4.NFS4ERR_BADIOMODE)
    how = args.lora_layoutreturn
    if how.disc == layoutreturn_type4.LAYOUTRETURN4_FILE:
        fh, fs, _ = _real(c, nfsstat4.NFS4ERR_ISDIR)
        r = how.body
        sid = c.server.state_layoutreturn_file(c, _stateid(c, r.lrf_stateid), fh, iomode,
                                               r.lrf_offset, r.lrf_length)
        if sid is not None:
            c.current_stateid = sid
        return sid
    if how.disc == layoutreturn_type4.LAYOUTRETURN4_FSID:
        fh, fs = c.fh()
        if fs is not None:
            c.server.state_layoutreturn_all(c, fs)
        return None
    c.server.state_layoutreturn_all(c)
    return None


async def LAYOUTCOMMIT(c, args):
    """What the client wrote through its layout reaches the metafile: the size
    grows to loca_last_write_offset + 1 (never shrinks) and mtime moves, as a
    WRITE extending the file through the metaserver does."""
    _pnfs(c)
    fh, fs, caller = _real(c, nfsstat4.NFS4ERR_ISDIR)
    _layout_type(args.loca_layoutupdate.lou_type)
    if args.loca_reclaim:
        # Writes sent to the data servers before this server restarted
        # (RFC 8881 18.42.3): during grace their size is taken without the
        # layout stateid, which went with the restart.
        c.server.check_reclaim(c)
    else:
        c.server.state_layoutcommit(c, _stateid(c, args.loca_stateid), fh)
    last = args.loca_last_write_offset
    attr = fs.getattr(fh)
    if last is not None and last >= attr.size:
        plan = fs.write_plan_now(fh, caller, last, 1, FILE_SYNC)
        if plan is None:
            plan = await fs.write_plan(fh, caller, last, 1, FILE_SYNC)
        fs.write_landed(plan)   # no data goes with it: nothing to wait for
        return nfs4.LAYOUTCOMMIT4resok(last + 1)
    if args.loca_time_modify is not None:
        fs.setattr(fh, caller, SetAttr(mtime=SET_TO_SERVER_TIME))
    return nfs4.LAYOUTCOMMIT4resok(None)


def FREE_STATEID(c, args):
    c.server.state_free_stateid(c, _stateid(c, args.fsa_stateid))


def SECINFO_NO_NAME(c, args):
    """SECINFO_STYLE4_CURRENT_FH or _PARENT; the current filehandle is consumed."""
    c.fh()
    c.set_fh(None, None)
    return _flavors(c)


def SEQUENCE(c, args):
    return c.server.state_sequence(c, args)


def TEST_STATEID(c, args):
    return nfs4.TEST_STATEID4resok(c.server.state_test_stateids(c, args.ts_stateids))


def DESTROY_CLIENTID(c, args):
    c.server.state_destroy_clientid(c, args)


def RECLAIM_COMPLETE(c, args):
    c.server.state_reclaim_complete(c, args)


# --- NFSv4.2 ---------------------------------------------------------------------------


def SEEK(c, args):
    """No file here has holes the server knows of (the data lives striped on
    the iods): data runs from 0 to the size, the only hole is the virtual one
    at the end (RFC 7862 15.11.3)."""
    fh, fs, _ = _real(c, nfsstat4.NFS4ERR_ISDIR)
    _check_io_stateid(c, args.sa_stateid, fh, write=False)
    attr = fs.getattr(fh)
    if attr.type != FileType.REG:
        raise Nfs4Error(nfsstat4.NFS4ERR_WRONG_TYPE if attr.type != FileType.DIR
                        else nfsstat4.NFS4ERR_ISDIR)
    offset = args.sa_offset
    if offset >= attr.size:
        raise Nfs4Error(nfsstat4.NFS4ERR_NXIO)
    if args.sa_what == data_content4.NFS4_CONTENT_DATA:
        return nfs4.seek_res4(False, offset)
    return nfs4.seek_res4(True, attr.size)


def NOTSUPP(c, args):
    raise Nfs4Error(nfsstat4.NFS4ERR_NOTSUPP)


# --- The table -------------------------------------------------------------------------

_HANDLERS = {
    nfs_opnum4.OP_ACCESS: ACCESS, nfs_opnum4.OP_CLOSE: CLOSE, nfs_opnum4.OP_COMMIT: COMMIT,
    nfs_opnum4.OP_CREATE: CREATE, nfs_opnum4.OP_DELEGPURGE: DELEGPURGE,
    nfs_opnum4.OP_DELEGRETURN: DELEGRETURN, nfs_opnum4.OP_GETATTR: GETATTR,
    nfs_opnum4.OP_GETFH: GETFH, nfs_opnum4.OP_LINK: LINK, nfs_opnum4.OP_LOCK: LOCK,
    nfs_opnum4.OP_LOCKT: LOCKT, nfs_opnum4.OP_LOCKU: LOCKU, nfs_opnum4.OP_LOOKUP: LOOKUP,
    nfs_opnum4.OP_LOOKUPP: LOOKUPP, nfs_opnum4.OP_NVERIFY: NVERIFY, nfs_opnum4.OP_OPEN: OPEN,
    nfs_opnum4.OP_OPENATTR: OPENATTR, nfs_opnum4.OP_OPEN_DOWNGRADE: OPEN_DOWNGRADE,
    nfs_opnum4.OP_PUTFH: PUTFH, nfs_opnum4.OP_PUTPUBFH: PUTPUBFH,
    nfs_opnum4.OP_PUTROOTFH: PUTROOTFH, nfs_opnum4.OP_READ: READ,
    nfs_opnum4.OP_READDIR: READDIR, nfs_opnum4.OP_READLINK: READLINK,
    nfs_opnum4.OP_REMOVE: REMOVE, nfs_opnum4.OP_RENAME: RENAME,
    nfs_opnum4.OP_RESTOREFH: RESTOREFH, nfs_opnum4.OP_SAVEFH: SAVEFH,
    nfs_opnum4.OP_SECINFO: SECINFO, nfs_opnum4.OP_SETATTR: SETATTR,
    nfs_opnum4.OP_VERIFY: VERIFY, nfs_opnum4.OP_WRITE: WRITE,
    nfs_opnum4.OP_BACKCHANNEL_CTL: BACKCHANNEL_CTL,
    nfs_opnum4.OP_BIND_CONN_TO_SESSION: BIND_CONN_TO_SESSION,
    nfs_opnum4.OP_EXCHANGE_ID: EXCHANGE_ID, nfs_opnum4.OP_CREATE_SESSION: CREATE_SESSION,
    nfs_opnum4.OP_DESTROY_SESSION: DESTROY_SESSION, nfs_opnum4.OP_FREE_STATEID: FREE_STATEID,
    nfs_opnum4.OP_SECINFO_NO_NAME: SECINFO_NO_NAME, nfs_opnum4.OP_SEQUENCE: SEQUENCE,
    nfs_opnum4.OP_TEST_STATEID: TEST_STATEID, nfs_opnum4.OP_DESTROY_CLIENTID: DESTROY_CLIENTID,
    nfs_opnum4.OP_RECLAIM_COMPLETE: RECLAIM_COMPLETE, nfs_opnum4.OP_SEEK: SEEK,
    nfs_opnum4.OP_GETDEVICEINFO: GETDEVICEINFO, nfs_opnum4.OP_LAYOUTGET: LAYOUTGET,
    nfs_opnum4.OP_LAYOUTRETURN: LAYOUTRETURN, nfs_opnum4.OP_LAYOUTCOMMIT: LAYOUTCOMMIT,
}
# Everything else the XDR knows answers NOTSUPP: NFSv4.0's client-id and
# confirmation operations (RENEW, SETCLIENTID[_CONFIRM], OPEN_CONFIRM,
# RELEASE_LOCKOWNER: RFC 8881 section 18 says NOTSUPP in 4.1), delegations,
# GETDEVICELIST (Linux asks devices by id only), SSV, 4.2's
# copy/clone/allocate/xattr family.
_WAITING = (READ, WRITE, COMMIT, LAYOUTGET, LAYOUTCOMMIT)
# Those after which the current object's attributes fetched before still hold.
_READ_ONLY = (SEQUENCE, PUTFH, GETATTR, GETFH, ACCESS, SAVEFH, VERIFY, NVERIFY)
OPERATIONS = {
    op: Op(op, _HANDLERS.get(op, NOTSUPP), res, is_async=_HANDLERS.get(op) in _WAITING,
           keeps_attr=_HANDLERS.get(op) in _READ_ONLY)
    for op, (_, res) in nfs4.OPERATIONS.items() if op != nfs_opnum4.OP_ILLEGAL
}


# --- The RPC procedures of program 100003 version 4 ------------------------------------


def NULL(ctx, args):
    return None


def COMPOUND(ctx, args):
    return compound(ctx, args, ctx.service.v4, OPERATIONS)


PROCEDURES = procedure_table([
    # procedure           arguments     results  handler    cached (sessions replay instead)
    (NFSPROC4.NULL,       Void,         Void,    NULL,      False),
    (NFSPROC4.COMPOUND,   CompoundArgs, Void,    COMPOUND,  False),
])
