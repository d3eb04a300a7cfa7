"""Portmapper/rpcbind (program 100000, versions 2, 3, 4): an embedded server for
hosts without rpcbind, and a client that registers with a system rpcbind.

Rules copied from rpcbind 1.2.6 (Debian), checked against the real daemon:

- SET and UNSET are only taken from loopback callers (rpcbind refuses others
  with AUTH_TOOWEAK unless started with -i; our handlers answer FALSE). Any
  source port will do; a privileged one (< 1024, i.e. root) makes the entry
  owned by "superuser", anything else "unknown" (the owner a client claims in
  an rpcb is ignored). Only the owner, or superuser, may UNSET an entry.
- SET fails when (prog, vers, netid) is already registered, whatever the
  address; version 2 SET stores netid udp/tcp and address 0.0.0.0.p1.p2.
- Version 2 UNSET drops both udp and tcp of (prog, vers); version 3/4 UNSET
  drops one netid, or all for an empty netid.
- GETPORT and GETADDR fall back to another version of the program when the
  asked one is not registered (the client then learns the real range from
  PROG_MISMATCH); GETVERSADDR does not.
- Addresses registered on a wildcard (0.0.0.0, ::) are answered with the
  address the query arrived on ("mergeaddr"), so remote clients get a usable one.

CALLIT/BCAST/INDIRECT (remote calls through the portmapper) are not offered:
PROC_UNAVAIL. The system rpcbind client uses version 2 over UDP from a
privileged port when we are root, so our entries are owned by superuser and no
local user can remove them.
"""

import dataclasses
import ipaddress
import logging
import random
import socket
import time

import trio

from common import rpc
from common.runtime.resvport import reserve_port
from common.portmap import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    NETID_PROT,
    NETID_SEMANTICS,
    PMAP_PORT,
    PMAP_PROGRAM,
    PMAPPROC,
    PMAPVERS,
    PROT_NETID,
    RPCBPROC,
    RPCBSTAT_HIGHPROC,
    RPCBVERS,
    RPCBVERS4,
    UaddrError,
    mapping,
    netbuf,
    parse_uaddr,
    pmaplist,
    rpcb,
    rpcb_entry,
    rpcb_entry_list_ptr,
    rpcb_stat,
    rpcb_stat_byvers,
    rpcblist_ptr,
    rpcbs_addrlist,
    taddr_from_uaddr,
    uaddr_from,
    uaddr_from_taddr,
)
from common.xdr import Bool, String, UInt32, Void, XdrError, decode, encode
from nfspd.dispatch import Procedure, Program, procedure_table

log = logging.getLogger(__name__)

SUPERUSER = "superuser"
UNKNOWN_OWNER = "unknown"
MAX_REGISTRATIONS = 1024
_MAX_ADDRSTATS = 64
_uaddr_string = String(255)


@dataclasses.dataclass(frozen=True)
class Registration:
    prog: int
    vers: int
    netid: str
    addr: str  # universal address
    owner: str

    @property
    def port(self):
        try:
            return parse_uaddr(self.addr)[1]
        except UaddrError:
            return 0


class PortTable:
    """The registrations, in registration order (DUMP shows them so)."""

    def __init__(self, portmapper_port=PMAP_PORT):
        self._regs = []
        # GETSTAT figures, per version 2, 3, 4.
        self.info = {v: [0] * RPCBSTAT_HIGHPROC for v in (2, 3, 4)}
        self.setinfo = {2: 0, 3: 0, 4: 0}
        self.unsetinfo = {2: 0, 3: 0, 4: 0}
        self.addrinfo = {2: {}, 3: {}, 4: {}}  # (prog, vers, netid) -> [success, failure]
        if portmapper_port:
            for vers in (PMAPVERS, RPCBVERS, RPCBVERS4):
                for netid in ("tcp", "udp"):
                    self.set(PMAP_PROGRAM, vers, netid, uaddr_from("0.0.0.0", portmapper_port),
                             SUPERUSER)

    def add(self, prog, vers, prot, port, owner=SUPERUSER):
        """Register a local service the way version 2 SET does (prot:
        IPPROTO_UDP/IPPROTO_TCP, bound to the wildcard address)."""
        netid = PROT_NETID.get(prot)
        if netid is None:
            raise ValueError(f"protocol {prot} is neither UDP nor TCP")
        return self.set(prog, vers, netid, uaddr_from("0.0.0.0", port), owner)

    def set(self, prog, vers, netid, addr, owner):
        if not netid or len(self._regs) >= MAX_REGISTRATIONS:
            return False
        if any(r.prog == prog and r.vers == vers and r.netid == netid for r in self._regs):
            return False
        self._regs.append(Registration(prog, vers, netid, addr, owner))
        return True

    def unset(self, prog, vers, netids=None, owner=SUPERUSER):
        """Remove (prog, vers) on ``netids`` (None: all) that ``owner`` may
        remove; True if anything was removed."""
        keep, removed = [], False
        for r in self._regs:
            if (r.prog == prog and r.vers == vers and (netids is None or r.netid in netids)
                    and (owner == SUPERUSER or owner == r.owner)):
                removed = True
            else:
                keep.append(r)
        self._regs = keep
        return removed

    def dump(self):
        return list(self._regs)

    def find(self, prog, vers, netid, exact):
        """The registration of (prog, vers) on netid; unless ``exact``, any version
        of prog when that one is missing (rpcbind's find_service)."""
        other = None
        for r in self._regs:
            if r.prog == prog and r.netid == netid:
                if r.vers == vers:
                    return r
                if other is None:
                    other = r
        return None if exact else other

    def count_addr(self, version, prog, vers, netid, found):
        stats = self.addrinfo[version]
        key = (prog, vers, netid)
        if key not in stats and len(stats) >= _MAX_ADDRSTATS:
            return
        s = stats.setdefault(key, [0, 0])
        s[0 if found else 1] += 1


# --- The server side --------------------------------------------------------


def _ip(text):
    addr = ipaddress.ip_address(text.split("%", 1)[0])
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr


def is_local(ctx):
    try:
        return _ip(ctx.client[0]).is_loopback
    except (ValueError, TypeError, IndexError):
        return False


def owner_of(ctx):
    return SUPERUSER if ctx.client[1] < 1024 else UNKNOWN_OWNER


def _family(ctx):
    try:
        return _ip(ctx.local[0]).version
    except (ValueError, TypeError, IndexError):
        return 4


def request_netid(ctx):
    return ctx.transport + ("6" if _family(ctx) == 6 else "")


def merged_addr(reg, ctx):
    """The registered address, with a wildcard host replaced by the address the
    query came in on (rpcbind's mergeaddr)."""
    try:
        host, port = parse_uaddr(reg.addr)
    except UaddrError:
        return reg.addr
    if ipaddress.ip_address(host).is_unspecified and ctx.local and ctx.local[0]:
        try:
            local = _ip(ctx.local[0])
        except ValueError:
            return reg.addr
        if local.version == ipaddress.ip_address(host).version and not local.is_unspecified:
            return uaddr_from(str(local), port)
    return reg.addr


def _s(b):
    return bytes(b).decode("ascii", "replace")


class Portmapper:
    """What the portmapper's handlers work on (their ctx.service): the
    registrations, and the clock GETTIME reads."""

    __slots__ = ("table", "clock")

    def __init__(self, table, clock=time.time):
        self.table = table
        self.clock = clock


def _refused(ctx, what):
    log.warning("portmapper: refused %s from non-local %s", what, ctx.client[0])
    return False


# --- Version 2 (RFC 1833 section 3) ---


async def PMAPPROC_NULL(ctx, args):
    return None


async def PMAPPROC_SET(ctx, m):
    if not is_local(ctx):
        return _refused(ctx, "SET")
    netid = PROT_NETID.get(m.prot)
    if netid is None or not 0 < m.port <= 0xFFFF:
        return False
    table = ctx.service.table
    ok = table.set(m.prog, m.vers, netid, uaddr_from("0.0.0.0", m.port), owner_of(ctx))
    table.setinfo[2] += ok
    return ok


async def PMAPPROC_UNSET(ctx, m):
    if not is_local(ctx):
        return _refused(ctx, "UNSET")
    table = ctx.service.table
    ok = table.unset(m.prog, m.vers, ("udp", "tcp"), owner_of(ctx))
    table.unsetinfo[2] += ok
    return ok


async def PMAPPROC_GETPORT(ctx, m):
    table = ctx.service.table
    netid = PROT_NETID.get(m.prot)
    r = table.find(m.prog, m.vers, netid, exact=False) if netid else None
    table.count_addr(2, m.prog, m.vers, netid or "", r is not None)
    return r.port if r is not None else 0


async def PMAPPROC_DUMP(ctx, args):
    return [mapping(r.prog, r.vers, NETID_PROT[r.netid], r.port)
            for r in ctx.service.table.dump() if r.netid in ("udp", "tcp")]


# --- Versions 3 and 4 (RFC 1833 section 2); the version is the call's ---


async def RPCBPROC_NULL(ctx, args):
    return None


async def RPCBPROC_SET(ctx, r):
    if not is_local(ctx):
        return _refused(ctx, "SET")
    netid, addr = _s(r.r_netid), _s(r.r_addr)
    if netid in NETID_PROT:
        try:
            parse_uaddr(addr)
        except UaddrError:
            return False
    table = ctx.service.table
    ok = table.set(r.r_prog, r.r_vers, netid, addr, owner_of(ctx))
    table.setinfo[ctx.call.vers] += ok
    return ok


async def RPCBPROC_UNSET(ctx, r):
    if not is_local(ctx):
        return _refused(ctx, "UNSET")
    netid = _s(r.r_netid)
    table = ctx.service.table
    ok = table.unset(r.r_prog, r.r_vers, (netid,) if netid else None, owner_of(ctx))
    table.unsetinfo[ctx.call.vers] += ok
    return ok


def _getaddr(ctx, r, exact):
    table = ctx.service.table
    netid = _s(r.r_netid) or request_netid(ctx)
    reg = table.find(r.r_prog, r.r_vers, netid, exact)
    table.count_addr(ctx.call.vers, r.r_prog, r.r_vers, netid, reg is not None)
    return merged_addr(reg, ctx).encode() if reg is not None else b""


async def RPCBPROC_GETADDR(ctx, r):
    """Any version of the program when the asked one is not registered."""
    return _getaddr(ctx, r, exact=False)


async def RPCBPROC_DUMP(ctx, args):
    return [rpcb(r.prog, r.vers, r.netid.encode(), r.addr.encode(), r.owner.encode())
            for r in ctx.service.table.dump()]


async def RPCBPROC_GETTIME(ctx, args):
    return int(ctx.service.clock()) & 0xFFFFFFFF


async def RPCBPROC_UADDR2TADDR(ctx, uaddr):
    try:
        buf = taddr_from_uaddr(uaddr)
    except UaddrError:
        return netbuf(0, b"")
    return netbuf(len(buf), buf)


async def RPCBPROC_TADDR2UADDR(ctx, nb):
    try:
        return uaddr_from_taddr(nb.buf).encode()
    except UaddrError:
        return b""


async def RPCBPROC_GETVERSADDR(ctx, r):
    """The asked version only."""
    return _getaddr(ctx, r, exact=True)


async def RPCBPROC_GETADDRLIST(ctx, r):
    family = _family(ctx)
    out = []
    for reg in ctx.service.table.dump():
        if reg.prog != r.r_prog or reg.vers != r.r_vers or reg.netid not in NETID_PROT:
            continue
        six = reg.netid.endswith("6")
        if (family == 6) != six:
            continue
        out.append(rpcb_entry(merged_addr(reg, ctx).encode(), reg.netid.encode(),
                              NETID_SEMANTICS[reg.netid], b"inet6" if six else b"inet",
                              reg.netid.rstrip("6").encode()))
    return out


async def RPCBPROC_GETSTAT(ctx, args):
    table = ctx.service.table
    stats = []
    for v in (2, 3, 4):
        addrs = [rpcbs_addrlist(p, vv, s, f, n.encode())
                 for (p, vv, n), (s, f) in table.addrinfo[v].items()]
        stats.append(rpcb_stat(list(table.info[v]), table.setinfo[v], table.unsetinfo[v],
                               addrs, []))
    return stats


def _counted(procs):
    """The same procedures, each call counted for GETSTAT (per version and
    procedure number)."""
    def wrap(proc):
        inner = proc.handler

        async def handler(ctx, args):
            call = ctx.call
            if call.proc < RPCBSTAT_HIGHPROC:
                ctx.service.table.info[call.vers][call.proc] += 1
            return await inner(ctx, args)
        return Procedure(proc.name, proc.args_type, proc.res_type, handler, proc.idempotent)
    return {num: wrap(p) for num, p in procs.items()}


# SET and UNSET change the table; the portmapper's dispatcher has no duplicate
# request cache, though (a replayed SET answers FALSE, as rpcbind's does).
P = PMAPPROC
_V2 = procedure_table([
    # procedure               arguments      results              handler               cached
    (P.PMAPPROC_NULL,           Void,          Void,                PMAPPROC_NULL,        False),
    (P.PMAPPROC_SET,            mapping,       Bool,                PMAPPROC_SET,         True),
    (P.PMAPPROC_UNSET,          mapping,       Bool,                PMAPPROC_UNSET,       True),
    (P.PMAPPROC_GETPORT,        mapping,       UInt32,              PMAPPROC_GETPORT,     False),
    (P.PMAPPROC_DUMP,           Void,          pmaplist,            PMAPPROC_DUMP,        False),
])
R = RPCBPROC
_V3_ROWS = [
    (R.RPCBPROC_NULL,           Void,          Void,                RPCBPROC_NULL,        False),
    (R.RPCBPROC_SET,            rpcb,          Bool,                RPCBPROC_SET,         True),
    (R.RPCBPROC_UNSET,          rpcb,          Bool,                RPCBPROC_UNSET,       True),
    (R.RPCBPROC_GETADDR,        rpcb,          _uaddr_string,       RPCBPROC_GETADDR,     False),
    (R.RPCBPROC_DUMP,           Void,          rpcblist_ptr,        RPCBPROC_DUMP,        False),
    (R.RPCBPROC_GETTIME,        Void,          UInt32,              RPCBPROC_GETTIME,     False),
    (R.RPCBPROC_UADDR2TADDR,    _uaddr_string, netbuf,              RPCBPROC_UADDR2TADDR, False),
    (R.RPCBPROC_TADDR2UADDR,    netbuf,        _uaddr_string,       RPCBPROC_TADDR2UADDR, False),
]
_V3 = procedure_table(_V3_ROWS)
_V4 = procedure_table(_V3_ROWS + [
    (R.RPCBPROC_GETVERSADDR,    rpcb,          _uaddr_string,       RPCBPROC_GETVERSADDR, False),
    (R.RPCBPROC_GETADDRLIST,    rpcb,          rpcb_entry_list_ptr, RPCBPROC_GETADDRLIST, False),
    (R.RPCBPROC_GETSTAT,        Void,          rpcb_stat_byvers,    RPCBPROC_GETSTAT,     False),
])
del P, R


def program(table, clock=time.time):
    """Program 100000 (versions 2, 3, 4) over a PortTable."""
    return Program(PMAP_PROGRAM, "portmapper",
                   {PMAPVERS: _counted(_V2), RPCBVERS: _counted(_V3), RPCBVERS4: _counted(_V4)},
                   Portmapper(table, clock))


# --- The client side: a system rpcbind ----------------------------------------



async def _call(host, port, vers, proc, args, timeout, retries=3):
    """One portmapper call over UDP: the decoded rpc.Reply, or None if nothing
    answered within ``timeout`` seconds (retransmitting meanwhile)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    xid = random.getrandbits(32)
    msg = rpc.encode_call(xid, PMAP_PROGRAM, vers, proc, args)
    plain = socket.socket(family, socket.SOCK_DGRAM)
    # From a privileged port when we may, so that rpcbind records our entries
    # as owned by the superuser; else from any port.
    reserve_port(plain, "::" if family == socket.AF_INET6 else "0.0.0.0")
    with trio.socket.from_stdlib_socket(plain) as sock:
        with trio.move_on_after(timeout):
            try:
                # Connected, so that an ICMP port unreachable (nobody on the
                # port) ends the wait at once instead of after the timeout.
                await sock.connect((host, port))
            except OSError as e:
                log.debug("portmapper call to %s:%d: %s", host, port, e)
                return None
            for attempt in range(retries):
                try:
                    await sock.send(msg)
                except OSError as e:
                    log.debug("portmapper call to %s:%d: %s", host, port, e)
                    return None
                with trio.move_on_after(timeout / retries):
                    while True:
                        try:
                            data = await sock.recv(65536)
                        except OSError:
                            return None  # ECONNREFUSED: nobody on the port
                        if rpc.peek_xid(data) != xid:
                            continue
                        try:
                            return rpc.decode_reply(data)
                        except (XdrError, ValueError):
                            continue
    return None


def _bool_result(reply):
    if reply is None or not reply.accepted or reply.stat != rpc.accept_stat.SUCCESS:
        return False
    try:
        return decode(Bool, reply.body)
    except XdrError:
        return False


async def rpcbind_running(timeout=1.0, host="127.0.0.1", port=PMAP_PORT):
    """Whether a portmapper answers a version 2 NULL call on host:port."""
    reply = await _call(host, port, PMAPVERS, PMAPPROC.PMAPPROC_NULL, b"", timeout)
    return reply is not None and reply.accepted and reply.stat == rpc.accept_stat.SUCCESS


def _mappings(registrations):
    out = []
    for reg in registrations:
        if isinstance(reg, mapping):
            out.append(reg)
        else:
            prog, vers, prot, port = reg
            out.append(mapping(prog, vers, int(prot), port))
    return out


async def register_with_rpcbind(registrations, host="127.0.0.1", timeout=2.0, port=PMAP_PORT):
    """Register (prog, vers, prot, port) tuples (or mappings) with a system
    rpcbind by version 2 SET. Stale entries of the same (prog, vers), e.g. from
    a previous run, are UNSET first, as nfs-utils' daemons do. True when every
    SET was accepted; False when rpcbind did not answer or refused (logged)."""
    maps = _mappings(registrations)
    for prog, vers in dict.fromkeys((m.prog, m.vers) for m in maps):
        reply = await _call(host, port, PMAPVERS, PMAPPROC.PMAPPROC_UNSET,
                            encode(mapping, mapping(prog, vers, 0, 0)), timeout)
        if reply is None:
            log.warning("rpcbind on %s:%d did not answer", host, port)
            return False
    ok = True
    for m in maps:
        reply = await _call(host, port, PMAPVERS, PMAPPROC.PMAPPROC_SET,
                            encode(mapping, m), timeout)
        if reply is None:
            log.warning("rpcbind on %s:%d did not answer", host, port)
            return False
        if not _bool_result(reply):
            why = reply.auth.name if reply.auth is not None else "SET answered FALSE"
            log.error("rpcbind refused %d/%d/%s port %d: %s", m.prog, m.vers,
                      PROT_NETID.get(m.prot, m.prot), m.port, why)
            ok = False
    return ok


async def unregister_with_rpcbind(registrations, host="127.0.0.1", timeout=2.0, port=PMAP_PORT):
    """UNSET every (prog, vers) of the registrations; True if rpcbind answered."""
    answered = True
    for prog, vers in dict.fromkeys((m.prog, m.vers) for m in _mappings(registrations)):
        reply = await _call(host, port, PMAPVERS, PMAPPROC.PMAPPROC_UNSET,
                            encode(mapping, mapping(prog, vers, 0, 0)), timeout)
        answered = answered and reply is not None
    return answered


__all__ = ["PortTable", "Registration", "program", "rpcbind_running", "register_with_rpcbind",
           "unregister_with_rpcbind", "is_local", "merged_addr", "SUPERUSER", "UNKNOWN_OWNER",
           "IPPROTO_TCP", "IPPROTO_UDP"]
