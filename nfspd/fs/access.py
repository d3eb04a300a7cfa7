"""Permission decisions for READ, WRITE and ACCESS, made the way the kernel makes them.

These calls cannot be left to the kernel: the data of a regular file does not
live in its metafile. Pure functions of (mode, owner, group) and the caller
(nfspd/fs/types.py Caller). Namespace changes and SETATTR are left to the
kernel instead, run under the caller's credentials (nfspd/fs/creds.py),
except where the kernel would give the caller root's answer
(owner_may).

Classes as in generic_permission(): the owner class if the caller owns the
object, else the group class if the object's group is the caller's gid or one of
its supplementary gids, else other. Root (uid 0) may read and write anything and
search any directory, but executes a non-directory only if some x bit is set.

Linux nfsd's NFSD_MAY_OWNER_OVERRIDE: READ and WRITE of a regular file are
allowed to its owner whatever the mode (a client creating a 0444 file and then
writing to it through an fd opened before the chmod, e.g. `cp -p`, `tar`), and
READ is also allowed when execute is (the client loads executables with READ).
"""

import stat

from common.nfs3 import (ACCESS3_DELETE, ACCESS3_EXECUTE, ACCESS3_EXTEND, ACCESS3_LOOKUP,
                         ACCESS3_MODIFY, ACCESS3_READ, nfsstat3)
from nfspd.fs.types import FsError

R, W, X = 4, 2, 1

ACCESS3_ALL = (ACCESS3_READ | ACCESS3_LOOKUP | ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_DELETE
               | ACCESS3_EXECUTE)
_CHANGES = ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_DELETE


def check_writable(caller):
    """A read-only client may change nothing: ROFS, before any other check."""
    if caller.readonly:
        raise FsError(nfsstat3.NFS3ERR_ROFS)


def owner_may(dir_st, caller, want):
    """Whether the kernel's answer to the caller asking for ``want`` (R, W, X)
    on this directory (stat ``dir_st``) is root's: the caller owns it, and its
    owner bits grant ``want``. For a directory's owner those bits decide
    whatever its ACL (the ACL's owner entry is those bits), and a sticky bit
    never stops the directory's owner; what else refuses a lookup or a
    change of names (an immutable or append-only object, a read-only file
    system, a directory not empty) refuses root alike. (A security module
    confining nfspd could tell the two apart, AppArmor's owner rules compare
    the fsuid; nfspd is not meant to run confined, a profile having to allow
    every user's files anyway.) Looking a name up (X: objects.searchable_by)
    or adding, removing or renaming one (W | X: may_create(), may_delete()) is
    then done without a switch to the caller's credentials (four system
    calls, 5-12 us). Not for LINK (Linux's protected_hardlinks looks at the
    caller), nor a directory moved to another parent (the kernel wants write
    permission on it too); what is made must still end up the caller's
    (MetaFS.create_or_open)."""
    return caller.uid == dir_st.st_uid and (dir_st.st_mode >> 6) & want == want


def permitted(mode, uid, gid, caller, want):
    """May caller do `want` (a combination of R, W, X) on an object with this
    mode/owner/group, by the mode bits alone?"""
    if caller.uid == 0:
        if want & X and not stat.S_ISDIR(mode) and not mode & 0o111:
            return False
        return True
    if caller.uid == uid:
        bits = (mode >> 6) & 7
    elif caller.gid == gid or gid in caller.gids:
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return bits & want == want


def may_read(mode, uid, gid, caller):
    """READ of a regular file (owner override, read-if-exec)."""
    if caller.uid == uid:
        return True
    return permitted(mode, uid, gid, caller, R) or permitted(mode, uid, gid, caller, X)


def may_write(mode, uid, gid, caller):
    """WRITE (and size changes) of a regular file (owner override); never for a
    read-only client."""
    if caller.readonly:
        return False
    if caller.uid == uid:
        return True
    return permitted(mode, uid, gid, caller, W)


def access3(mode, uid, gid, caller, mask):
    """The ACCESS3 bits of `mask` that caller is granted (RFC 1813 3.3.4),
    following Linux nfsd's tables: for a directory READ=r, LOOKUP=x, MODIFY and
    EXTEND = w+x, DELETE = w+x (removing entries); for anything else READ=r,
    EXECUTE=x, MODIFY/EXTEND=w, and DELETE is never granted (it means nothing
    there). No owner override here (nfsd has none for ACCESS either): the client
    uses the answer to judge open(2) locally. A read-only client gets no
    MODIFY/EXTEND/DELETE."""
    granted = 0
    if stat.S_ISDIR(mode):
        table = ((ACCESS3_READ, R), (ACCESS3_LOOKUP, X), (ACCESS3_MODIFY, W | X),
                 (ACCESS3_EXTEND, W | X), (ACCESS3_DELETE, W | X))
    else:
        table = ((ACCESS3_READ, R), (ACCESS3_EXECUTE, X), (ACCESS3_MODIFY, W),
                 (ACCESS3_EXTEND, W))
    for bit, want in table:
        if mask & bit and permitted(mode, uid, gid, caller, want):
            granted |= bit
    if caller.readonly:
        granted &= ~_CHANGES
    return granted & mask
