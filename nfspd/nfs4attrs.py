"""NFSv4 attributes (RFC 8881 section 5) from the file-system layer's Attr, and
SETATTR/CREATE/OPEN attributes back to its SetAttr.

``values(obj, wanted)`` gives {attribute number: value} for the attributes of
``wanted`` this server supports; common/nfs4.py turns that into a fattr4. What
an attribute needs beyond the Attr (the handle, the export's fsstat, the pseudo
file system's fsid) comes from an Obj, made per object by nfs4proc.

Owners are numeric strings ("1000") by default, as Linux's nfsd sends them when
its idmapper has no name (and as the Linux client takes them with
nfs4_disable_idmapping, its default for AUTH_SYS); with an idmapping domain,
``name@domain`` from the server's passwd/group files, numeric for ids without a
name. Either form is accepted back.
"""

import grp
import pwd
import struct

from common import nfs4
from common.nfs4 import FH4_PERSISTENT, fsid4, nfsstat4, nfstime4, specdata4, time_how4
from nfspd.fs.types import SET_TO_SERVER_TIME, FsError, SetAttr
from nfspd.nfs4compound import Nfs4Error

NAME_MAX = 255
LINK_MAX = 32000
MAXFILESIZE = (1 << 63) - 1

A = nfs4  # attribute numbers are common/nfs4.py's FATTR4_* constants


def _bits(*nums):
    return frozenset(nums)


# What this server can report.
SUPPORTED = _bits(
    A.FATTR4_SUPPORTED_ATTRS, A.FATTR4_TYPE, A.FATTR4_FH_EXPIRE_TYPE, A.FATTR4_CHANGE,
    A.FATTR4_SIZE, A.FATTR4_LINK_SUPPORT, A.FATTR4_SYMLINK_SUPPORT, A.FATTR4_NAMED_ATTR,
    A.FATTR4_FSID, A.FATTR4_UNIQUE_HANDLES, A.FATTR4_LEASE_TIME, A.FATTR4_RDATTR_ERROR,
    A.FATTR4_ACLSUPPORT, A.FATTR4_CANSETTIME, A.FATTR4_CASE_INSENSITIVE,
    A.FATTR4_CASE_PRESERVING, A.FATTR4_CHOWN_RESTRICTED, A.FATTR4_FILEHANDLE,
    A.FATTR4_FILEID, A.FATTR4_FILES_AVAIL, A.FATTR4_FILES_FREE, A.FATTR4_FILES_TOTAL,
    A.FATTR4_HOMOGENEOUS, A.FATTR4_MAXFILESIZE, A.FATTR4_MAXLINK, A.FATTR4_MAXNAME,
    A.FATTR4_MAXREAD, A.FATTR4_MAXWRITE, A.FATTR4_MODE, A.FATTR4_NO_TRUNC,
    A.FATTR4_NUMLINKS, A.FATTR4_OWNER, A.FATTR4_OWNER_GROUP, A.FATTR4_RAWDEV,
    A.FATTR4_SPACE_AVAIL, A.FATTR4_SPACE_FREE, A.FATTR4_SPACE_TOTAL, A.FATTR4_SPACE_USED,
    A.FATTR4_TIME_ACCESS, A.FATTR4_TIME_DELTA, A.FATTR4_TIME_METADATA, A.FATTR4_TIME_MODIFY,
    A.FATTR4_MOUNTED_ON_FILEID, A.FATTR4_FS_LAYOUT_TYPES, A.FATTR4_LAYOUT_BLKSIZE,
    A.FATTR4_SUPPATTR_EXCLCREAT,
    A.FATTR4_TIME_ACCESS_SET, A.FATTR4_TIME_MODIFY_SET,
)
# What a client may set (SETATTR, and CREATE/OPEN's createattrs).
WRITABLE = _bits(A.FATTR4_SIZE, A.FATTR4_MODE, A.FATTR4_OWNER, A.FATTR4_OWNER_GROUP,
                 A.FATTR4_TIME_ACCESS_SET, A.FATTR4_TIME_MODIFY_SET)
# EXCLUSIVE4_1 stores its verifier where v3 does, not in the times, so every
# writable attribute may come with it (RFC 8881 5.8.1.14).
EXCLCREAT = WRITABLE - {A.FATTR4_TIME_ACCESS_SET, A.FATTR4_TIME_MODIFY_SET}
WRITE_ONLY = _bits(A.FATTR4_TIME_ACCESS_SET, A.FATTR4_TIME_MODIFY_SET)
# Attributes whose value needs the export's fsstat (one statvfs for all of them).
_FSSTAT = _bits(A.FATTR4_FILES_AVAIL, A.FATTR4_FILES_FREE, A.FATTR4_FILES_TOTAL,
                A.FATTR4_SPACE_AVAIL, A.FATTR4_SPACE_FREE, A.FATTR4_SPACE_TOTAL)


def bitmap(nums):
    """bitmap4 words for a set of attribute numbers."""
    words = []
    for n in nums:
        w, b = divmod(n, 32)
        while len(words) <= w:
            words.append(0)
        words[w] |= 1 << b
    return words


def attrs_of(words):
    """The set of attribute numbers a bitmap4 names (bounded by its length)."""
    out = set()
    for w, word in enumerate(words[:8]):
        b = 0
        while word:
            if word & 1:
                out.add(w * 32 + b)
            word >>= 1
            b += 1
    return out


class Obj:
    """One object as GETATTR/READDIR describe it. ``fs`` None: a pseudo directory."""

    __slots__ = ("attr", "config", "fh", "fs", "fsid", "mounted_on")

    def __init__(self, fh, attr, fs, fsid, mounted_on, config):
        self.fh, self.attr, self.fs, self.fsid = fh, attr, fs, fsid
        self.mounted_on, self.config = mounted_on, config


class AttrConfig:
    """Server-wide figures: lease time, transfer sizes, owner naming, the
    pNFS layout types the exports' files can be given (none without --pnfs)
    and the preferred size of I/O through a layout (the stripe unit)."""

    def __init__(self, lease_time=90, max_io=1 << 20, domain=None, layout_types=(),
                 layout_blksize=None):
        self.lease_time = lease_time
        self.max_io = max_io
        self.domain = domain
        self.layout_types = [int(t) for t in layout_types]
        self.layout_blksize = max_io if layout_blksize is None else layout_blksize

    def without_layouts(self):
        """The same figures for a client given no layouts (exports(5)
        no_pnfs): fs_layout_types empty, so Linux does not try LAYOUTGET."""
        return AttrConfig(self.lease_time, self.max_io, self.domain, (), self.layout_blksize)


def change_of(size, mtime_ns, ctime_ns):
    """The change attribute of an object (and change_info4's before/after).
    The file system's ctime moves with every change of data or attributes
    (MetaFS touches the metafile on WRITE and size changes), but only as often
    as the kernel's coarse clock ticks: two changes within a tick would look
    like none to a client that compares change values, so size and mtime go
    in too (any change, not an order: change_attr_type is not announced)."""
    return (ctime_ns + mtime_ns + size * 1_000_003) & 0xFFFFFFFFFFFFFFFF


def _time(ns):
    return nfstime4(*divmod(ns, 1_000_000_000))


def owner_name(uid, domain):
    if domain:
        try:
            return f"{pwd.getpwuid(uid).pw_name}@{domain}".encode()
        except KeyError:
            pass
    return str(uid).encode()


def group_name(gid, domain):
    if domain:
        try:
            return f"{grp.getgrgid(gid).gr_name}@{domain}".encode()
        except KeyError:
            pass
    return str(gid).encode()


def _id_of(text, lookup, domain):
    """uid/gid from an owner string: numeric, or name@domain; BADOWNER otherwise."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode()
        except UnicodeDecodeError:
            raise Nfs4Error(nfsstat4.NFS4ERR_BADOWNER) from None
    if text.isdigit() and len(text) <= 10 and int(text) < 1 << 32:
        return int(text)
    name, _, dom = text.partition("@")
    if domain and dom.lower() == domain.lower():
        try:
            return lookup(name)
        except KeyError:
            pass
    raise Nfs4Error(nfsstat4.NFS4ERR_BADOWNER)


def _fsstat(field):
    def get(obj, a, cfg, st):
        if st is None:
            # The pseudo file system stores nothing; an export whose figures
            # cannot be had leaves the attribute out.
            return 0 if obj.fs is None else _ABSENT
        return getattr(st, field)
    return get


_ABSENT = object()
_TRUE = (A.FATTR4_LINK_SUPPORT, A.FATTR4_SYMLINK_SUPPORT, A.FATTR4_UNIQUE_HANDLES,
         A.FATTR4_CANSETTIME, A.FATTR4_CASE_PRESERVING, A.FATTR4_CHOWN_RESTRICTED,
         A.FATTR4_HOMOGENEOUS, A.FATTR4_NO_TRUNC)
_FALSE = (A.FATTR4_NAMED_ATTR, A.FATTR4_CASE_INSENSITIVE)

# attribute number -> get(obj, Attr, AttrConfig, FsStat or None) -> value
_GET = {
    A.FATTR4_SUPPORTED_ATTRS: lambda o, a, c, st: bitmap(SUPPORTED),
    A.FATTR4_TYPE: lambda o, a, c, st: int(a.type),
    A.FATTR4_FH_EXPIRE_TYPE: lambda o, a, c, st: FH4_PERSISTENT,
    A.FATTR4_CHANGE: lambda o, a, c, st: change_of(a.size, a.mtime_ns, a.ctime_ns),
    A.FATTR4_SIZE: lambda o, a, c, st: a.size,
    **{n: (lambda o, a, c, st: True) for n in _TRUE},
    **{n: (lambda o, a, c, st: False) for n in _FALSE},
    A.FATTR4_FSID: lambda o, a, c, st: fsid4(*o.fsid),
    A.FATTR4_LEASE_TIME: lambda o, a, c, st: c.lease_time,
    A.FATTR4_RDATTR_ERROR: lambda o, a, c, st: int(nfsstat4.NFS4_OK),
    A.FATTR4_ACLSUPPORT: lambda o, a, c, st: 0,
    A.FATTR4_FILEHANDLE: lambda o, a, c, st: bytes(o.fh),
    A.FATTR4_FILEID: lambda o, a, c, st: a.fileid,
    A.FATTR4_FILES_AVAIL: _fsstat("afiles"),
    A.FATTR4_FILES_FREE: _fsstat("ffiles"),
    A.FATTR4_FILES_TOTAL: _fsstat("tfiles"),
    A.FATTR4_SPACE_AVAIL: _fsstat("abytes"),
    A.FATTR4_SPACE_FREE: _fsstat("fbytes"),
    A.FATTR4_SPACE_TOTAL: _fsstat("tbytes"),
    A.FATTR4_MAXFILESIZE: lambda o, a, c, st: MAXFILESIZE,
    A.FATTR4_MAXLINK: lambda o, a, c, st: LINK_MAX,
    A.FATTR4_MAXNAME: lambda o, a, c, st: NAME_MAX,
    A.FATTR4_MAXREAD: lambda o, a, c, st: c.max_io,
    A.FATTR4_MAXWRITE: lambda o, a, c, st: c.max_io,
    A.FATTR4_MODE: lambda o, a, c, st: a.mode & 0o7777,
    A.FATTR4_NUMLINKS: lambda o, a, c, st: a.nlink,
    A.FATTR4_OWNER: lambda o, a, c, st: owner_name(a.uid, c.domain),
    A.FATTR4_OWNER_GROUP: lambda o, a, c, st: group_name(a.gid, c.domain),
    A.FATTR4_RAWDEV: lambda o, a, c, st: specdata4(a.rdev_major, a.rdev_minor),
    A.FATTR4_SPACE_USED: lambda o, a, c, st: a.used,
    A.FATTR4_TIME_ACCESS: lambda o, a, c, st: _time(a.atime_ns),
    A.FATTR4_TIME_DELTA: lambda o, a, c, st: nfstime4(0, 1),
    A.FATTR4_TIME_METADATA: lambda o, a, c, st: _time(a.ctime_ns),
    A.FATTR4_TIME_MODIFY: lambda o, a, c, st: _time(a.mtime_ns),
    A.FATTR4_MOUNTED_ON_FILEID:
        lambda o, a, c, st: a.fileid if o.mounted_on is None else o.mounted_on,
    # The pseudo file system holds no file data: no layouts there.
    A.FATTR4_FS_LAYOUT_TYPES: lambda o, a, c, st: c.layout_types if o.fs is not None else [],
    A.FATTR4_LAYOUT_BLKSIZE: lambda o, a, c, st: c.layout_blksize,
    A.FATTR4_SUPPATTR_EXCLCREAT: lambda o, a, c, st: bitmap(EXCLCREAT),
}
assert set(_GET) == SUPPORTED - WRITE_ONLY

# A client asks the same few bitmaps over and over: what each one means here
# (the attributes to produce, in order, and whether the fsstat is needed).
_PLANS = {}
_PLANS_MAX = 256


def plan(words):
    """(the supported readable attributes a bitmap4 asks, ascending; whether
    any needs the file system's figures)."""
    key = tuple(words)
    hit = _PLANS.get(key)
    if hit is None:
        nums = sorted(attrs_of(words) & _GET.keys())
        hit = (tuple(nums), any(n in _FSSTAT for n in nums))
        if len(_PLANS) >= _PLANS_MAX:
            _PLANS.clear()
        _PLANS[key] = hit
    return hit


def values(obj, words):
    """{attribute number: value} of the supported attributes bitmap4 ``words`` asks."""
    nums, needs_fsstat = plan(words)
    a, cfg = obj.attr, obj.config
    st = None
    if needs_fsstat and obj.fs is not None:
        try:
            st = obj.fs.fsstat(obj.fh)
        except (FsError, OSError):  # figures unavailable: left out, the GETATTR goes on
            st = None
    out = {}
    for n in nums:
        v = _GET[n](obj, a, cfg, st)
        if v is not _ABSENT:
            out[n] = v
    return out


# --- the fattr4 of a bitmap, compiled ----------------------------------------------------
#
# GETATTR and READDIR encode the same few bitmaps over and over (Linux asks one
# when it revalidates an inode, another per READDIR entry). values() +
# nfs4.encode_attrs builds a dict, calls a getter and a generic XDR type per
# attribute and sorts; here each bitmap becomes, once, a Python function that
# packs the attributes' fixed-size fields with one struct.pack per run between
# variable-length ones (owner names, the handle). Its bytes are exactly what
# the generic path gives (tests/test_nfs4_attrs_fast.py holds them equal); an
# fsstat figure that cannot be had (the generic path leaves it out) sends the
# call the generic way.
#
# attribute number -> (struct format, Python expressions for its fields), or
# (None, one expression giving its XDR bytes). In scope: o (Obj), a (Attr),
# c (AttrConfig), st (FsStat or None, where None is 0: the pseudo file system).
_SEC = "(%s // 1000000000)"
_NSEC = "(%s %% 1000000000)"
_FAST = {
    A.FATTR4_SUPPORTED_ATTRS: (None, "_SUPPORTED_BITMAP"),
    A.FATTR4_TYPE: ("I", "a.type"),
    A.FATTR4_FH_EXPIRE_TYPE: ("I", str(int(FH4_PERSISTENT))),
    A.FATTR4_CHANGE: ("Q", "(a.ctime_ns + a.mtime_ns + a.size * 1000003) & 0xFFFFFFFFFFFFFFFF"),
    A.FATTR4_SIZE: ("Q", "a.size"),
    **{n: ("I", "1") for n in _TRUE},
    **{n: ("I", "0") for n in _FALSE},
    A.FATTR4_FSID: ("QQ", "o.fsid[0]", "o.fsid[1]"),
    A.FATTR4_LEASE_TIME: ("I", "c.lease_time"),
    A.FATTR4_RDATTR_ERROR: ("I", "0"),
    A.FATTR4_ACLSUPPORT: ("I", "0"),
    A.FATTR4_FILEHANDLE: (None, "_opaque(o.fh)"),
    A.FATTR4_FILEID: ("Q", "a.fileid"),
    A.FATTR4_FILES_AVAIL: ("Q", "(0 if st is None else st.afiles)"),
    A.FATTR4_FILES_FREE: ("Q", "(0 if st is None else st.ffiles)"),
    A.FATTR4_FILES_TOTAL: ("Q", "(0 if st is None else st.tfiles)"),
    A.FATTR4_SPACE_AVAIL: ("Q", "(0 if st is None else st.abytes)"),
    A.FATTR4_SPACE_FREE: ("Q", "(0 if st is None else st.fbytes)"),
    A.FATTR4_SPACE_TOTAL: ("Q", "(0 if st is None else st.tbytes)"),
    A.FATTR4_MAXFILESIZE: ("Q", str(MAXFILESIZE)),
    A.FATTR4_MAXLINK: ("I", str(LINK_MAX)),
    A.FATTR4_MAXNAME: ("I", str(NAME_MAX)),
    A.FATTR4_MAXREAD: ("Q", "c.max_io"),
    A.FATTR4_MAXWRITE: ("Q", "c.max_io"),
    A.FATTR4_MODE: ("I", "a.mode & 0o7777"),
    A.FATTR4_NUMLINKS: ("I", "a.nlink"),
    A.FATTR4_OWNER: (None, "_opaque(owner_name(a.uid, c.domain))"),
    A.FATTR4_OWNER_GROUP: (None, "_opaque(group_name(a.gid, c.domain))"),
    A.FATTR4_RAWDEV: ("II", "a.rdev_major", "a.rdev_minor"),
    A.FATTR4_SPACE_USED: ("Q", "a.used"),
    A.FATTR4_TIME_ACCESS: ("qI", _SEC % "a.atime_ns", _NSEC % "a.atime_ns"),
    A.FATTR4_TIME_DELTA: ("qI", "0", "1"),
    A.FATTR4_TIME_METADATA: ("qI", _SEC % "a.ctime_ns", _NSEC % "a.ctime_ns"),
    A.FATTR4_TIME_MODIFY: ("qI", _SEC % "a.mtime_ns", _NSEC % "a.mtime_ns"),
    A.FATTR4_MOUNTED_ON_FILEID: ("Q", "(a.fileid if o.mounted_on is None else o.mounted_on)"),
    A.FATTR4_FS_LAYOUT_TYPES: (None, "_u32_array(c.layout_types if o.fs is not None else ())"),
    A.FATTR4_LAYOUT_BLKSIZE: ("I", "c.layout_blksize"),
    A.FATTR4_SUPPATTR_EXCLCREAT: (None, "_EXCLCREAT_BITMAP"),
}
assert set(_FAST) == set(_GET)
_u32 = struct.Struct(">I").pack
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


def _opaque(data):
    n = len(data)
    if n > nfs4.NFS4_UTF8STRING_MAX:
        raise nfs4.XdrError("attribute value too long")  # (as the generic path would)
    return _u32(n) + data + _PAD[n & 3]


def _u32_array(values):
    return _u32(len(values)) + b"".join(_u32(v) for v in values)


def _bitmap_bytes(words):
    return _u32(len(words)) + b"".join(_u32(w) for w in words)


_SCOPE = {"_opaque": _opaque, "_u32_array": _u32_array, "owner_name": owner_name,
          "group_name": group_name, "_SUPPORTED_BITMAP": _bitmap_bytes(bitmap(SUPPORTED)),
          "_EXCLCREAT_BITMAP": _bitmap_bytes(bitmap(EXCLCREAT))}
# bitmap words -> (encoder, whether it needs the fsstat). Bounded like _PLANS;
# a client sending a new bitmap each time makes each of its calls pay one
# compile (~150 us, about what a GETATTR costs), no more.
_ENCODERS = {}


def _compile(nums):
    """The Python function (o, a, c, st) -> the fattr4 of attributes ``nums``
    (ascending, all in _FAST), as XDR."""
    scope = dict(_SCOPE, _MASK=_bitmap_bytes(bitmap(nums)), _u32=_u32, _PAD=_PAD)
    parts, fmt, args = [], "", []

    def packed():  # the fixed-size run so far, as one struct.pack
        name = f"_S{len(parts)}"
        scope[name] = struct.Struct(">" + fmt)
        parts.append(f"{name}.pack({', '.join(args)})")

    for n in nums:
        kind, *exprs = _FAST[n]
        if kind is not None:
            fmt += kind
            args += exprs
            continue
        if fmt:
            packed()
            fmt, args = "", []
        parts.append(exprs[0])
    if fmt:
        packed()
    value = " + ".join(parts) or "b''"
    src = ("def encode(o, a, c, st):\n"
           f"    v = {value}\n"
           "    return _MASK + _u32(len(v)) + v + _PAD[len(v) & 3]\n")
    exec(compile(src, f"<fattr4 of {list(nums)}>", "exec"), scope)  # noqa: S102 (our own text)
    return scope["encode"]


def encoder(words):
    """(the function (o, a, c, st) -> fattr4 XDR of what bitmap4 ``words`` asks,
    whether it needs the file system's figures): compiled once per bitmap."""
    key = tuple(words)
    hit = _ENCODERS.get(key)
    if hit is None:
        nums, needs_fsstat = plan(words)
        hit = (_compile(nums), needs_fsstat)
        if len(_ENCODERS) >= _PLANS_MAX:
            _ENCODERS.clear()
        _ENCODERS[key] = hit
    return hit


def fattr4_bytes(obj, words):
    """The XDR of the fattr4 of the attributes bitmap4 ``words`` asks (those
    supported): what nfs4.encode_attrs(values(obj, words)) encodes to."""
    encode, needs_fsstat = encoder(words)
    st = None
    if needs_fsstat and obj.fs is not None:
        try:
            st = obj.fs.fsstat(obj.fh)
        except (FsError, OSError):
            st = None
        if st is None:  # figures unavailable: left out, as values() does
            return nfs4.encode(nfs4.fattr4, nfs4.encode_attrs(values(obj, words)))
    return encode(obj, obj.attr, obj.config, st)


def rdattr_error_fattr4(status):
    """The fattr4 of a READDIR entry whose attributes cannot be had: its
    rdattr_error alone (RFC 8881 5.8.1.12)."""
    return nfs4.encode(nfs4.fattr4, nfs4.encode_attrs({A.FATTR4_RDATTR_ERROR: int(status)}))


def to_setattr(attrs, domain=None, allowed=WRITABLE):
    """A SetAttr from decoded client attributes {number: value}; ATTRNOTSUPP for
    one this server does not support at all, INVAL for a read-only one."""
    s = SetAttr()
    for n, v in attrs.items():
        if n not in allowed:
            if n in SUPPORTED:
                raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
            raise Nfs4Error(nfsstat4.NFS4ERR_ATTRNOTSUPP)
        if n == A.FATTR4_SIZE:
            s.size = v
        elif n == A.FATTR4_MODE:
            s.mode = v & 0o7777
        elif n == A.FATTR4_OWNER:
            s.uid = _id_of(v, lambda name: pwd.getpwnam(name).pw_uid, domain)
        elif n == A.FATTR4_OWNER_GROUP:
            s.gid = _id_of(v, lambda name: grp.getgrnam(name).gr_gid, domain)
        elif n in (A.FATTR4_TIME_ACCESS_SET, A.FATTR4_TIME_MODIFY_SET):
            t = _settime(v)
            if n == A.FATTR4_TIME_ACCESS_SET:
                s.atime = t
            else:
                s.mtime = t
    return s


def _settime(v):
    """A settime4 as MetaFS takes it."""
    if v.disc != time_how4.SET_TO_CLIENT_TIME4:
        return SET_TO_SERVER_TIME
    seconds, nseconds = v.body.seconds, v.body.nseconds
    if nseconds >= 1_000_000_000:
        raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
    return seconds * 1_000_000_000 + nseconds

