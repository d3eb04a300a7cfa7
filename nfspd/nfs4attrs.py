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

from common import nfs4
from common.nfs4 import fsid4, nfsstat4, nfstime4, specdata4, time_how4
from nfspd.fs.types import SET_TO_SERVER_TIME, FsError, SetAttr
from nfspd.nfs4compound import Nfs4Error

FH4_PERSISTENT = 0
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
    A.FATTR4_MOUNTED_ON_FILEID, A.FATTR4_FS_LAYOUT_TYPES, A.FATTR4_SUPPATTR_EXCLCREAT,
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
    """Server-wide figures: lease time, transfer sizes, owner naming."""

    def __init__(self, lease_time=90, max_io=1 << 20, domain=None):
        self.lease_time = lease_time
        self.max_io = max_io
        self.domain = domain


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


def values(obj, wanted):
    """{attribute number: value} of the supported attributes in ``wanted``."""
    a, cfg = obj.attr, obj.config
    out = {}
    want = wanted & SUPPORTED - WRITE_ONLY
    st = None
    if want & _FSSTAT and obj.fs is not None:
        try:
            st = obj.fs.fsstat(obj.fh)
        except (FsError, OSError):  # figures unavailable: left out, the GETATTR goes on
            st = None
    for n in sorted(want):
        if n == A.FATTR4_SUPPORTED_ATTRS:
            v = bitmap(SUPPORTED)
        elif n == A.FATTR4_TYPE:
            v = int(a.type)
        elif n == A.FATTR4_FH_EXPIRE_TYPE:
            v = FH4_PERSISTENT
        elif n == A.FATTR4_CHANGE:
            # ctime moves with every change of data or attributes (MetaFS
            # touches the metafile on WRITE and size changes).
            v = a.ctime_ns
        elif n == A.FATTR4_SIZE:
            v = a.size
        elif n in (A.FATTR4_LINK_SUPPORT, A.FATTR4_SYMLINK_SUPPORT, A.FATTR4_UNIQUE_HANDLES,
                   A.FATTR4_CANSETTIME, A.FATTR4_CASE_PRESERVING, A.FATTR4_CHOWN_RESTRICTED,
                   A.FATTR4_HOMOGENEOUS, A.FATTR4_NO_TRUNC):
            v = True
        elif n in (A.FATTR4_NAMED_ATTR, A.FATTR4_CASE_INSENSITIVE):
            v = False
        elif n == A.FATTR4_FSID:
            v = fsid4(*obj.fsid)
        elif n == A.FATTR4_LEASE_TIME:
            v = cfg.lease_time
        elif n == A.FATTR4_RDATTR_ERROR:
            v = int(nfsstat4.NFS4_OK)
        elif n == A.FATTR4_ACLSUPPORT:
            v = 0
        elif n == A.FATTR4_FILEHANDLE:
            v = bytes(obj.fh)
        elif n == A.FATTR4_FILEID:
            v = a.fileid
        elif n in _FSSTAT:
            if st is None:
                if obj.fs is not None:
                    continue
                v = 0  # the pseudo file system: nothing to store there
            else:
                v = {A.FATTR4_FILES_AVAIL: st.afiles, A.FATTR4_FILES_FREE: st.ffiles,
                     A.FATTR4_FILES_TOTAL: st.tfiles, A.FATTR4_SPACE_AVAIL: st.abytes,
                     A.FATTR4_SPACE_FREE: st.fbytes, A.FATTR4_SPACE_TOTAL: st.tbytes}[n]
        elif n == A.FATTR4_MAXFILESIZE:
            v = MAXFILESIZE
        elif n == A.FATTR4_MAXLINK:
            v = LINK_MAX
        elif n == A.FATTR4_MAXNAME:
            v = NAME_MAX
        elif n in (A.FATTR4_MAXREAD, A.FATTR4_MAXWRITE):
            v = cfg.max_io
        elif n == A.FATTR4_MODE:
            v = a.mode & 0o7777
        elif n == A.FATTR4_NUMLINKS:
            v = a.nlink
        elif n == A.FATTR4_OWNER:
            v = owner_name(a.uid, cfg.domain)
        elif n == A.FATTR4_OWNER_GROUP:
            v = group_name(a.gid, cfg.domain)
        elif n == A.FATTR4_RAWDEV:
            v = specdata4(a.rdev_major, a.rdev_minor)
        elif n == A.FATTR4_SPACE_USED:
            v = a.used
        elif n == A.FATTR4_TIME_ACCESS:
            v = _time(a.atime_ns)
        elif n == A.FATTR4_TIME_DELTA:
            v = nfstime4(0, 1)
        elif n == A.FATTR4_TIME_METADATA:
            v = _time(a.ctime_ns)
        elif n == A.FATTR4_TIME_MODIFY:
            v = _time(a.mtime_ns)
        elif n == A.FATTR4_MOUNTED_ON_FILEID:
            v = a.fileid if obj.mounted_on is None else obj.mounted_on
        elif n == A.FATTR4_FS_LAYOUT_TYPES:
            v = []
        elif n == A.FATTR4_SUPPATTR_EXCLCREAT:
            v = bitmap(EXCLCREAT)
        else:
            continue
        out[n] = v
    return out


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

