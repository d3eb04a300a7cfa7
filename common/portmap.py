"""Port mapper version 2 and rpcbind versions 3 and 4 (RFC 1833), sans-IO.

Also the universal address helpers (RFC 5665 section 5.2.3.3/4: an IPv4 or
IPv6 address in its usual text form followed by ".p1.p2", the port's high and
low bytes) and the Linux struct sockaddr layout that UADDR2TADDR/TADDR2UADDR
carry as a "transport address".
"""

import enum
import ipaddress
import socket
import struct

from common.xdr import Int32, LinkedList, Opaque, String, Struct, UInt32, XdrError

PMAP_PROGRAM = 100000
PMAP_PORT = 111
PMAPVERS = 2
RPCBVERS = 3
RPCBVERS4 = 4

IPPROTO_TCP = 6
IPPROTO_UDP = 17


class PMAPPROC(enum.IntEnum):
    PMAPPROC_NULL = 0
    PMAPPROC_SET = 1
    PMAPPROC_UNSET = 2
    PMAPPROC_GETPORT = 3
    PMAPPROC_DUMP = 4
    PMAPPROC_CALLIT = 5


class RPCBPROC(enum.IntEnum):
    """Procedures 0-8 are versions 3 and 4; 9-12 version 4 only. Number 5 is
    CALLIT in version 3 and BCAST in version 4."""
    RPCBPROC_NULL = 0
    RPCBPROC_SET = 1
    RPCBPROC_UNSET = 2
    RPCBPROC_GETADDR = 3
    RPCBPROC_DUMP = 4
    RPCBPROC_CALLIT = 5
    RPCBPROC_BCAST = 5
    RPCBPROC_GETTIME = 6
    RPCBPROC_UADDR2TADDR = 7
    RPCBPROC_TADDR2UADDR = 8
    RPCBPROC_GETVERSADDR = 9
    RPCBPROC_INDIRECT = 10
    RPCBPROC_GETADDRLIST = 11
    RPCBPROC_GETSTAT = 12


# --- Version 2 ------------------------------------------------------------


class mapping(Struct):
    prog: UInt32
    vers: UInt32
    prot: UInt32
    port: UInt32


pmaplist = LinkedList(mapping)
"""PMAPPROC_DUMP's result (pmaplist_ptr: a value-follows chain of mappings)."""

# The RFC leaves CALLIT's opaque arguments unbounded; UDP bounds them anyway.
MAX_CALLIT_BYTES = 65536


class call_args(Struct):
    prog: UInt32
    vers: UInt32
    proc: UInt32
    args: Opaque(MAX_CALLIT_BYTES)


class call_result(Struct):
    port: UInt32
    res: Opaque(MAX_CALLIT_BYTES)


# --- Versions 3 and 4 -----------------------------------------------------

# The RFC's string<> fields are unbounded. Netids, universal addresses and
# owners are all short (the longest, an IPv6 uaddr, is under 64 characters).
RPCB_MAXSTR = 255
rpcb_string = String(RPCB_MAXSTR)


class rpcb(Struct):
    r_prog: UInt32
    r_vers: UInt32
    r_netid: rpcb_string
    r_addr: rpcb_string
    r_owner: rpcb_string


rpcblist_ptr = LinkedList(rpcb)
"""rp__list chain: RPCBPROC_DUMP's result."""


class rpcb_rmtcallargs(Struct):
    prog: UInt32
    vers: UInt32
    proc: UInt32
    args: Opaque(MAX_CALLIT_BYTES)


class rpcb_rmtcallres(Struct):
    addr: rpcb_string
    results: Opaque(MAX_CALLIT_BYTES)


# nc_semantics values of struct netconfig
NC_TPI_CLTS = 1
NC_TPI_COTS = 2
NC_TPI_COTS_ORD = 3
NC_TPI_RAW = 4


class rpcb_entry(Struct):
    r_maddr: rpcb_string
    r_nc_netid: rpcb_string
    r_nc_semantics: UInt32
    r_nc_protofmly: rpcb_string
    r_nc_proto: rpcb_string


rpcb_entry_list_ptr = LinkedList(rpcb_entry)

RPCBSTAT_HIGHPROC = 13
RPCBVERS_STAT = 3
RPCBVERS_4_STAT = 2
RPCBVERS_3_STAT = 1
RPCBVERS_2_STAT = 0


class _FixedArray:
    """XDR fixed-length array ``elem name[n]`` (not in common.xdr)."""

    def __init__(self, elem, n):
        self.elem, self.n = elem, n

    def pack(self, p, v):
        if len(v) != self.n:
            raise XdrError(f"fixed array needs {self.n} elements, got {len(v)}")
        for item in v:
            self.elem.pack(p, item)

    def unpack(self, u):
        return [self.elem.unpack(u) for _ in range(self.n)]

    def __repr__(self):
        return f"{self.elem!r}[{self.n}]"


rpcbs_proc = _FixedArray(Int32, RPCBSTAT_HIGHPROC)


class rpcbs_addrlist(Struct):
    """One entry of the GETADDR statistics; ``next`` is the LinkedList chain."""
    prog: UInt32
    vers: UInt32
    success: Int32
    failure: Int32
    netid: rpcb_string


rpcbs_addrlist_ptr = LinkedList(rpcbs_addrlist)


class rpcbs_rmtcalllist(Struct):
    prog: UInt32
    vers: UInt32
    proc: UInt32
    success: Int32
    failure: Int32
    indirect: Int32
    netid: rpcb_string


rpcbs_rmtcalllist_ptr = LinkedList(rpcbs_rmtcalllist)


class rpcb_stat(Struct):
    info: rpcbs_proc
    setinfo: Int32
    unsetinfo: Int32
    addrinfo: rpcbs_addrlist_ptr
    rmtinfo: rpcbs_rmtcalllist_ptr


rpcb_stat_byvers = _FixedArray(rpcb_stat, RPCBVERS_STAT)


class netbuf(Struct):
    maxlen: UInt32
    buf: Opaque(RPCB_MAXSTR)


# --- Universal addresses --------------------------------------------------


class UaddrError(ValueError):
    """Text that is not a universal address (or a transport address that is not
    a sockaddr_in/sockaddr_in6)."""


def uaddr_from(ip, port):
    """("10.0.0.1", 2049) -> "10.0.0.1.8.1"; IPv6 in its compressed form."""
    if not 0 <= port <= 0xFFFF:
        raise UaddrError(f"port out of range: {port}")
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise UaddrError(f"not an IP address: {ip!r}") from None
    return f"{addr.compressed}.{port >> 8}.{port & 0xFF}"


def parse_uaddr(uaddr):
    """"10.0.0.1.8.1" -> ("10.0.0.1", 2049). Accepts str or bytes (the wire
    form); raises UaddrError for anything else."""
    if isinstance(uaddr, (bytes, bytearray, memoryview)):
        try:
            uaddr = bytes(uaddr).decode("ascii")
        except UnicodeDecodeError:
            raise UaddrError("universal address is not ASCII") from None
    if not uaddr.isascii():
        raise UaddrError("universal address is not ASCII")
    host, sep, rest = uaddr.rpartition(".")
    host, sep2, hi = host.rpartition(".")
    if not (sep and sep2 and host):
        raise UaddrError(f"not a universal address: {uaddr!r}")
    if not (hi.isdigit() and rest.isdigit() and len(hi) <= 3 and len(rest) <= 3):
        raise UaddrError(f"bad port in universal address: {uaddr!r}")
    p1, p2 = int(hi), int(rest)
    if p1 > 255 or p2 > 255:
        raise UaddrError(f"bad port in universal address: {uaddr!r}")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise UaddrError(f"bad host in universal address: {uaddr!r}") from None
    return addr.compressed, (p1 << 8) | p2


# Linux struct sockaddr_in / sockaddr_in6: sa_family is in host byte order,
# the port and address in network byte order.
_sin = struct.Struct("=H2s4s8x")
_sin6 = struct.Struct("=H2s4s16sI")


def taddr_from_uaddr(uaddr):
    """A universal address as the struct sockaddr bytes a netbuf carries."""
    ip, port = parse_uaddr(uaddr)
    addr = ipaddress.ip_address(ip)
    pbytes = port.to_bytes(2, "big")
    if addr.version == 4:
        return _sin.pack(socket.AF_INET, pbytes, addr.packed)
    return _sin6.pack(socket.AF_INET6, pbytes, b"\0" * 4, addr.packed, 0)


def uaddr_from_taddr(buf):
    buf = bytes(buf)
    if len(buf) == _sin.size:
        family, pbytes, packed = _sin.unpack(buf)
        if family == socket.AF_INET:
            return uaddr_from(str(ipaddress.IPv4Address(packed)), int.from_bytes(pbytes, "big"))
    elif len(buf) == _sin6.size:
        family, pbytes, _flow, packed, _scope = _sin6.unpack(buf)
        if family == socket.AF_INET6:
            return uaddr_from(str(ipaddress.IPv6Address(packed)), int.from_bytes(pbytes, "big"))
    raise UaddrError(f"not a sockaddr_in/sockaddr_in6 ({len(buf)} bytes)")


# --- netids ---------------------------------------------------------------

NETID_PROT = {"udp": IPPROTO_UDP, "tcp": IPPROTO_TCP, "udp6": IPPROTO_UDP, "tcp6": IPPROTO_TCP}
PROT_NETID = {IPPROTO_UDP: "udp", IPPROTO_TCP: "tcp"}
"""Version 2 only knows IPv4, so its prot maps to the IPv4 netids."""

NETID_SEMANTICS = {"udp": NC_TPI_CLTS, "udp6": NC_TPI_CLTS,
                   "tcp": NC_TPI_COTS_ORD, "tcp6": NC_TPI_COTS_ORD}


__all__ = [
    "PMAP_PROGRAM", "PMAP_PORT", "PMAPVERS", "RPCBVERS", "RPCBVERS4", "IPPROTO_TCP",
    "IPPROTO_UDP", "PMAPPROC", "RPCBPROC", "mapping", "pmaplist", "call_args", "call_result",
    "rpcb", "rpcblist_ptr", "rpcb_rmtcallargs", "rpcb_rmtcallres", "rpcb_entry",
    "rpcb_entry_list_ptr", "rpcbs_proc", "rpcbs_addrlist", "rpcbs_addrlist_ptr",
    "rpcbs_rmtcalllist", "rpcbs_rmtcalllist_ptr", "rpcb_stat", "rpcb_stat_byvers", "netbuf",
    "NC_TPI_CLTS", "NC_TPI_COTS", "NC_TPI_COTS_ORD", "NC_TPI_RAW", "RPCBSTAT_HIGHPROC",
    "RPCBVERS_STAT", "UaddrError", "uaddr_from", "parse_uaddr", "taddr_from_uaddr",
    "uaddr_from_taddr", "NETID_PROT", "PROT_NETID", "NETID_SEMANTICS", "RPCB_MAXSTR",
]
