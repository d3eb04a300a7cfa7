"""NFS version 4.1 and 4.2 (RFC 5661/8881, XDR in RFC 5662 and RFC 7863): constants and XDR types, sans-IO.

Names are the RFCs' so each type can be held against the text (the .x of RFC
7863, plus RFC 8276's extended-attribute operations). Representation choices,
as in common/nfs3.py:

* Typedefs of opaque (nfs_fh4, component4, utf8string ...) are bytes; a
  ``typedef T name<>`` is a list.
* Bool-discriminated unions with a void FALSE arm (newtime4, newoffset4,
  newsize4, layoutreturn_stateid) are xdr.Optional: None or the value;
  locker4, whose FALSE arm is not void, is a Union switched on Bool.
* ``entry4 *nextentry`` is xdr.LinkedList: dirlist4.entries is a list.
* Results that are a bare status (LOOKUP4res, PUTFH4res ...) are one-field
  structs, as in the .x; the others are unions switched on nfsstat4.
* fattr4.attr_vals stays opaque here; encode_attrs / decode_attrs go between
  it and {attribute number: value} with the FATTR4_TYPES table.

COMPOUND: decode_compound decodes a request operation by operation the way
Linux nfsd does (see its docstring); the reply is built one encoded result at
a time (encode_resop, compound_res_bytes) so the server knows its size as it
goes.
"""

import enum
import struct

from common.rpc import AUTHSYS_MAX_GIDS, AUTHSYS_MAX_MACHINENAME
from common.xdr import (
    Array, Bool, Enum, FixedOpaque, Int32, Int64, LinkedList, Opaque, Optional, Packer, String,
    Struct, UInt32, UInt64, Union, Unpacker, Void, XdrError, decode, encode,
)

_u32 = struct.Struct(">I")
_i32 = struct.Struct(">i")

NFS4_PROGRAM = 100003
NFS_V4 = 4

NFS4_FHSIZE = 128
NFS4_VERIFIER_SIZE = 8
NFS4_OTHER_SIZE = 12
NFS4_SESSIONID_SIZE = 16
NFS4_DEVICEID4_SIZE = 16


class nfsstat4(enum.IntEnum):
    NFS4_OK = 0
    NFS4ERR_PERM = 1
    NFS4ERR_NOENT = 2
    NFS4ERR_IO = 5
    NFS4ERR_NXIO = 6
    NFS4ERR_ACCESS = 13
    NFS4ERR_EXIST = 17
    NFS4ERR_XDEV = 18
    NFS4ERR_NOTDIR = 20
    NFS4ERR_ISDIR = 21
    NFS4ERR_INVAL = 22
    NFS4ERR_FBIG = 27
    NFS4ERR_NOSPC = 28
    NFS4ERR_ROFS = 30
    NFS4ERR_MLINK = 31
    NFS4ERR_NAMETOOLONG = 63
    NFS4ERR_NOTEMPTY = 66
    NFS4ERR_DQUOT = 69
    NFS4ERR_STALE = 70
    NFS4ERR_BADHANDLE = 10001
    NFS4ERR_BAD_COOKIE = 10003
    NFS4ERR_NOTSUPP = 10004
    NFS4ERR_TOOSMALL = 10005
    NFS4ERR_SERVERFAULT = 10006
    NFS4ERR_BADTYPE = 10007
    NFS4ERR_DELAY = 10008
    NFS4ERR_SAME = 10009
    NFS4ERR_DENIED = 10010
    NFS4ERR_EXPIRED = 10011
    NFS4ERR_LOCKED = 10012
    NFS4ERR_GRACE = 10013
    NFS4ERR_FHEXPIRED = 10014
    NFS4ERR_SHARE_DENIED = 10015
    NFS4ERR_WRONGSEC = 10016
    NFS4ERR_CLID_INUSE = 10017
    NFS4ERR_RESOURCE = 10018
    NFS4ERR_MOVED = 10019
    NFS4ERR_NOFILEHANDLE = 10020
    NFS4ERR_MINOR_VERS_MISMATCH = 10021
    NFS4ERR_STALE_CLIENTID = 10022
    NFS4ERR_STALE_STATEID = 10023
    NFS4ERR_OLD_STATEID = 10024
    NFS4ERR_BAD_STATEID = 10025
    NFS4ERR_BAD_SEQID = 10026
    NFS4ERR_NOT_SAME = 10027
    NFS4ERR_LOCK_RANGE = 10028
    NFS4ERR_SYMLINK = 10029
    NFS4ERR_RESTOREFH = 10030
    NFS4ERR_LEASE_MOVED = 10031
    NFS4ERR_ATTRNOTSUPP = 10032
    NFS4ERR_NO_GRACE = 10033
    NFS4ERR_RECLAIM_BAD = 10034
    NFS4ERR_RECLAIM_CONFLICT = 10035
    NFS4ERR_BADXDR = 10036
    NFS4ERR_LOCKS_HELD = 10037
    NFS4ERR_OPENMODE = 10038
    NFS4ERR_BADOWNER = 10039
    NFS4ERR_BADCHAR = 10040
    NFS4ERR_BADNAME = 10041
    NFS4ERR_BAD_RANGE = 10042
    NFS4ERR_LOCK_NOTSUPP = 10043
    NFS4ERR_OP_ILLEGAL = 10044
    NFS4ERR_DEADLOCK = 10045
    NFS4ERR_FILE_OPEN = 10046
    NFS4ERR_ADMIN_REVOKED = 10047
    NFS4ERR_CB_PATH_DOWN = 10048
    NFS4ERR_BADIOMODE = 10049
    NFS4ERR_BADLAYOUT = 10050
    NFS4ERR_BAD_SESSION_DIGEST = 10051
    NFS4ERR_BADSESSION = 10052
    NFS4ERR_BADSLOT = 10053
    NFS4ERR_COMPLETE_ALREADY = 10054
    NFS4ERR_CONN_NOT_BOUND_TO_SESSION = 10055
    NFS4ERR_DELEG_ALREADY_WANTED = 10056
    NFS4ERR_BACK_CHAN_BUSY = 10057
    NFS4ERR_LAYOUTTRYLATER = 10058
    NFS4ERR_LAYOUTUNAVAILABLE = 10059
    NFS4ERR_NOMATCHING_LAYOUT = 10060
    NFS4ERR_RECALLCONFLICT = 10061
    NFS4ERR_UNKNOWN_LAYOUTTYPE = 10062
    NFS4ERR_SEQ_MISORDERED = 10063
    NFS4ERR_SEQUENCE_POS = 10064
    NFS4ERR_REQ_TOO_BIG = 10065
    NFS4ERR_REP_TOO_BIG = 10066
    NFS4ERR_REP_TOO_BIG_TO_CACHE = 10067
    NFS4ERR_RETRY_UNCACHED_REP = 10068
    NFS4ERR_UNSAFE_COMPOUND = 10069
    NFS4ERR_TOO_MANY_OPS = 10070
    NFS4ERR_OP_NOT_IN_SESSION = 10071
    NFS4ERR_HASH_ALG_UNSUPP = 10072
    NFS4ERR_CLIENTID_BUSY = 10074
    NFS4ERR_PNFS_IO_HOLE = 10075
    NFS4ERR_SEQ_FALSE_RETRY = 10076
    NFS4ERR_BAD_HIGH_SLOT = 10077
    NFS4ERR_DEADSESSION = 10078
    NFS4ERR_ENCR_ALG_UNSUPP = 10079
    NFS4ERR_PNFS_NO_LAYOUT = 10080
    NFS4ERR_NOT_ONLY_OP = 10081
    NFS4ERR_WRONG_CRED = 10082
    NFS4ERR_WRONG_TYPE = 10083
    NFS4ERR_DIRDELEG_UNAVAIL = 10084
    NFS4ERR_REJECT_DELEG = 10085
    NFS4ERR_RETURNCONFLICT = 10086
    NFS4ERR_DELEG_REVOKED = 10087
    NFS4ERR_PARTNER_NOTSUPP = 10088
    NFS4ERR_PARTNER_NO_AUTH = 10089
    NFS4ERR_UNION_NOTSUPP = 10090
    NFS4ERR_OFFLOAD_DENIED = 10091
    NFS4ERR_WRONG_LFS = 10092
    NFS4ERR_BADLABEL = 10093
    NFS4ERR_OFFLOAD_NO_REQS = 10094
    # RFC 8276 (extended attributes), numbered after the RFC 7863 list.
    NFS4ERR_NOXATTR = 10095
    NFS4ERR_XATTR2BIG = 10096


class nfs_opnum4(enum.IntEnum):
    OP_ACCESS = 3
    OP_CLOSE = 4
    OP_COMMIT = 5
    OP_CREATE = 6
    OP_DELEGPURGE = 7
    OP_DELEGRETURN = 8
    OP_GETATTR = 9
    OP_GETFH = 10
    OP_LINK = 11
    OP_LOCK = 12
    OP_LOCKT = 13
    OP_LOCKU = 14
    OP_LOOKUP = 15
    OP_LOOKUPP = 16
    OP_NVERIFY = 17
    OP_OPEN = 18
    OP_OPENATTR = 19
    OP_OPEN_CONFIRM = 20
    OP_OPEN_DOWNGRADE = 21
    OP_PUTFH = 22
    OP_PUTPUBFH = 23
    OP_PUTROOTFH = 24
    OP_READ = 25
    OP_READDIR = 26
    OP_READLINK = 27
    OP_REMOVE = 28
    OP_RENAME = 29
    OP_RENEW = 30
    OP_RESTOREFH = 31
    OP_SAVEFH = 32
    OP_SECINFO = 33
    OP_SETATTR = 34
    OP_SETCLIENTID = 35
    OP_SETCLIENTID_CONFIRM = 36
    OP_VERIFY = 37
    OP_WRITE = 38
    OP_RELEASE_LOCKOWNER = 39
    OP_BACKCHANNEL_CTL = 40
    OP_BIND_CONN_TO_SESSION = 41
    OP_EXCHANGE_ID = 42
    OP_CREATE_SESSION = 43
    OP_DESTROY_SESSION = 44
    OP_FREE_STATEID = 45
    OP_GET_DIR_DELEGATION = 46
    OP_GETDEVICEINFO = 47
    OP_GETDEVICELIST = 48
    OP_LAYOUTCOMMIT = 49
    OP_LAYOUTGET = 50
    OP_LAYOUTRETURN = 51
    OP_SECINFO_NO_NAME = 52
    OP_SEQUENCE = 53
    OP_SET_SSV = 54
    OP_TEST_STATEID = 55
    OP_WANT_DELEGATION = 56
    OP_DESTROY_CLIENTID = 57
    OP_RECLAIM_COMPLETE = 58
    OP_ALLOCATE = 59
    OP_COPY = 60
    OP_COPY_NOTIFY = 61
    OP_DEALLOCATE = 62
    OP_IO_ADVISE = 63
    OP_LAYOUTERROR = 64
    OP_LAYOUTSTATS = 65
    OP_OFFLOAD_CANCEL = 66
    OP_OFFLOAD_STATUS = 67
    OP_READ_PLUS = 68
    OP_SEEK = 69
    OP_WRITE_SAME = 70
    OP_CLONE = 71
    OP_GETXATTR = 72
    OP_SETXATTR = 73
    OP_LISTXATTRS = 74
    OP_REMOVEXATTR = 75
    OP_ILLEGAL = 10044


# --- Limits -------------------------------------------------------------------------
# The .x leaves most strings and arrays unbounded. Every length is checked
# against the bytes present anyway (common/xdr.py); these bounds only keep a
# hostile length from mattering where a legitimate value is small. Names
# longer than NAME_MAX still decode so the server can answer
# NFS4ERR_NAMETOOLONG rather than NFS4ERR_BADXDR.

NFS4_OPAQUE_LIMIT = 1024
NFS4_UTF8STRING_MAX = 4096
NFS4_LINKTEXT_MAX = 4096
# Attributes are numbered up to 82 (three words); room for sixteen keeps a
# bitmap from a newer client decodable.
NFS4_BITMAP4_MAX_WORDS = 16
# A bitmap4's words, by their count, in one struct call.
_bitmap_words = [struct.Struct(f">{n}I") for n in range(NFS4_BITMAP4_MAX_WORDS + 1)]

NFS4_INT64_MAX = 0x7FFFFFFFFFFFFFFF
NFS4_UINT64_MAX = 0xFFFFFFFFFFFFFFFF
NFS4_INT32_MAX = 0x7FFFFFFF
NFS4_UINT32_MAX = 0xFFFFFFFF
NFS4_MAXFILELEN = 0xFFFFFFFFFFFFFFFF
NFS4_MAXFILEOFF = 0xFFFFFFFFFFFFFFFE


# --- Enums ----------------------------------------------------------------------------

class nfs_ftype4(enum.IntEnum):
    NF4REG = 1
    NF4DIR = 2
    NF4BLK = 3
    NF4CHR = 4
    NF4LNK = 5
    NF4SOCK = 6
    NF4FIFO = 7
    NF4ATTRDIR = 8
    NF4NAMEDATTR = 9


class time_how4(enum.IntEnum):
    SET_TO_SERVER_TIME4 = 0
    SET_TO_CLIENT_TIME4 = 1


class layouttype4(enum.IntEnum):
    LAYOUT4_NFSV4_1_FILES = 0x1
    LAYOUT4_OSD2_OBJECTS = 0x2
    LAYOUT4_BLOCK_VOLUME = 0x3
    LAYOUT4_FLEX_FILES = 0x4  # RFC 8435


class layoutiomode4(enum.IntEnum):
    LAYOUTIOMODE4_READ = 1
    LAYOUTIOMODE4_RW = 2
    LAYOUTIOMODE4_ANY = 3


LAYOUT4_RET_REC_FILE = 1
LAYOUT4_RET_REC_FSID = 2
LAYOUT4_RET_REC_ALL = 3


class layoutreturn_type4(enum.IntEnum):
    LAYOUTRETURN4_FILE = LAYOUT4_RET_REC_FILE
    LAYOUTRETURN4_FSID = LAYOUT4_RET_REC_FSID
    LAYOUTRETURN4_ALL = LAYOUT4_RET_REC_ALL


class fs4_status_type(enum.IntEnum):
    STATUS4_FIXED = 1
    STATUS4_UPDATED = 2
    STATUS4_VERSIONED = 3
    STATUS4_WRITABLE = 4
    STATUS4_REFERRAL = 5


class netloc_type4(enum.IntEnum):
    NL4_NAME = 1
    NL4_URL = 2
    NL4_NETADDR = 3


class change_attr_type4(enum.IntEnum):
    NFS4_CHANGE_TYPE_IS_MONOTONIC_INCR = 0
    NFS4_CHANGE_TYPE_IS_VERSION_COUNTER = 1
    NFS4_CHANGE_TYPE_IS_VERSION_COUNTER_NOPNFS = 2
    NFS4_CHANGE_TYPE_IS_TIME_METADATA = 3
    NFS4_CHANGE_TYPE_IS_UNDEFINED = 4


class data_content4(enum.IntEnum):
    NFS4_CONTENT_DATA = 0
    NFS4_CONTENT_HOLE = 1


class stable_how4(enum.IntEnum):
    UNSTABLE4 = 0
    DATA_SYNC4 = 1
    FILE_SYNC4 = 2


class nfs_lock_type4(enum.IntEnum):
    READ_LT = 1
    WRITE_LT = 2
    READW_LT = 3
    WRITEW_LT = 4


class createmode4(enum.IntEnum):
    UNCHECKED4 = 0
    GUARDED4 = 1
    EXCLUSIVE4 = 2
    EXCLUSIVE4_1 = 3


class opentype4(enum.IntEnum):
    OPEN4_NOCREATE = 0
    OPEN4_CREATE = 1


class limit_by4(enum.IntEnum):
    NFS_LIMIT_SIZE = 1
    NFS_LIMIT_BLOCKS = 2


class open_delegation_type4(enum.IntEnum):
    OPEN_DELEGATE_NONE = 0
    OPEN_DELEGATE_READ = 1
    OPEN_DELEGATE_WRITE = 2
    OPEN_DELEGATE_NONE_EXT = 3


class open_claim_type4(enum.IntEnum):
    CLAIM_NULL = 0
    CLAIM_PREVIOUS = 1
    CLAIM_DELEGATE_CUR = 2
    CLAIM_DELEGATE_PREV = 3
    CLAIM_FH = 4
    CLAIM_DELEG_CUR_FH = 5
    CLAIM_DELEG_PREV_FH = 6


class why_no_delegation4(enum.IntEnum):
    WND4_NOT_WANTED = 0
    WND4_CONTENTION = 1
    WND4_RESOURCE = 2
    WND4_NOT_SUPP_FTYPE = 3
    WND4_WRITE_DELEG_NOT_SUPP_FTYPE = 4
    WND4_NOT_SUPP_UPGRADE = 5
    WND4_NOT_SUPP_DOWNGRADE = 6
    WND4_CANCELLED = 7
    WND4_IS_DIR = 8


class rpc_gss_svc_t(enum.IntEnum):
    RPC_GSS_SVC_NONE = 1
    RPC_GSS_SVC_INTEGRITY = 2
    RPC_GSS_SVC_PRIVACY = 3


class channel_dir_from_client4(enum.IntEnum):
    CDFC4_FORE = 0x1
    CDFC4_BACK = 0x2
    CDFC4_FORE_OR_BOTH = 0x3
    CDFC4_BACK_OR_BOTH = 0x7


class channel_dir_from_server4(enum.IntEnum):
    CDFS4_FORE = 0x1
    CDFS4_BACK = 0x2
    CDFS4_BOTH = 0x3


class state_protect_how4(enum.IntEnum):
    SP4_NONE = 0
    SP4_MACH_CRED = 1
    SP4_SSV = 2


class gddrnf4_status(enum.IntEnum):
    GDD4_OK = 0
    GDD4_UNAVAIL = 1


class secinfo_style4(enum.IntEnum):
    SECINFO_STYLE4_CURRENT_FH = 0
    SECINFO_STYLE4_PARENT = 1


class IO_ADVISE_type4(enum.IntEnum):
    IO_ADVISE4_NORMAL = 0
    IO_ADVISE4_SEQUENTIAL = 1
    IO_ADVISE4_SEQUENTIAL_BACKWARDS = 2
    IO_ADVISE4_RANDOM = 3
    IO_ADVISE4_WILLNEED = 4
    IO_ADVISE4_WILLNEED_OPPORTUNISTIC = 5
    IO_ADVISE4_DONTNEED = 6
    IO_ADVISE4_NOREUSE = 7
    IO_ADVISE4_READ = 8
    IO_ADVISE4_WRITE = 9
    IO_ADVISE4_INIT_PROXIMITY = 10


class setxattr_option4(enum.IntEnum):  # RFC 8276
    SETXATTR4_EITHER = 0
    SETXATTR4_CREATE = 1
    SETXATTR4_REPLACE = 2


# --- Flag constants ---------------------------------------------------------------------

ACCESS4_READ = 0x00000001
ACCESS4_LOOKUP = 0x00000002
ACCESS4_MODIFY = 0x00000004
ACCESS4_EXTEND = 0x00000008
ACCESS4_DELETE = 0x00000010
ACCESS4_EXECUTE = 0x00000020
ACCESS4_XAREAD = 0x00000040  # RFC 8276
ACCESS4_XAWRITE = 0x00000080
ACCESS4_XALIST = 0x00000100

ACL4_SUPPORT_ALLOW_ACL = 0x00000001
ACL4_SUPPORT_DENY_ACL = 0x00000002
ACL4_SUPPORT_AUDIT_ACL = 0x00000004
ACL4_SUPPORT_ALARM_ACL = 0x00000008

ACE4_ACCESS_ALLOWED_ACE_TYPE = 0x00000000
ACE4_ACCESS_DENIED_ACE_TYPE = 0x00000001
ACE4_SYSTEM_AUDIT_ACE_TYPE = 0x00000002
ACE4_SYSTEM_ALARM_ACE_TYPE = 0x00000003

MODE4_SUID = 0x800
MODE4_SGID = 0x400
MODE4_SVTX = 0x200
MODE4_RUSR = 0x100
MODE4_WUSR = 0x080
MODE4_XUSR = 0x040
MODE4_RGRP = 0x020
MODE4_WGRP = 0x010
MODE4_XGRP = 0x008
MODE4_ROTH = 0x004
MODE4_WOTH = 0x002
MODE4_XOTH = 0x001

FH4_PERSISTENT = 0x00000000
FH4_NOEXPIRE_WITH_OPEN = 0x00000001
FH4_VOLATILE_ANY = 0x00000002
FH4_VOL_MIGRATION = 0x00000004
FH4_VOL_RENAME = 0x00000008

OPEN4_SHARE_ACCESS_READ = 0x00000001
OPEN4_SHARE_ACCESS_WRITE = 0x00000002
OPEN4_SHARE_ACCESS_BOTH = 0x00000003
OPEN4_SHARE_DENY_NONE = 0x00000000
OPEN4_SHARE_DENY_READ = 0x00000001
OPEN4_SHARE_DENY_WRITE = 0x00000002
OPEN4_SHARE_DENY_BOTH = 0x00000003
OPEN4_SHARE_ACCESS_WANT_DELEG_MASK = 0xFF00
OPEN4_SHARE_ACCESS_WANT_NO_PREFERENCE = 0x0000
OPEN4_SHARE_ACCESS_WANT_READ_DELEG = 0x0100
OPEN4_SHARE_ACCESS_WANT_WRITE_DELEG = 0x0200
OPEN4_SHARE_ACCESS_WANT_ANY_DELEG = 0x0300
OPEN4_SHARE_ACCESS_WANT_NO_DELEG = 0x0400
OPEN4_SHARE_ACCESS_WANT_CANCEL = 0x0500
OPEN4_SHARE_ACCESS_WANT_SIGNAL_DELEG_WHEN_RESRC_AVAIL = 0x10000
OPEN4_SHARE_ACCESS_WANT_PUSH_DELEG_WHEN_UNCONTENDED = 0x20000

OPEN4_RESULT_CONFIRM = 0x00000002
OPEN4_RESULT_LOCKTYPE_POSIX = 0x00000004
OPEN4_RESULT_PRESERVE_UNLINKED = 0x00000008
OPEN4_RESULT_MAY_NOTIFY_LOCK = 0x00000020

EXCHGID4_FLAG_SUPP_MOVED_REFER = 0x00000001
EXCHGID4_FLAG_SUPP_MOVED_MIGR = 0x00000002
EXCHGID4_FLAG_SUPP_FENCE_OPS = 0x00000004
EXCHGID4_FLAG_BIND_PRINC_STATEID = 0x00000100
EXCHGID4_FLAG_USE_NON_PNFS = 0x00010000
EXCHGID4_FLAG_USE_PNFS_MDS = 0x00020000
EXCHGID4_FLAG_USE_PNFS_DS = 0x00040000
EXCHGID4_FLAG_MASK_PNFS = 0x00070000
EXCHGID4_FLAG_UPD_CONFIRMED_REC_A = 0x40000000
EXCHGID4_FLAG_CONFIRMED_R = 0x80000000

CREATE_SESSION4_FLAG_PERSIST = 0x00000001
CREATE_SESSION4_FLAG_CONN_BACK_CHAN = 0x00000002
CREATE_SESSION4_FLAG_CONN_RDMA = 0x00000004

SEQ4_STATUS_CB_PATH_DOWN = 0x00000001
SEQ4_STATUS_CB_GSS_CONTEXTS_EXPIRING = 0x00000002
SEQ4_STATUS_CB_GSS_CONTEXTS_EXPIRED = 0x00000004
SEQ4_STATUS_EXPIRED_ALL_STATE_REVOKED = 0x00000008
SEQ4_STATUS_EXPIRED_SOME_STATE_REVOKED = 0x00000010
SEQ4_STATUS_ADMIN_STATE_REVOKED = 0x00000020
SEQ4_STATUS_RECALLABLE_STATE_REVOKED = 0x00000040
SEQ4_STATUS_LEASE_MOVED = 0x00000080
SEQ4_STATUS_RESTART_RECLAIM_NEEDED = 0x00000100
SEQ4_STATUS_CB_PATH_DOWN_SESSION = 0x00000200
SEQ4_STATUS_BACKCHANNEL_FAULT = 0x00000400
SEQ4_STATUS_DEVID_CHANGED = 0x00000800
SEQ4_STATUS_DEVID_DELETED = 0x00001000

FSCHARSET_CAP4_CONTAINS_NON_UTF8 = 0x1
FSCHARSET_CAP4_ALLOWS_ONLY_UTF8 = 0x2

RET4_DURATION_INFINITE = 0xFFFFFFFFFFFFFFFF

# RPC authentication flavors the unions below switch on (RFC 5531, 2203).
AUTH_NONE = 0
AUTH_SYS = 1
RPCSEC_GSS = 6


# --- Basic data types -------------------------------------------------------------------

class OpenEnum(Enum):
    """An enum whose values the RFCs extend (layout types, file types): a value
    not in the IntEnum decodes as a plain int instead of failing, so that the
    server answers with the operation's own error (NFS4ERR_UNKNOWN_LAYOUTTYPE,
    NFS4ERR_BADTYPE), as Linux nfsd does, rather than NFS4ERR_BADXDR."""

    def unpack(self, u):
        v = u.unpack_int()
        return self._by_value.get(v, v)


_nfsstat4 = Enum(nfsstat4)
_layouttype4 = OpenEnum(layouttype4)

int32_t = Int32
uint32_t = UInt32
int64_t = Int64
uint64_t = UInt64

attrlist4 = Opaque()
bitmap4 = Array(UInt32, NFS4_BITMAP4_MAX_WORDS)
changeid4 = UInt64
clientid4 = UInt64
count4 = UInt32
length4 = UInt64
mode4 = UInt32
nfs_cookie4 = UInt64
nfs_fh4 = Opaque(NFS4_FHSIZE)
offset4 = UInt64
qop4 = UInt32
sec_oid4 = Opaque(NFS4_OPAQUE_LIMIT)
sequenceid4 = UInt32
seqid4 = UInt32
sessionid4 = FixedOpaque(NFS4_SESSIONID_SIZE)
slotid4 = UInt32
utf8string = Opaque(NFS4_UTF8STRING_MAX)
utf8str_cis = utf8string
utf8str_cs = utf8string
utf8str_mixed = utf8string
component4 = utf8str_cs
linktext4 = Opaque(NFS4_LINKTEXT_MAX)
ascii_REQUIRED4 = utf8string
pathname4 = Array(component4)
verifier4 = FixedOpaque(NFS4_VERIFIER_SIZE)
secret4 = String(NFS4_OPAQUE_LIMIT)
policy4 = UInt32
nfs_lease4 = UInt32
acetype4 = UInt32
aceflag4 = UInt32
acemask4 = UInt32
aclflag4 = UInt32
fs_charset_cap4 = UInt32
deviceid4 = FixedOpaque(NFS4_DEVICEID4_SIZE)
nfl_util4 = UInt32
gsshandle4_t = Opaque(NFS4_OPAQUE_LIMIT)


class nfstime4(Struct):
    seconds: int64_t
    nseconds: uint32_t


class settime4(Union, switch=Enum(time_how4)):
    arms = {time_how4.SET_TO_CLIENT_TIME4: nfstime4}
    default = Void


class fsid4(Struct):
    major: uint64_t
    minor: uint64_t


class change_policy4(Struct):
    cp_major: uint64_t
    cp_minor: uint64_t


class fs_location4(Struct):
    server: Array(utf8str_cis)
    rootpath: pathname4


class fs_locations4(Struct):
    fs_root: pathname4
    locations: Array(fs_location4)


class nfsace4(Struct):
    type: acetype4
    flag: aceflag4
    access_mask: acemask4
    who: utf8str_mixed


class nfsacl41(Struct):
    na41_flag: aclflag4
    na41_aces: Array(nfsace4)


class mode_masked4(Struct):
    mm_value_to_set: mode4
    mm_mask_bits: mode4


class specdata4(Struct):
    specdata1: uint32_t
    specdata2: uint32_t


class netaddr4(Struct):
    na_r_netid: String(NFS4_OPAQUE_LIMIT)
    na_r_addr: String(NFS4_OPAQUE_LIMIT)


class nfs_impl_id4(Struct):
    nii_domain: utf8str_cis
    nii_name: utf8str_cs
    nii_date: nfstime4


class stateid4(Struct):
    seqid: uint32_t
    other: FixedOpaque(NFS4_OTHER_SIZE)


class layout_content4(Struct):
    loc_type: _layouttype4
    loc_body: Opaque()


class layouthint4(Struct):
    loh_type: _layouttype4
    loh_body: Opaque()


class layout4(Struct):
    lo_offset: offset4
    lo_length: length4
    lo_iomode: Enum(layoutiomode4)
    lo_content: layout_content4


class device_addr4(Struct):
    da_layout_type: _layouttype4
    da_addr_body: Opaque()


# The files layout (RFC 8881 section 13): what the opaque bodies above hold
# for LAYOUT4_NFSV4_1_FILES (loh_body, da_addr_body, loc_body).

NFL4_UFLG_MASK = 0x0000003F
NFL4_UFLG_DENSE = 0x00000001
NFL4_UFLG_COMMIT_THRU_MDS = 0x00000002
NFL42_UFLG_IO_ADVISE_THRU_MDS = 0x00000004
NFL4_UFLG_STRIPE_UNIT_SIZE_MASK = 0xFFFFFFC0


class filelayout_hint_care4(enum.IntEnum):
    NFLH4_CARE_DENSE = NFL4_UFLG_DENSE
    NFLH4_CARE_COMMIT_THRU_MDS = NFL4_UFLG_COMMIT_THRU_MDS
    NFL42_CARE_IO_ADVISE_THRU_MDS = NFL42_UFLG_IO_ADVISE_THRU_MDS
    NFLH4_CARE_STRIPE_UNIT_SIZE = 0x00000040
    NFLH4_CARE_STRIPE_COUNT = 0x00000080


class nfsv4_1_file_layouthint4(Struct):
    nflh_care: uint32_t
    nflh_util: nfl_util4
    nflh_stripe_count: count4


multipath_list4 = Array(netaddr4)


class nfsv4_1_file_layout_ds_addr4(Struct):
    nflda_stripe_indices: Array(uint32_t)
    nflda_multipath_ds_list: Array(multipath_list4)


class nfsv4_1_file_layout4(Struct):
    nfl_deviceid: deviceid4
    nfl_util: nfl_util4
    nfl_first_stripe_index: uint32_t
    nfl_pattern_offset: offset4
    nfl_fh_list: Array(nfs_fh4)


class layoutupdate4(Struct):
    lou_type: _layouttype4
    lou_body: Opaque()


class layoutreturn_file4(Struct):
    lrf_offset: offset4
    lrf_length: length4
    lrf_stateid: stateid4
    lrf_body: Opaque()


class layoutreturn4(Union, switch=Enum(layoutreturn_type4)):
    arms = {layoutreturn_type4.LAYOUTRETURN4_FILE: layoutreturn_file4}
    default = Void


class fs4_status(Struct):
    fss_absent: Bool
    fss_type: Enum(fs4_status_type)
    fss_source: utf8str_cs
    fss_current: utf8str_cs
    fss_age: int32_t
    fss_version: nfstime4


class threshold_item4(Struct):
    thi_layout_type: _layouttype4
    thi_hintset: bitmap4
    thi_hintlist: Opaque()


class mdsthreshold4(Struct):
    mth_hints: Array(threshold_item4)


class retention_get4(Struct):
    rg_duration: uint64_t
    rg_begin_time: Array(nfstime4, 1)


class retention_set4(Struct):
    rs_enable: Bool
    rs_duration: Array(uint64_t, 1)


class netloc4(Union, switch=Enum(netloc_type4)):
    arms = {
        netloc_type4.NL4_NAME: utf8str_cis,
        netloc_type4.NL4_URL: utf8str_cis,
        netloc_type4.NL4_NETADDR: netaddr4,
    }


class labelformat_spec4(Struct):
    lfs_lfs: policy4
    lfs_pi: policy4


class sec_label4(Struct):
    slai_lfs: labelformat_spec4
    slai_data: Opaque()


class app_data_block4(Struct):
    adb_offset: offset4
    adb_block_size: length4
    adb_block_count: length4
    adb_reloff_blocknum: length4
    adb_block_num: count4
    adb_reloff_pattern: length4
    adb_pattern: Opaque()


class data4(Struct):
    d_offset: offset4
    d_data: Opaque()


class data_info4(Struct):
    di_offset: offset4
    di_length: length4


class write_response4(Struct):
    wr_callback_id: Array(stateid4, 1)
    wr_count: length4
    wr_committed: Enum(stable_how4)
    wr_writeverf: verifier4


class fs_locations_server4(Struct):
    fls_currency: int32_t
    fls_info: Opaque()
    fls_server: utf8str_cis


class fs_locations_item4(Struct):
    fli_entries: Array(fs_locations_server4)
    fli_rootpath: pathname4


class fs_locations_info4(Struct):
    fli_flags: uint32_t
    fli_valid_for: int32_t
    fli_fs_root: pathname4
    fli_items: Array(fs_locations_item4)


class fattr4(Struct):
    attrmask: bitmap4
    attr_vals: attrlist4


class change_info4(Struct):
    atomic: Bool
    before: changeid4
    after: changeid4


clientaddr4 = netaddr4


class cb_client4(Struct):
    cb_program: uint32_t
    cb_location: netaddr4


class nfs_client_id4(Struct):
    verifier: verifier4
    id: Opaque(NFS4_OPAQUE_LIMIT)


class client_owner4(Struct):
    co_verifier: verifier4
    co_ownerid: Opaque(NFS4_OPAQUE_LIMIT)


class server_owner4(Struct):
    so_minor_id: uint64_t
    so_major_id: Opaque(NFS4_OPAQUE_LIMIT)


class state_owner4(Struct):
    clientid: clientid4
    owner: Opaque(NFS4_OPAQUE_LIMIT)


open_owner4 = state_owner4
lock_owner4 = state_owner4


class authsys_parms(Struct):
    """RFC 5531 appendix A, as CREATE_SESSION and BACKCHANNEL_CTL carry it."""
    stamp: UInt32
    machinename: String(AUTHSYS_MAX_MACHINENAME)
    uid: UInt32
    gid: UInt32
    gids: Array(UInt32, AUTHSYS_MAX_GIDS)


def _res(name, ok_type, **other_arms):
    """``union <name> switch (nfsstat4 status) { case NFS4_OK: ok_type; [case
    NFS4ERR_x: ...;] default: void; }``, the shape of most results."""
    arms = {nfsstat4.NFS4_OK: ok_type}
    arms.update({nfsstat4[k]: v for k, v in other_arms.items()})
    return type(name, (Union,), {
        "arms": arms, "default": Void, "__module__": __name__,
        "__qualname__": name, "__slots__": ()},
        switch=_nfsstat4)


def _status_res(name, field="status"):
    """``struct <name> { nfsstat4 <field>; }``: results that are a status only."""
    return type(Struct)(name, (Struct,), {
        "__annotations__": {field: _nfsstat4}, "__module__": __name__, "__qualname__": name})


# --- Operations, in the .x's order -----------------------------------------------------

class ACCESS4args(Struct):
    access: uint32_t


class ACCESS4resok(Struct):
    supported: uint32_t
    access: uint32_t


ACCESS4res = _res("ACCESS4res", ACCESS4resok)


class CLONE4args(Struct):
    cl_src_stateid: stateid4
    cl_dst_stateid: stateid4
    cl_src_offset: offset4
    cl_dst_offset: offset4
    cl_count: length4


CLONE4res = _status_res("CLONE4res", "cl_status")


class CLOSE4args(Struct):
    seqid: seqid4
    open_stateid: stateid4


CLOSE4res = _res("CLOSE4res", stateid4)


class COMMIT4args(Struct):
    offset: offset4
    count: count4


class COMMIT4resok(Struct):
    writeverf: verifier4


COMMIT4res = _res("COMMIT4res", COMMIT4resok)


class createtype4(Union, switch=OpenEnum(nfs_ftype4)):
    arms = {
        nfs_ftype4.NF4LNK: linktext4,
        nfs_ftype4.NF4BLK: specdata4,
        nfs_ftype4.NF4CHR: specdata4,
        nfs_ftype4.NF4SOCK: Void,
        nfs_ftype4.NF4FIFO: Void,
        nfs_ftype4.NF4DIR: Void,
    }
    default = Void  # the server answers NFS4ERR_BADTYPE


class CREATE4args(Struct):
    objtype: createtype4
    objname: component4
    createattrs: fattr4


class CREATE4resok(Struct):
    cinfo: change_info4
    attrset: bitmap4


CREATE4res = _res("CREATE4res", CREATE4resok)


class DELEGPURGE4args(Struct):
    clientid: clientid4


DELEGPURGE4res = _status_res("DELEGPURGE4res")


class DELEGRETURN4args(Struct):
    deleg_stateid: stateid4


DELEGRETURN4res = _status_res("DELEGRETURN4res")


class GETATTR4args(Struct):
    attr_request: bitmap4


class GETATTR4resok(Struct):
    obj_attributes: fattr4


GETATTR4res = _res("GETATTR4res", GETATTR4resok)


class GETFH4resok(Struct):
    object: nfs_fh4


def getfh4resok_bytes(fh):
    """The XDR of GETFH4resok(fh), packed without the generic codec."""
    n = len(fh)
    if n > NFS4_FHSIZE:
        raise XdrError("GETFH4resok: handle too long")
    return _u32.pack(n) + bytes(fh) + _PAD[n & 3]


GETFH4res = _res("GETFH4res", GETFH4resok)


class LINK4args(Struct):
    newname: component4


class LINK4resok(Struct):
    cinfo: change_info4


LINK4res = _res("LINK4res", LINK4resok)


class open_to_lock_owner4(Struct):
    open_seqid: seqid4
    open_stateid: stateid4
    lock_seqid: seqid4
    lock_owner: lock_owner4


class exist_lock_owner4(Struct):
    lock_stateid: stateid4
    lock_seqid: seqid4


class locker4(Union, switch=Bool):
    arms = {True: open_to_lock_owner4, False: exist_lock_owner4}


class LOCK4args(Struct):
    locktype: Enum(nfs_lock_type4)
    reclaim: Bool
    offset: offset4
    length: length4
    locker: locker4


class LOCK4denied(Struct):
    offset: offset4
    length: length4
    locktype: Enum(nfs_lock_type4)
    owner: lock_owner4


class LOCK4resok(Struct):
    lock_stateid: stateid4


LOCK4res = _res("LOCK4res", LOCK4resok, NFS4ERR_DENIED=LOCK4denied)


class LOCKT4args(Struct):
    locktype: Enum(nfs_lock_type4)
    offset: offset4
    length: length4
    owner: lock_owner4


LOCKT4res = _res("LOCKT4res", Void, NFS4ERR_DENIED=LOCK4denied)


class LOCKU4args(Struct):
    locktype: Enum(nfs_lock_type4)
    seqid: seqid4
    lock_stateid: stateid4
    offset: offset4
    length: length4


LOCKU4res = _res("LOCKU4res", stateid4)


class LOOKUP4args(Struct):
    objname: component4


LOOKUP4res = _status_res("LOOKUP4res")
LOOKUPP4res = _status_res("LOOKUPP4res")


class NVERIFY4args(Struct):
    obj_attributes: fattr4


NVERIFY4res = _status_res("NVERIFY4res")


class creatverfattr(Struct):
    cva_verf: verifier4
    cva_attrs: fattr4


class createhow4(Union, switch=Enum(createmode4)):
    arms = {
        createmode4.UNCHECKED4: fattr4,
        createmode4.GUARDED4: fattr4,
        createmode4.EXCLUSIVE4: verifier4,
        createmode4.EXCLUSIVE4_1: creatverfattr,
    }


class openflag4(Union, switch=Enum(opentype4)):
    arms = {opentype4.OPEN4_CREATE: createhow4}
    default = Void


class nfs_modified_limit4(Struct):
    num_blocks: uint32_t
    bytes_per_block: uint32_t


class nfs_space_limit4(Union, switch=Enum(limit_by4)):
    arms = {limit_by4.NFS_LIMIT_SIZE: uint64_t, limit_by4.NFS_LIMIT_BLOCKS: nfs_modified_limit4}


class open_claim_delegate_cur4(Struct):
    delegate_stateid: stateid4
    file: component4


class open_claim4(Union, switch=Enum(open_claim_type4)):
    arms = {
        open_claim_type4.CLAIM_NULL: component4,
        open_claim_type4.CLAIM_PREVIOUS: Enum(open_delegation_type4),
        open_claim_type4.CLAIM_DELEGATE_CUR: open_claim_delegate_cur4,
        open_claim_type4.CLAIM_DELEGATE_PREV: component4,
        open_claim_type4.CLAIM_FH: Void,
        open_claim_type4.CLAIM_DELEG_PREV_FH: Void,
        open_claim_type4.CLAIM_DELEG_CUR_FH: stateid4,
    }


class OPEN4args(Struct):
    seqid: seqid4
    share_access: uint32_t
    share_deny: uint32_t
    owner: open_owner4
    openhow: openflag4
    claim: open_claim4


class open_read_delegation4(Struct):
    stateid: stateid4
    recall: Bool
    permissions: nfsace4


class open_write_delegation4(Struct):
    stateid: stateid4
    recall: Bool
    space_limit: nfs_space_limit4
    permissions: nfsace4


class open_none_delegation4(Union, switch=Enum(why_no_delegation4)):
    arms = {why_no_delegation4.WND4_CONTENTION: Bool, why_no_delegation4.WND4_RESOURCE: Bool}
    default = Void


class open_delegation4(Union, switch=Enum(open_delegation_type4)):
    arms = {
        open_delegation_type4.OPEN_DELEGATE_NONE: Void,
        open_delegation_type4.OPEN_DELEGATE_READ: open_read_delegation4,
        open_delegation_type4.OPEN_DELEGATE_WRITE: open_write_delegation4,
        open_delegation_type4.OPEN_DELEGATE_NONE_EXT: open_none_delegation4,
    }


class OPEN4resok(Struct):
    stateid: stateid4
    cinfo: change_info4
    rflags: uint32_t
    attrset: bitmap4
    delegation: open_delegation4


OPEN4res = _res("OPEN4res", OPEN4resok)
# stateid4, change_info4 (atomic, before, after), rflags, the attrset's length.
_open4resok_head = struct.Struct(f">I{NFS4_OTHER_SIZE}sIQQII")
_stateid4 = struct.Struct(f">I{NFS4_OTHER_SIZE}s")


def open4resok_bytes(stateid, cinfo, rflags, attrset):
    """The XDR of OPEN4resok(stateid, cinfo, rflags, attrset,
    open_delegation4(OPEN_DELEGATE_NONE)), packed without the generic codec."""
    other, n = stateid.other, len(attrset)
    if len(other) != NFS4_OTHER_SIZE or n > NFS4_BITMAP4_MAX_WORDS:
        raise XdrError("OPEN4resok: malformed stateid or attrset")
    try:
        return b"".join((
            _open4resok_head.pack(stateid.seqid, bytes(other), bool(cinfo.atomic), cinfo.before,
                                  cinfo.after, rflags, n),
            _bitmap_words[n].pack(*attrset),
            _u32.pack(open_delegation_type4.OPEN_DELEGATE_NONE)))
    except struct.error as e:
        raise XdrError(f"OPEN4resok: {e}") from None


def stateid4_bytes(stateid):
    """The XDR of a stateid4 (CLOSE's result), packed without the generic codec."""
    other = stateid.other
    if len(other) != NFS4_OTHER_SIZE:
        raise XdrError(f"stateid4: other is not {NFS4_OTHER_SIZE} bytes")
    try:
        return _stateid4.pack(stateid.seqid, bytes(other))
    except struct.error as e:
        raise XdrError(f"stateid4: {e}") from None


class OPENATTR4args(Struct):
    createdir: Bool


OPENATTR4res = _status_res("OPENATTR4res")


class OPEN_CONFIRM4args(Struct):
    open_stateid: stateid4
    seqid: seqid4


class OPEN_CONFIRM4resok(Struct):
    open_stateid: stateid4


OPEN_CONFIRM4res = _res("OPEN_CONFIRM4res", OPEN_CONFIRM4resok)


class OPEN_DOWNGRADE4args(Struct):
    open_stateid: stateid4
    seqid: seqid4
    share_access: uint32_t
    share_deny: uint32_t


class OPEN_DOWNGRADE4resok(Struct):
    open_stateid: stateid4


OPEN_DOWNGRADE4res = _res("OPEN_DOWNGRADE4res", OPEN_DOWNGRADE4resok)


class PUTFH4args(Struct):
    object: nfs_fh4


PUTFH4res = _status_res("PUTFH4res")
PUTPUBFH4res = _status_res("PUTPUBFH4res")
PUTROOTFH4res = _status_res("PUTROOTFH4res")


class READ4args(Struct):
    stateid: stateid4
    offset: offset4
    count: count4


class READ4resok(Struct):
    eof: Bool
    data: Opaque()


READ4res = _res("READ4res", READ4resok)


class READDIR4args(Struct):
    cookie: nfs_cookie4
    cookieverf: verifier4
    dircount: count4
    maxcount: count4
    attr_request: bitmap4


class entry4(Struct):
    """The RFC's ``entry4 *nextentry`` chain is dirlist4.entries, a list."""
    cookie: nfs_cookie4
    name: component4
    attrs: fattr4


class dirlist4(Struct):
    entries: LinkedList(entry4)
    eof: Bool


class READDIR4resok(Struct):
    cookieverf: verifier4
    reply: dirlist4


READDIR4res = _res("READDIR4res", READDIR4resok)


class READLINK4resok(Struct):
    link: linktext4


READLINK4res = _res("READLINK4res", READLINK4resok)


class REMOVE4args(Struct):
    target: component4


class REMOVE4resok(Struct):
    cinfo: change_info4


REMOVE4res = _res("REMOVE4res", REMOVE4resok)


class RENAME4args(Struct):
    oldname: component4
    newname: component4


class RENAME4resok(Struct):
    source_cinfo: change_info4
    target_cinfo: change_info4


RENAME4res = _res("RENAME4res", RENAME4resok)


class RENEW4args(Struct):
    clientid: clientid4


RENEW4res = _status_res("RENEW4res")
RESTOREFH4res = _status_res("RESTOREFH4res")
SAVEFH4res = _status_res("SAVEFH4res")


class SECINFO4args(Struct):
    name: component4


class rpcsec_gss_info(Struct):
    oid: sec_oid4
    qop: qop4
    service: Enum(rpc_gss_svc_t)


class secinfo4(Union, switch=UInt32):
    arms = {RPCSEC_GSS: rpcsec_gss_info}
    default = Void


SECINFO4resok = Array(secinfo4)
SECINFO4res = _res("SECINFO4res", SECINFO4resok)


class SETATTR4args(Struct):
    stateid: stateid4
    obj_attributes: fattr4


class SETATTR4res(Struct):
    status: _nfsstat4
    attrsset: bitmap4


class SETCLIENTID4args(Struct):
    client: nfs_client_id4
    callback: cb_client4
    callback_ident: uint32_t


class SETCLIENTID4resok(Struct):
    clientid: clientid4
    setclientid_confirm: verifier4


SETCLIENTID4res = _res("SETCLIENTID4res", SETCLIENTID4resok, NFS4ERR_CLID_INUSE=clientaddr4)


class SETCLIENTID_CONFIRM4args(Struct):
    clientid: clientid4
    setclientid_confirm: verifier4


SETCLIENTID_CONFIRM4res = _status_res("SETCLIENTID_CONFIRM4res")


class VERIFY4args(Struct):
    obj_attributes: fattr4


VERIFY4res = _status_res("VERIFY4res")


class WRITE4args(Struct):
    stateid: stateid4
    offset: offset4
    stable: Enum(stable_how4)
    data: Opaque()  # bounded by the received record, which the transport bounds


class WRITE4resok(Struct):
    count: count4
    committed: Enum(stable_how4)
    writeverf: verifier4


WRITE4res = _res("WRITE4res", WRITE4resok)


class RELEASE_LOCKOWNER4args(Struct):
    lock_owner: lock_owner4


RELEASE_LOCKOWNER4res = _status_res("RELEASE_LOCKOWNER4res")
ILLEGAL4res = _status_res("ILLEGAL4res")


class gss_cb_handles4(Struct):
    gcbp_service: Enum(rpc_gss_svc_t)
    gcbp_handle_from_server: gsshandle4_t
    gcbp_handle_from_client: gsshandle4_t


class callback_sec_parms4(Union, switch=UInt32):
    arms = {AUTH_NONE: Void, AUTH_SYS: authsys_parms, RPCSEC_GSS: gss_cb_handles4}


class BACKCHANNEL_CTL4args(Struct):
    bca_cb_program: uint32_t
    bca_sec_parms: Array(callback_sec_parms4)


BACKCHANNEL_CTL4res = _status_res("BACKCHANNEL_CTL4res", "bcr_status")


class BIND_CONN_TO_SESSION4args(Struct):
    bctsa_sessid: sessionid4
    bctsa_dir: Enum(channel_dir_from_client4)
    bctsa_use_conn_in_rdma_mode: Bool


class BIND_CONN_TO_SESSION4resok(Struct):
    bctsr_sessid: sessionid4
    bctsr_dir: Enum(channel_dir_from_server4)
    bctsr_use_conn_in_rdma_mode: Bool


BIND_CONN_TO_SESSION4res = _res("BIND_CONN_TO_SESSION4res", BIND_CONN_TO_SESSION4resok)


class state_protect_ops4(Struct):
    spo_must_enforce: bitmap4
    spo_must_allow: bitmap4


class ssv_sp_parms4(Struct):
    ssp_ops: state_protect_ops4
    ssp_hash_algs: Array(sec_oid4)
    ssp_encr_algs: Array(sec_oid4)
    ssp_window: uint32_t
    ssp_num_gss_handles: uint32_t


class state_protect4_a(Union, switch=Enum(state_protect_how4)):
    arms = {
        state_protect_how4.SP4_NONE: Void,
        state_protect_how4.SP4_MACH_CRED: state_protect_ops4,
        state_protect_how4.SP4_SSV: ssv_sp_parms4,
    }


class EXCHANGE_ID4args(Struct):
    eia_clientowner: client_owner4
    eia_flags: uint32_t
    eia_state_protect: state_protect4_a
    eia_client_impl_id: Array(nfs_impl_id4, 1)


class ssv_prot_info4(Struct):
    spi_ops: state_protect_ops4
    spi_hash_alg: uint32_t
    spi_encr_alg: uint32_t
    spi_ssv_len: uint32_t
    spi_window: uint32_t
    spi_handles: Array(gsshandle4_t)


class state_protect4_r(Union, switch=Enum(state_protect_how4)):
    arms = {
        state_protect_how4.SP4_NONE: Void,
        state_protect_how4.SP4_MACH_CRED: state_protect_ops4,
        state_protect_how4.SP4_SSV: ssv_prot_info4,
    }


class EXCHANGE_ID4resok(Struct):
    eir_clientid: clientid4
    eir_sequenceid: sequenceid4
    eir_flags: uint32_t
    eir_state_protect: state_protect4_r
    eir_server_owner: server_owner4
    eir_server_scope: Opaque(NFS4_OPAQUE_LIMIT)
    eir_server_impl_id: Array(nfs_impl_id4, 1)


EXCHANGE_ID4res = _res("EXCHANGE_ID4res", EXCHANGE_ID4resok)


class channel_attrs4(Struct):
    ca_headerpadsize: count4
    ca_maxrequestsize: count4
    ca_maxresponsesize: count4
    ca_maxresponsesize_cached: count4
    ca_maxoperations: count4
    ca_maxrequests: count4
    ca_rdma_ird: Array(uint32_t, 1)


class CREATE_SESSION4args(Struct):
    csa_clientid: clientid4
    csa_sequence: sequenceid4
    csa_flags: uint32_t
    csa_fore_chan_attrs: channel_attrs4
    csa_back_chan_attrs: channel_attrs4
    csa_cb_program: uint32_t
    csa_sec_parms: Array(callback_sec_parms4)


class CREATE_SESSION4resok(Struct):
    csr_sessionid: sessionid4
    csr_sequence: sequenceid4
    csr_flags: uint32_t
    csr_fore_chan_attrs: channel_attrs4
    csr_back_chan_attrs: channel_attrs4


CREATE_SESSION4res = _res("CREATE_SESSION4res", CREATE_SESSION4resok)


class DESTROY_SESSION4args(Struct):
    dsa_sessionid: sessionid4


DESTROY_SESSION4res = _status_res("DESTROY_SESSION4res", "dsr_status")


class FREE_STATEID4args(Struct):
    fsa_stateid: stateid4


FREE_STATEID4res = _status_res("FREE_STATEID4res", "fsr_status")

attr_notice4 = nfstime4


class GET_DIR_DELEGATION4args(Struct):
    gdda_signal_deleg_avail: Bool
    gdda_notification_types: bitmap4
    gdda_child_attr_delay: attr_notice4
    gdda_dir_attr_delay: attr_notice4
    gdda_child_attributes: bitmap4
    gdda_dir_attributes: bitmap4


class GET_DIR_DELEGATION4resok(Struct):
    gddr_cookieverf: verifier4
    gddr_stateid: stateid4
    gddr_notification: bitmap4
    gddr_child_attributes: bitmap4
    gddr_dir_attributes: bitmap4


class GET_DIR_DELEGATION4res_non_fatal(Union, switch=Enum(gddrnf4_status)):
    arms = {gddrnf4_status.GDD4_OK: GET_DIR_DELEGATION4resok, gddrnf4_status.GDD4_UNAVAIL: Bool}


GET_DIR_DELEGATION4res = _res("GET_DIR_DELEGATION4res", GET_DIR_DELEGATION4res_non_fatal)


class GETDEVICEINFO4args(Struct):
    gdia_device_id: deviceid4
    gdia_layout_type: _layouttype4
    gdia_maxcount: count4
    gdia_notify_types: bitmap4


class GETDEVICEINFO4resok(Struct):
    gdir_device_addr: device_addr4
    gdir_notification: bitmap4


GETDEVICEINFO4res = _res("GETDEVICEINFO4res", GETDEVICEINFO4resok, NFS4ERR_TOOSMALL=count4)


class GETDEVICELIST4args(Struct):
    gdla_layout_type: _layouttype4
    gdla_maxdevices: count4
    gdla_cookie: nfs_cookie4
    gdla_cookieverf: verifier4


class GETDEVICELIST4resok(Struct):
    gdlr_cookie: nfs_cookie4
    gdlr_cookieverf: verifier4
    gdlr_deviceid_list: Array(deviceid4)
    gdlr_eof: Bool


GETDEVICELIST4res = _res("GETDEVICELIST4res", GETDEVICELIST4resok)

# Bool-discriminated unions with a void FALSE arm: None or the value.
newtime4 = Optional(nfstime4)
newoffset4 = Optional(offset4)
newsize4 = Optional(length4)
layoutreturn_stateid = Optional(stateid4)


class LAYOUTCOMMIT4args(Struct):
    loca_offset: offset4
    loca_length: length4
    loca_reclaim: Bool
    loca_stateid: stateid4
    loca_last_write_offset: newoffset4
    loca_time_modify: newtime4
    loca_layoutupdate: layoutupdate4


class LAYOUTCOMMIT4resok(Struct):
    locr_newsize: newsize4


LAYOUTCOMMIT4res = _res("LAYOUTCOMMIT4res", LAYOUTCOMMIT4resok)


class LAYOUTGET4args(Struct):
    loga_signal_layout_avail: Bool
    loga_layout_type: _layouttype4
    loga_iomode: Enum(layoutiomode4)
    loga_offset: offset4
    loga_length: length4
    loga_minlength: length4
    loga_stateid: stateid4
    loga_maxcount: count4


class LAYOUTGET4resok(Struct):
    logr_return_on_close: Bool
    logr_stateid: stateid4
    logr_layout: Array(layout4)


LAYOUTGET4res = _res("LAYOUTGET4res", LAYOUTGET4resok, NFS4ERR_LAYOUTTRYLATER=Bool)


class LAYOUTRETURN4args(Struct):
    lora_reclaim: Bool
    lora_layout_type: _layouttype4
    lora_iomode: Enum(layoutiomode4)
    lora_layoutreturn: layoutreturn4


LAYOUTRETURN4res = _res("LAYOUTRETURN4res", layoutreturn_stateid)

SECINFO_NO_NAME4args = Enum(secinfo_style4)
SECINFO_NO_NAME4res = SECINFO4res


class SEQUENCE4args(Struct):
    sa_sessionid: sessionid4
    sa_sequenceid: sequenceid4
    sa_slotid: slotid4
    sa_highest_slotid: slotid4
    sa_cachethis: Bool


class SEQUENCE4resok(Struct):
    sr_sessionid: sessionid4
    sr_sequenceid: sequenceid4
    sr_slotid: slotid4
    sr_highest_slotid: slotid4
    sr_target_highest_slotid: slotid4
    sr_status_flags: uint32_t


SEQUENCE4res = _res("SEQUENCE4res", SEQUENCE4resok)
# A SEQUENCE4resok is fixed-size: the server packs it in one call.
_sequence4resok = struct.Struct(f">{NFS4_SESSIONID_SIZE}sIIIII")


def sequence4resok_bytes(sessionid, sequenceid, slotid, highest_slotid, target_highest_slotid,
                         status_flags):
    """The XDR of SEQUENCE4resok(...), as encode would make it."""
    if len(sessionid) != NFS4_SESSIONID_SIZE:
        raise XdrError(f"sr_sessionid: not {NFS4_SESSIONID_SIZE} bytes")
    try:
        return _sequence4resok.pack(sessionid, sequenceid, slotid, highest_slotid,
                                    target_highest_slotid, status_flags)
    except struct.error as e:
        raise XdrError(f"SEQUENCE4resok: {e}") from None


class SET_SSV4args(Struct):
    ssa_ssv: Opaque(NFS4_OPAQUE_LIMIT)
    ssa_digest: Opaque(NFS4_OPAQUE_LIMIT)


class SET_SSV4resok(Struct):
    ssr_digest: Opaque(NFS4_OPAQUE_LIMIT)


SET_SSV4res = _res("SET_SSV4res", SET_SSV4resok)


class TEST_STATEID4args(Struct):
    ts_stateids: Array(stateid4)


class TEST_STATEID4resok(Struct):
    tsr_status_codes: Array(_nfsstat4)


TEST_STATEID4res = _res("TEST_STATEID4res", TEST_STATEID4resok)


class deleg_claim4(Union, switch=Enum(open_claim_type4)):
    arms = {
        open_claim_type4.CLAIM_FH: Void,
        open_claim_type4.CLAIM_DELEG_PREV_FH: Void,
        open_claim_type4.CLAIM_PREVIOUS: Enum(open_delegation_type4),
    }


class WANT_DELEGATION4args(Struct):
    wda_want: uint32_t
    wda_claim: deleg_claim4


WANT_DELEGATION4res = _res("WANT_DELEGATION4res", open_delegation4)


class DESTROY_CLIENTID4args(Struct):
    dca_clientid: clientid4


DESTROY_CLIENTID4res = _status_res("DESTROY_CLIENTID4res", "dcr_status")


class RECLAIM_COMPLETE4args(Struct):
    rca_one_fs: Bool


RECLAIM_COMPLETE4res = _status_res("RECLAIM_COMPLETE4res", "rcr_status")


class COPY4args(Struct):
    ca_src_stateid: stateid4
    ca_dst_stateid: stateid4
    ca_src_offset: offset4
    ca_dst_offset: offset4
    ca_count: length4
    ca_consecutive: Bool
    ca_synchronous: Bool
    ca_source_server: Array(netloc4)


class copy_requirements4(Struct):
    cr_consecutive: Bool
    cr_synchronous: Bool


class COPY4resok(Struct):
    cr_response: write_response4
    cr_requirements: copy_requirements4


COPY4res = _res("COPY4res", COPY4resok, NFS4ERR_OFFLOAD_NO_REQS=copy_requirements4)


class COPY_NOTIFY4args(Struct):
    cna_src_stateid: stateid4
    cna_destination_server: netloc4


class COPY_NOTIFY4resok(Struct):
    cnr_lease_time: nfstime4
    cnr_stateid: stateid4
    cnr_source_server: Array(netloc4)


COPY_NOTIFY4res = _res("COPY_NOTIFY4res", COPY_NOTIFY4resok)


class OFFLOAD_CANCEL4args(Struct):
    oca_stateid: stateid4


OFFLOAD_CANCEL4res = _status_res("OFFLOAD_CANCEL4res", "ocr_status")


class OFFLOAD_STATUS4args(Struct):
    osa_stateid: stateid4


class OFFLOAD_STATUS4resok(Struct):
    osr_count: length4
    osr_complete: Array(_nfsstat4, 1)


OFFLOAD_STATUS4res = _res("OFFLOAD_STATUS4res", OFFLOAD_STATUS4resok)


class ALLOCATE4args(Struct):
    aa_stateid: stateid4
    aa_offset: offset4
    aa_length: length4


ALLOCATE4res = _status_res("ALLOCATE4res", "ar_status")


class DEALLOCATE4args(Struct):
    da_stateid: stateid4
    da_offset: offset4
    da_length: length4


DEALLOCATE4res = _status_res("DEALLOCATE4res", "dr_status")


class IO_ADVISE4args(Struct):
    iaa_stateid: stateid4
    iaa_offset: offset4
    iaa_count: length4
    iaa_hints: bitmap4


class IO_ADVISE4resok(Struct):
    ior_hints: bitmap4


IO_ADVISE4res = _res("IO_ADVISE4res", IO_ADVISE4resok)


class device_error4(Struct):
    de_deviceid: deviceid4
    de_status: _nfsstat4
    de_opnum: Enum(nfs_opnum4)


class LAYOUTERROR4args(Struct):
    lea_offset: offset4
    lea_length: length4
    lea_stateid: stateid4
    lea_errors: Array(device_error4)


LAYOUTERROR4res = _status_res("LAYOUTERROR4res", "ler_status")


class io_info4(Struct):
    ii_count: uint64_t
    ii_bytes: uint64_t


class LAYOUTSTATS4args(Struct):
    lsa_offset: offset4
    lsa_length: length4
    lsa_stateid: stateid4
    lsa_read: io_info4
    lsa_write: io_info4
    lsa_deviceid: deviceid4
    lsa_layoutupdate: layoutupdate4


LAYOUTSTATS4res = _status_res("LAYOUTSTATS4res", "lsr_status")


class READ_PLUS4args(Struct):
    rpa_stateid: stateid4
    rpa_offset: offset4
    rpa_count: count4


class read_plus_content(Union, switch=Enum(data_content4)):
    arms = {data_content4.NFS4_CONTENT_DATA: data4, data_content4.NFS4_CONTENT_HOLE: data_info4}
    default = Void


class read_plus_res4(Struct):
    rpr_eof: Bool
    rpr_contents: Array(read_plus_content)


READ_PLUS4res = _res("READ_PLUS4res", read_plus_res4)


class SEEK4args(Struct):
    sa_stateid: stateid4
    sa_offset: offset4
    sa_what: Enum(data_content4)


class seek_res4(Struct):
    sr_eof: Bool
    sr_offset: offset4


SEEK4res = _res("SEEK4res", seek_res4)


class WRITE_SAME4args(Struct):
    wsa_stateid: stateid4
    wsa_stable: Enum(stable_how4)
    wsa_adb: app_data_block4


WRITE_SAME4res = _res("WRITE_SAME4res", write_response4)

# RFC 8276: extended attributes.
xattrkey4 = component4
xattrvalue4 = Opaque()


class GETXATTR4args(Struct):
    gxa_name: xattrkey4


GETXATTR4res = _res("GETXATTR4res", xattrvalue4)


class SETXATTR4args(Struct):
    sxa_option: Enum(setxattr_option4)
    sxa_key: xattrkey4
    sxa_value: xattrvalue4


SETXATTR4res = _res("SETXATTR4res", change_info4)


class LISTXATTRS4args(Struct):
    lxa_cookie: nfs_cookie4
    lxa_maxcount: count4


class LISTXATTRS4resok(Struct):
    lxr_cookie: nfs_cookie4
    lxr_names: Array(xattrkey4)
    lxr_eof: Bool


LISTXATTRS4res = _res("LISTXATTRS4res", LISTXATTRS4resok)


class REMOVEXATTR4args(Struct):
    rxa_name: xattrkey4


REMOVEXATTR4res = _res("REMOVEXATTR4res", change_info4)


# --- The operation table: one row per operation -------------------------------------------

_O = nfs_opnum4
OPERATIONS = {
    # opnum: (arguments, result); Void where the operation has no arguments.
    _O.OP_ACCESS: (ACCESS4args, ACCESS4res),
    _O.OP_CLOSE: (CLOSE4args, CLOSE4res),
    _O.OP_COMMIT: (COMMIT4args, COMMIT4res),
    _O.OP_CREATE: (CREATE4args, CREATE4res),
    _O.OP_DELEGPURGE: (DELEGPURGE4args, DELEGPURGE4res),
    _O.OP_DELEGRETURN: (DELEGRETURN4args, DELEGRETURN4res),
    _O.OP_GETATTR: (GETATTR4args, GETATTR4res),
    _O.OP_GETFH: (Void, GETFH4res),
    _O.OP_LINK: (LINK4args, LINK4res),
    _O.OP_LOCK: (LOCK4args, LOCK4res),
    _O.OP_LOCKT: (LOCKT4args, LOCKT4res),
    _O.OP_LOCKU: (LOCKU4args, LOCKU4res),
    _O.OP_LOOKUP: (LOOKUP4args, LOOKUP4res),
    _O.OP_LOOKUPP: (Void, LOOKUPP4res),
    _O.OP_NVERIFY: (NVERIFY4args, NVERIFY4res),
    _O.OP_OPEN: (OPEN4args, OPEN4res),
    _O.OP_OPENATTR: (OPENATTR4args, OPENATTR4res),
    _O.OP_OPEN_CONFIRM: (OPEN_CONFIRM4args, OPEN_CONFIRM4res),
    _O.OP_OPEN_DOWNGRADE: (OPEN_DOWNGRADE4args, OPEN_DOWNGRADE4res),
    _O.OP_PUTFH: (PUTFH4args, PUTFH4res),
    _O.OP_PUTPUBFH: (Void, PUTPUBFH4res),
    _O.OP_PUTROOTFH: (Void, PUTROOTFH4res),
    _O.OP_READ: (READ4args, READ4res),
    _O.OP_READDIR: (READDIR4args, READDIR4res),
    _O.OP_READLINK: (Void, READLINK4res),
    _O.OP_REMOVE: (REMOVE4args, REMOVE4res),
    _O.OP_RENAME: (RENAME4args, RENAME4res),
    _O.OP_RENEW: (RENEW4args, RENEW4res),
    _O.OP_RESTOREFH: (Void, RESTOREFH4res),
    _O.OP_SAVEFH: (Void, SAVEFH4res),
    _O.OP_SECINFO: (SECINFO4args, SECINFO4res),
    _O.OP_SETATTR: (SETATTR4args, SETATTR4res),
    _O.OP_SETCLIENTID: (SETCLIENTID4args, SETCLIENTID4res),
    _O.OP_SETCLIENTID_CONFIRM: (SETCLIENTID_CONFIRM4args, SETCLIENTID_CONFIRM4res),
    _O.OP_VERIFY: (VERIFY4args, VERIFY4res),
    _O.OP_WRITE: (WRITE4args, WRITE4res),
    _O.OP_RELEASE_LOCKOWNER: (RELEASE_LOCKOWNER4args, RELEASE_LOCKOWNER4res),
    _O.OP_BACKCHANNEL_CTL: (BACKCHANNEL_CTL4args, BACKCHANNEL_CTL4res),
    _O.OP_BIND_CONN_TO_SESSION: (BIND_CONN_TO_SESSION4args, BIND_CONN_TO_SESSION4res),
    _O.OP_EXCHANGE_ID: (EXCHANGE_ID4args, EXCHANGE_ID4res),
    _O.OP_CREATE_SESSION: (CREATE_SESSION4args, CREATE_SESSION4res),
    _O.OP_DESTROY_SESSION: (DESTROY_SESSION4args, DESTROY_SESSION4res),
    _O.OP_FREE_STATEID: (FREE_STATEID4args, FREE_STATEID4res),
    _O.OP_GET_DIR_DELEGATION: (GET_DIR_DELEGATION4args, GET_DIR_DELEGATION4res),
    _O.OP_GETDEVICEINFO: (GETDEVICEINFO4args, GETDEVICEINFO4res),
    _O.OP_GETDEVICELIST: (GETDEVICELIST4args, GETDEVICELIST4res),
    _O.OP_LAYOUTCOMMIT: (LAYOUTCOMMIT4args, LAYOUTCOMMIT4res),
    _O.OP_LAYOUTGET: (LAYOUTGET4args, LAYOUTGET4res),
    _O.OP_LAYOUTRETURN: (LAYOUTRETURN4args, LAYOUTRETURN4res),
    _O.OP_SECINFO_NO_NAME: (SECINFO_NO_NAME4args, SECINFO_NO_NAME4res),
    _O.OP_SEQUENCE: (SEQUENCE4args, SEQUENCE4res),
    _O.OP_SET_SSV: (SET_SSV4args, SET_SSV4res),
    _O.OP_TEST_STATEID: (TEST_STATEID4args, TEST_STATEID4res),
    _O.OP_WANT_DELEGATION: (WANT_DELEGATION4args, WANT_DELEGATION4res),
    _O.OP_DESTROY_CLIENTID: (DESTROY_CLIENTID4args, DESTROY_CLIENTID4res),
    _O.OP_RECLAIM_COMPLETE: (RECLAIM_COMPLETE4args, RECLAIM_COMPLETE4res),
    _O.OP_ALLOCATE: (ALLOCATE4args, ALLOCATE4res),
    _O.OP_COPY: (COPY4args, COPY4res),
    _O.OP_COPY_NOTIFY: (COPY_NOTIFY4args, COPY_NOTIFY4res),
    _O.OP_DEALLOCATE: (DEALLOCATE4args, DEALLOCATE4res),
    _O.OP_IO_ADVISE: (IO_ADVISE4args, IO_ADVISE4res),
    _O.OP_LAYOUTERROR: (LAYOUTERROR4args, LAYOUTERROR4res),
    _O.OP_LAYOUTSTATS: (LAYOUTSTATS4args, LAYOUTSTATS4res),
    _O.OP_OFFLOAD_CANCEL: (OFFLOAD_CANCEL4args, OFFLOAD_CANCEL4res),
    _O.OP_OFFLOAD_STATUS: (OFFLOAD_STATUS4args, OFFLOAD_STATUS4res),
    _O.OP_READ_PLUS: (READ_PLUS4args, READ_PLUS4res),
    _O.OP_SEEK: (SEEK4args, SEEK4res),
    _O.OP_WRITE_SAME: (WRITE_SAME4args, WRITE_SAME4res),
    _O.OP_CLONE: (CLONE4args, CLONE4res),
    _O.OP_GETXATTR: (GETXATTR4args, GETXATTR4res),
    _O.OP_SETXATTR: (SETXATTR4args, SETXATTR4res),
    _O.OP_LISTXATTRS: (LISTXATTRS4args, LISTXATTRS4res),
    _O.OP_REMOVEXATTR: (REMOVEXATTR4args, REMOVEXATTR4res),
    _O.OP_ILLEGAL: (Void, ILLEGAL4res),
}
del _O


class nfs_argop4(Union, switch=Enum(nfs_opnum4)):
    arms = {op: args for op, (args, _) in OPERATIONS.items()}


class nfs_resop4(Union, switch=Enum(nfs_opnum4)):
    arms = {op: res for op, (_, res) in OPERATIONS.items()}


class COMPOUND4args(Struct):
    tag: utf8str_cs
    minorversion: uint32_t
    argarray: Array(nfs_argop4)


class COMPOUND4res(Struct):
    status: _nfsstat4
    tag: utf8str_cs
    resarray: Array(nfs_resop4)


class NFSPROC4(enum.IntEnum):
    NULL = 0
    COMPOUND = 1


# --- COMPOUND -----------------------------------------------------------------------------
#
# How a request that does not decode is answered follows Linux nfsd
# (nfsd4_decode_compound and nfsd4_proc_compound in fs/nfsd/nfs4xdr.c and
# nfs4proc.c), which decodes the whole request up front but remembers where
# decoding stopped:
#
# * tag, minorversion, the operation count or an operation number missing or
#   malformed: the RPC is GARBAGE_ARGS (decode_compound raises XdrError);
# * an operation whose arguments do not decode: the operations before it are
#   executed, it is answered NFS4ERR_BADXDR, and the COMPOUND stops there
#   (its nfs_argop4 carries the XdrError as its body);
# * an operation number this minor version does not define: answered as
#   OP_ILLEGAL with NFS4ERR_OP_ILLEGAL, and the COMPOUND stops there;
# * a minor version the server does not know: no operation is decoded and
#   the answer is NFS4ERR_MINOR_VERS_MISMATCH with an empty resarray;
# * more operations than NFS4_COMPOUND_MAX_OPS: CompoundTooLong (below).
#   Linux decodes the first NFSD_MAX_OPS_PER_COMPOUND and lets SEQUENCE answer
#   NFS4ERR_TOO_MANY_OPS (RFC 8881 section 18.46); the first operation is
#   all the server needs to answer the same.

# Far more than a client sends, and the most a server may offer as
# ca_maxoperations; Linux nfsd's NFSD_MAX_OPS_PER_COMPOUND is of this order.
NFS4_COMPOUND_MAX_OPS = 128

# The last operation each minor version defines (nfsd4_opnum_in_range): a
# later one is OP_ILLEGAL there. RFC 8276's operations extend version 2.
NFS4_LAST_OP = {
    0: nfs_opnum4.OP_RELEASE_LOCKOWNER,
    1: nfs_opnum4.OP_RECLAIM_COMPLETE,
    2: nfs_opnum4.OP_REMOVEXATTR,
}

_OP_ILLEGAL = nfs_opnum4.OP_ILLEGAL


class CompoundTooLong(XdrError):
    """A COMPOUND with more than NFS4_COMPOUND_MAX_OPS operations; none but the
    first is decoded. ``compound`` has the tag, minorversion and that first
    operation (so the server can answer NFS4ERR_TOO_MANY_OPS from SEQUENCE, or
    the first operation's own error), ``opcount`` what the client claimed."""

    def __init__(self, compound, opcount):
        super().__init__(f"COMPOUND of {opcount} operations (at most {NFS4_COMPOUND_MAX_OPS})")
        self.compound, self.opcount = compound, opcount


# The operations each minor version defines, by number (OP_ILLEGAL is none).
_OPS_OF_VERSION = {
    v: {m.value: m for m in nfs_opnum4 if m is not _OP_ILLEGAL and m <= last}
    for v, last in NFS4_LAST_OP.items()
}
_NO_OPS = {}


# The arguments of the operations nearly every COMPOUND carries, unpacked with
# one struct call each. A decoder takes (data, pos) and returns (args, the
# position after them), or None for anything but a well-formed argument (too
# short, a length beyond its bound, a bool not 0 or 1): the generic decoder
# then decodes it from the same position, so a malformed argument gets the
# error it always got.

_sequence4args = struct.Struct(">16sIIII")


def _fast_SEQUENCE(data, pos):
    end = pos + _sequence4args.size
    if end > len(data):
        return None
    sessionid, sequenceid, slotid, highest, cachethis = _sequence4args.unpack_from(data, pos)
    if cachethis > 1:
        return None
    obj = SEQUENCE4args.__new__(SEQUENCE4args)
    obj.sa_sessionid, obj.sa_sequenceid, obj.sa_slotid = sessionid, sequenceid, slotid
    obj.sa_highest_slotid, obj.sa_cachethis = highest, cachethis == 1
    return obj, end


def _opaque_at(data, pos, maxlen):
    """(bytes, end) of the variable-length opaque at pos, or None."""
    if pos + 4 > len(data):
        return None
    n = _u32.unpack_from(data, pos)[0]
    start = pos + 4
    end = start + n + (-n & 3)
    if n > maxlen or end > len(data):
        return None
    return bytes(data[start:start + n]), end


def _fast_one_opaque(cls, field, maxlen):
    """The fast decoder of arguments that are one opaque<maxlen> (PUTFH's
    handle, LOOKUP's name)."""
    def decode(data, pos):
        got = _opaque_at(data, pos, maxlen)
        if got is None:
            return None
        obj = cls.__new__(cls)
        setattr(obj, field, got[0])
        return obj, got[1]
    return decode


_fast_PUTFH = _fast_one_opaque(PUTFH4args, "object", NFS4_FHSIZE)
_fast_LOOKUP = _fast_one_opaque(LOOKUP4args, "objname", NFS4_UTF8STRING_MAX)


def _fast_GETATTR(data, pos):
    if pos + 4 > len(data):
        return None
    n = _u32.unpack_from(data, pos)[0]
    end = pos + 4 + 4 * n
    if n > NFS4_BITMAP4_MAX_WORDS or end > len(data):
        return None
    obj = GETATTR4args.__new__(GETATTR4args)
    obj.attr_request = list(_bitmap_words[n].unpack_from(data, pos + 4))
    return obj, end


def _fast_ACCESS(data, pos):
    end = pos + 4
    if end > len(data):
        return None
    obj = ACCESS4args.__new__(ACCESS4args)
    obj.access = _u32.unpack_from(data, pos)[0]
    return obj, end


_FAST_ARGS = {
    nfs_opnum4.OP_SEQUENCE: _fast_SEQUENCE, nfs_opnum4.OP_PUTFH: _fast_PUTFH,
    nfs_opnum4.OP_GETATTR: _fast_GETATTR, nfs_opnum4.OP_ACCESS: _fast_ACCESS,
    nfs_opnum4.OP_LOOKUP: _fast_LOOKUP,
}


def decode_argop(u, minorversion):
    """The next nfs_argop4 from Unpacker ``u``. XdrError only if the operation
    number itself is missing; an operation that cannot be executed comes back
    as nfs_argop4(OP_ILLEGAL) or with an XdrError as its body (argop_status)."""
    value = u.unpack_uint()
    op = _OPS_OF_VERSION.get(minorversion, _NO_OPS).get(value)
    if op is None:
        return nfs_argop4(_OP_ILLEGAL, None)
    fast = _FAST_ARGS.get(op)
    if fast is not None:
        got = fast(u.data, u.pos)
        if got is not None:
            u.pos = got[1]
            return nfs_argop4(op, got[0])
    try:
        body = OPERATIONS[op][0].unpack(u)
    except XdrError as e:
        return nfs_argop4(op, e)
    return nfs_argop4(op, body)


def argop_status(argop):
    """NFS4ERR_OP_ILLEGAL or NFS4ERR_BADXDR for an operation decode_argop could
    not decode (the server answers it with that status and stops), else None."""
    if argop.disc is _OP_ILLEGAL:
        return nfsstat4.NFS4ERR_OP_ILLEGAL
    if isinstance(argop.body, XdrError):
        return nfsstat4.NFS4ERR_BADXDR
    return None


_compound_head = struct.Struct(">II")  # minorversion, the operation count


def decode_compound(data):
    """COMPOUND4args from an RPC call's arguments, as described above: the
    argarray stops after the first operation argop_status refuses. Trailing
    bytes after the last operation are ignored, as Linux nfsd does."""
    u = Unpacker(data)
    got = _opaque_at(data, 0, NFS4_UTF8STRING_MAX)
    if got is not None and got[1] + 8 <= len(data):
        tag, pos = got
        minorversion, count = _compound_head.unpack_from(data, pos)
        u.pos = pos + 8
    else:  # malformed: the generic decoder says how
        tag = utf8str_cs.unpack(u)
        minorversion = u.unpack_uint()
        count = u.unpack_uint()
    args = COMPOUND4args.__new__(COMPOUND4args)
    args.tag, args.minorversion, args.argarray = tag, minorversion, []
    if minorversion not in NFS4_LAST_OP:
        return args
    if count * 4 > u.remaining():  # every operation has at least its number
        raise XdrError(f"COMPOUND of {count} operations in {u.remaining()} bytes")
    ops = args.argarray
    if count > NFS4_COMPOUND_MAX_OPS:
        ops.append(decode_argop(u, minorversion))
        raise CompoundTooLong(args, count)
    ops_of, fast_args, end = _OPS_OF_VERSION[minorversion], _FAST_ARGS, len(data)
    for _ in range(count):
        # decode_argop's fast path inlined: most requests are only these.
        pos = u.pos
        if pos + 4 <= end:
            op = ops_of.get(_u32.unpack_from(data, pos)[0])
            fast = fast_args.get(op)
            if fast is not None:
                got = fast(data, pos + 4)
                if got is not None:
                    ops.append(nfs_argop4(op, got[0]))
                    u.pos = got[1]
                    continue
        op = decode_argop(u, minorversion)
        ops.append(op)
        if argop_status(op) is not None:
            break
    return args


def encode_compound(args):
    """The XDR of a COMPOUND4args (clients and tests)."""
    return encode(COMPOUND4args, args)


def resop_status(resop):
    """The nfsstat4 of an nfs_resop4 (the union's switch, or a bare status)."""
    res = resop.body
    if isinstance(res, Union):
        return res.disc
    return getattr(res, res._fields[0][0])


def resop_error(opnum, status):
    """The nfs_resop4 answering operation ``opnum`` with a failure ``status``
    whose result carries nothing else (LOCK's NFS4ERR_DENIED, GETDEVICEINFO's
    NFS4ERR_TOOSMALL and the like carry more: build those whole)."""
    res_type = OPERATIONS[opnum][1]
    if issubclass(res_type, Union):
        if res_type.arms.get(status, Void) is not Void:
            raise ValueError(f"{res_type.__name__} with {status!r} carries a result")
        return nfs_resop4(opnum, res_type(status))
    rest = [[] for _ in res_type._fields[1:]]  # only SETATTR4res: attrsset, empty
    return nfs_resop4(opnum, res_type(status, *rest))


def encode_resop(resop):
    """One operation's result as XDR, so the server can add up the reply's size
    (compound_res_size) before it commits to sending it."""
    return encode(nfs_resop4, resop)


_resop_ok_head = struct.Struct(">Ii")  # nfs_resop4's opnum, then its result's status


def resop_ok_bytes(opnum, resok):
    """encode_resop of a successful result whose resok arm is already XDR
    (GETATTR's fattr4, READDIR's entries, packed without the generic codec)."""
    return _resop_ok_head.pack(opnum, nfsstat4.NFS4_OK) + resok


_entry4_head = struct.Struct(">IQI")  # value follows (of the list), cookie, name length
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


def entry4_bytes(cookie, name, fattr):
    """One entry4 of a dirlist4 as XDR, the value-follows word before it
    included; ``fattr`` is its fattr4 already encoded."""
    n = len(name)
    if n > NFS4_UTF8STRING_MAX:
        raise XdrError("entry4: name too long")
    return _entry4_head.pack(1, cookie, n) + name + _PAD[n & 3] + fattr


def dirlist4_end(eof):
    """What ends a dirlist4: no more entries, then eof."""
    return b"\0\0\0\0" + (b"\0\0\0\1" if eof else b"\0\0\0\0")


def compound_res_size(tag, encoded_resops):
    """The size of the COMPOUND4res made of these results. ca_maxresponsesize
    (RFC 8881 section 18.36) bounds it together with the RPC reply header (24
    bytes with an AUTH_NONE or AUTH_SYS verifier), which is the server's to
    add: before encoding the next result, check that the size so far plus
    that result's fits, else answer NFS4ERR_REP_TOO_BIG."""
    return 12 + len(tag) + (-len(tag) & 3) + sum(len(r) for r in encoded_resops)


def compound_res_bytes(status, tag, encoded_resops):
    """A COMPOUND4res from results already encoded with encode_resop."""
    n = len(tag)
    if n > NFS4_UTF8STRING_MAX:
        raise XdrError("COMPOUND4res: tag too long")
    return b"".join((_i32.pack(status), _u32.pack(n), tag, _PAD[n & 3],
                     _u32.pack(len(encoded_resops)), *encoded_resops))


def encode_compound_res(res):
    """The XDR of a whole COMPOUND4res."""
    return encode(COMPOUND4res, res)


def decode_compound_res(data):
    """COMPOUND4res from a reply's results (clients and tests); strict."""
    return decode(COMPOUND4res, data)


# --- File attributes (RFC 8881 section 5, RFC 7862 section 12.2, RFC 8276) ---------------

FATTR4_SUPPORTED_ATTRS = 0
FATTR4_TYPE = 1
FATTR4_FH_EXPIRE_TYPE = 2
FATTR4_CHANGE = 3
FATTR4_SIZE = 4
FATTR4_LINK_SUPPORT = 5
FATTR4_SYMLINK_SUPPORT = 6
FATTR4_NAMED_ATTR = 7
FATTR4_FSID = 8
FATTR4_UNIQUE_HANDLES = 9
FATTR4_LEASE_TIME = 10
FATTR4_RDATTR_ERROR = 11
FATTR4_ACL = 12
FATTR4_ACLSUPPORT = 13
FATTR4_ARCHIVE = 14
FATTR4_CANSETTIME = 15
FATTR4_CASE_INSENSITIVE = 16
FATTR4_CASE_PRESERVING = 17
FATTR4_CHOWN_RESTRICTED = 18
FATTR4_FILEHANDLE = 19
FATTR4_FILEID = 20
FATTR4_FILES_AVAIL = 21
FATTR4_FILES_FREE = 22
FATTR4_FILES_TOTAL = 23
FATTR4_FS_LOCATIONS = 24
FATTR4_HIDDEN = 25
FATTR4_HOMOGENEOUS = 26
FATTR4_MAXFILESIZE = 27
FATTR4_MAXLINK = 28
FATTR4_MAXNAME = 29
FATTR4_MAXREAD = 30
FATTR4_MAXWRITE = 31
FATTR4_MIMETYPE = 32
FATTR4_MODE = 33
FATTR4_NO_TRUNC = 34
FATTR4_NUMLINKS = 35
FATTR4_OWNER = 36
FATTR4_OWNER_GROUP = 37
FATTR4_QUOTA_AVAIL_HARD = 38
FATTR4_QUOTA_AVAIL_SOFT = 39
FATTR4_QUOTA_USED = 40
FATTR4_RAWDEV = 41
FATTR4_SPACE_AVAIL = 42
FATTR4_SPACE_FREE = 43
FATTR4_SPACE_TOTAL = 44
FATTR4_SPACE_USED = 45
FATTR4_SYSTEM = 46
FATTR4_TIME_ACCESS = 47
FATTR4_TIME_ACCESS_SET = 48
FATTR4_TIME_BACKUP = 49
FATTR4_TIME_CREATE = 50
FATTR4_TIME_DELTA = 51
FATTR4_TIME_METADATA = 52
FATTR4_TIME_MODIFY = 53
FATTR4_TIME_MODIFY_SET = 54
FATTR4_MOUNTED_ON_FILEID = 55
FATTR4_DIR_NOTIF_DELAY = 56
FATTR4_DIRENT_NOTIF_DELAY = 57
FATTR4_DACL = 58
FATTR4_SACL = 59
FATTR4_CHANGE_POLICY = 60
FATTR4_FS_STATUS = 61
FATTR4_FS_LAYOUT_TYPES = 62
FATTR4_LAYOUT_HINT = 63
FATTR4_LAYOUT_TYPES = 64
FATTR4_LAYOUT_BLKSIZE = 65
FATTR4_LAYOUT_ALIGNMENT = 66
FATTR4_FS_LOCATIONS_INFO = 67
FATTR4_MDSTHRESHOLD = 68
FATTR4_RETENTION_GET = 69
FATTR4_RETENTION_SET = 70
FATTR4_RETENTEVT_GET = 71
FATTR4_RETENTEVT_SET = 72
FATTR4_RETENTION_HOLD = 73
FATTR4_MODE_SET_MASKED = 74
FATTR4_SUPPATTR_EXCLCREAT = 75
FATTR4_FS_CHARSET_CAP = 76
FATTR4_CLONE_BLKSIZE = 77
FATTR4_SPACE_FREED = 78
FATTR4_CHANGE_ATTR_TYPE = 79
FATTR4_SEC_LABEL = 80
FATTR4_XATTR_SUPPORT = 82  # RFC 8276

fattr4_supported_attrs = bitmap4
fattr4_type = Enum(nfs_ftype4)
fattr4_fh_expire_type = uint32_t
fattr4_change = changeid4
fattr4_size = uint64_t
fattr4_link_support = Bool
fattr4_symlink_support = Bool
fattr4_named_attr = Bool
fattr4_fsid = fsid4
fattr4_unique_handles = Bool
fattr4_lease_time = nfs_lease4
fattr4_rdattr_error = _nfsstat4
fattr4_acl = Array(nfsace4)
fattr4_aclsupport = uint32_t
fattr4_archive = Bool
fattr4_cansettime = Bool
fattr4_case_insensitive = Bool
fattr4_case_preserving = Bool
fattr4_chown_restricted = Bool
fattr4_fileid = uint64_t
fattr4_files_avail = uint64_t
fattr4_filehandle = nfs_fh4
fattr4_files_free = uint64_t
fattr4_files_total = uint64_t
fattr4_fs_locations = fs_locations4
fattr4_hidden = Bool
fattr4_homogeneous = Bool
fattr4_maxfilesize = uint64_t
fattr4_maxlink = uint32_t
fattr4_maxname = uint32_t
fattr4_maxread = uint64_t
fattr4_maxwrite = uint64_t
fattr4_mimetype = ascii_REQUIRED4
fattr4_mode = mode4
fattr4_mode_set_masked = mode_masked4
fattr4_mounted_on_fileid = uint64_t
fattr4_no_trunc = Bool
fattr4_numlinks = uint32_t
fattr4_owner = utf8str_mixed
fattr4_owner_group = utf8str_mixed
fattr4_quota_avail_hard = uint64_t
fattr4_quota_avail_soft = uint64_t
fattr4_quota_used = uint64_t
fattr4_rawdev = specdata4
fattr4_space_avail = uint64_t
fattr4_space_free = length4
fattr4_space_total = uint64_t
fattr4_space_used = uint64_t
fattr4_system = Bool
fattr4_time_access = nfstime4
fattr4_time_access_set = settime4
fattr4_time_backup = nfstime4
fattr4_time_create = nfstime4
fattr4_time_delta = nfstime4
fattr4_time_metadata = nfstime4
fattr4_time_modify = nfstime4
fattr4_time_modify_set = settime4
fattr4_suppattr_exclcreat = bitmap4
fattr4_dir_notif_delay = nfstime4
fattr4_dirent_notif_delay = nfstime4
fattr4_fs_layout_types = Array(_layouttype4)
fattr4_fs_status = fs4_status
fattr4_fs_charset_cap = fs_charset_cap4
fattr4_layout_alignment = uint32_t
fattr4_layout_blksize = uint32_t
fattr4_layout_hint = layouthint4
fattr4_layout_types = Array(_layouttype4)
fattr4_mdsthreshold = mdsthreshold4
fattr4_retention_get = retention_get4
fattr4_retention_set = retention_set4
fattr4_retentevt_get = retention_get4
fattr4_retentevt_set = retention_set4
fattr4_retention_hold = uint64_t
fattr4_dacl = nfsacl41
fattr4_sacl = nfsacl41
fattr4_change_policy = change_policy4
fattr4_fs_locations_info = fs_locations_info4
fattr4_space_freed = uint64_t
fattr4_change_attr_type = Enum(change_attr_type4)
fattr4_sec_label = sec_label4
fattr4_clone_blksize = uint32_t
fattr4_xattr_support = Bool

# Attribute number -> XDR type of its value.
FATTR4_TYPES = {
    FATTR4_SUPPORTED_ATTRS: fattr4_supported_attrs,
    FATTR4_TYPE: fattr4_type,
    FATTR4_FH_EXPIRE_TYPE: fattr4_fh_expire_type,
    FATTR4_CHANGE: fattr4_change,
    FATTR4_SIZE: fattr4_size,
    FATTR4_LINK_SUPPORT: fattr4_link_support,
    FATTR4_SYMLINK_SUPPORT: fattr4_symlink_support,
    FATTR4_NAMED_ATTR: fattr4_named_attr,
    FATTR4_FSID: fattr4_fsid,
    FATTR4_UNIQUE_HANDLES: fattr4_unique_handles,
    FATTR4_LEASE_TIME: fattr4_lease_time,
    FATTR4_RDATTR_ERROR: fattr4_rdattr_error,
    FATTR4_ACL: fattr4_acl,
    FATTR4_ACLSUPPORT: fattr4_aclsupport,
    FATTR4_ARCHIVE: fattr4_archive,
    FATTR4_CANSETTIME: fattr4_cansettime,
    FATTR4_CASE_INSENSITIVE: fattr4_case_insensitive,
    FATTR4_CASE_PRESERVING: fattr4_case_preserving,
    FATTR4_CHOWN_RESTRICTED: fattr4_chown_restricted,
    FATTR4_FILEHANDLE: fattr4_filehandle,
    FATTR4_FILEID: fattr4_fileid,
    FATTR4_FILES_AVAIL: fattr4_files_avail,
    FATTR4_FILES_FREE: fattr4_files_free,
    FATTR4_FILES_TOTAL: fattr4_files_total,
    FATTR4_FS_LOCATIONS: fattr4_fs_locations,
    FATTR4_HIDDEN: fattr4_hidden,
    FATTR4_HOMOGENEOUS: fattr4_homogeneous,
    FATTR4_MAXFILESIZE: fattr4_maxfilesize,
    FATTR4_MAXLINK: fattr4_maxlink,
    FATTR4_MAXNAME: fattr4_maxname,
    FATTR4_MAXREAD: fattr4_maxread,
    FATTR4_MAXWRITE: fattr4_maxwrite,
    FATTR4_MIMETYPE: fattr4_mimetype,
    FATTR4_MODE: fattr4_mode,
    FATTR4_NO_TRUNC: fattr4_no_trunc,
    FATTR4_NUMLINKS: fattr4_numlinks,
    FATTR4_OWNER: fattr4_owner,
    FATTR4_OWNER_GROUP: fattr4_owner_group,
    FATTR4_QUOTA_AVAIL_HARD: fattr4_quota_avail_hard,
    FATTR4_QUOTA_AVAIL_SOFT: fattr4_quota_avail_soft,
    FATTR4_QUOTA_USED: fattr4_quota_used,
    FATTR4_RAWDEV: fattr4_rawdev,
    FATTR4_SPACE_AVAIL: fattr4_space_avail,
    FATTR4_SPACE_FREE: fattr4_space_free,
    FATTR4_SPACE_TOTAL: fattr4_space_total,
    FATTR4_SPACE_USED: fattr4_space_used,
    FATTR4_SYSTEM: fattr4_system,
    FATTR4_TIME_ACCESS: fattr4_time_access,
    FATTR4_TIME_ACCESS_SET: fattr4_time_access_set,
    FATTR4_TIME_BACKUP: fattr4_time_backup,
    FATTR4_TIME_CREATE: fattr4_time_create,
    FATTR4_TIME_DELTA: fattr4_time_delta,
    FATTR4_TIME_METADATA: fattr4_time_metadata,
    FATTR4_TIME_MODIFY: fattr4_time_modify,
    FATTR4_TIME_MODIFY_SET: fattr4_time_modify_set,
    FATTR4_MOUNTED_ON_FILEID: fattr4_mounted_on_fileid,
    FATTR4_DIR_NOTIF_DELAY: fattr4_dir_notif_delay,
    FATTR4_DIRENT_NOTIF_DELAY: fattr4_dirent_notif_delay,
    FATTR4_DACL: fattr4_dacl,
    FATTR4_SACL: fattr4_sacl,
    FATTR4_CHANGE_POLICY: fattr4_change_policy,
    FATTR4_FS_STATUS: fattr4_fs_status,
    FATTR4_FS_LAYOUT_TYPES: fattr4_fs_layout_types,
    FATTR4_LAYOUT_HINT: fattr4_layout_hint,
    FATTR4_LAYOUT_TYPES: fattr4_layout_types,
    FATTR4_LAYOUT_BLKSIZE: fattr4_layout_blksize,
    FATTR4_LAYOUT_ALIGNMENT: fattr4_layout_alignment,
    FATTR4_FS_LOCATIONS_INFO: fattr4_fs_locations_info,
    FATTR4_MDSTHRESHOLD: fattr4_mdsthreshold,
    FATTR4_RETENTION_GET: fattr4_retention_get,
    FATTR4_RETENTION_SET: fattr4_retention_set,
    FATTR4_RETENTEVT_GET: fattr4_retentevt_get,
    FATTR4_RETENTEVT_SET: fattr4_retentevt_set,
    FATTR4_RETENTION_HOLD: fattr4_retention_hold,
    FATTR4_MODE_SET_MASKED: fattr4_mode_set_masked,
    FATTR4_SUPPATTR_EXCLCREAT: fattr4_suppattr_exclcreat,
    FATTR4_FS_CHARSET_CAP: fattr4_fs_charset_cap,
    FATTR4_CLONE_BLKSIZE: fattr4_clone_blksize,
    FATTR4_SPACE_FREED: fattr4_space_freed,
    FATTR4_CHANGE_ATTR_TYPE: fattr4_change_attr_type,
    FATTR4_SEC_LABEL: fattr4_sec_label,
    FATTR4_XATTR_SUPPORT: fattr4_xattr_support,
}

FATTR4_MAX = 32 * NFS4_BITMAP4_MAX_WORDS - 1


class UnknownAttribute(XdrError):
    """An attribute number FATTR4_TYPES lacks: its value cannot be read (nor
    anything after it). The server answers SETATTR, VERIFY and the like with
    NFS4ERR_ATTRNOTSUPP."""

    def __init__(self, attr):
        super().__init__(f"attribute {attr} is not known")
        self.attr = attr


def bitmap4_to_attrs(bitmap):
    """The attribute numbers a bitmap4 (a list of 32-bit words) has set, ascending."""
    out = []
    for word_index, word in enumerate(bitmap):
        base = 32 * word_index
        while word:
            low = word & -word
            out.append(base + low.bit_length() - 1)
            word ^= low
    return out


def attrs_to_bitmap4(attrs):
    """The shortest bitmap4 with these attribute numbers set."""
    words = []
    for a in attrs:
        if not 0 <= a <= FATTR4_MAX:
            raise XdrError(f"attribute number {a} out of range")
        i = a >> 5
        if i >= len(words):
            words.extend([0] * (i + 1 - len(words)))
        words[i] |= 1 << (a & 31)
    return words


def encode_attrs(values):
    """fattr4 of {attribute number: value}, the values in ascending order."""
    p = Packer()
    for a in sorted(values):
        t = FATTR4_TYPES.get(a)
        if t is None:
            raise UnknownAttribute(a)
        t.pack(p, values[a])
    return fattr4(attrs_to_bitmap4(values), p.get_buffer())


def decode_attrs(attrs):
    """{attribute number: value} of a fattr4: UnknownAttribute for a number
    FATTR4_TYPES lacks, XdrError for values that do not decode or leave bytes
    over (NFS4ERR_BADXDR)."""
    u = Unpacker(attrs.attr_vals)
    out = {}
    for a in bitmap4_to_attrs(attrs.attrmask):
        t = FATTR4_TYPES.get(a)
        if t is None:
            raise UnknownAttribute(a)
        out[a] = t.unpack(u)
    u.done()
    return out
