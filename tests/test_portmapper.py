"""The portmapper: PortTable rules and program 100000 v2/v3/v4 through the
Dispatcher; then, inside a private network namespace, registration with the
real Debian rpcbind and the real rpcinfo against our embedded portmapper."""

import os
import re
import shutil

import pytest
import trio

from common import portmap as pm
from common import rpc
from common.rpc import accept_stat
from common.xdr import Bool, String, UInt32, Void, decode, encode
from nfspd import portmapper
from nfspd.dispatch import CallContext, Dispatcher
from nfspd.portmapper import PortTable

NFS, MOUNT = 100003, 100005
uaddr_t = String(255)


class PM:
    def __init__(self, clock=lambda: 1_700_000_000.5):
        self.table = PortTable()
        self.dispatcher = Dispatcher([portmapper.program(self.table, clock=clock)])

    def call(self, vers, proc, args=b"", ip="127.0.0.1", port=700, local="127.0.0.1",
             transport="udp"):
        ctx = CallContext((ip, port), (local, 111), transport)
        data = rpc.encode_call(9, pm.PMAP_PROGRAM, vers, proc, args)
        return rpc.decode_reply(trio.run(self.dispatcher.handle, data, ctx))

    def result(self, vers, proc, res_type, args_type=Void, args=None, **kw):
        r = self.call(vers, proc, encode(args_type, args), **kw)
        assert r.accepted and r.stat == accept_stat.SUCCESS, r
        return decode(res_type, r.body)

    def set2(self, prog, vers, prot, pmport, **kw):
        return self.result(2, 1, Bool, pm.mapping, pm.mapping(prog, vers, prot, pmport), **kw)

    def unset2(self, prog, vers, **kw):
        return self.result(2, 2, Bool, pm.mapping, pm.mapping(prog, vers, 0, 0), **kw)

    def getport(self, prog, vers, prot, **kw):
        return self.result(2, 3, UInt32, pm.mapping, pm.mapping(prog, vers, prot, 0), **kw)

    def dump2(self, **kw):
        return [(x.prog, x.vers, x.prot, x.port) for x in self.result(2, 4, pm.pmaplist, **kw)]

    def rpcb(self, vers, proc, res_type, prog, pvers, netid=b"", addr=b"", owner=b"", **kw):
        args = pm.rpcb(prog, pvers, netid, addr, owner)
        return self.result(vers, proc, res_type, pm.rpcb, args, **kw)

    def dump(self, vers=3, **kw):
        return [(r.r_prog, r.r_vers, r.r_netid, r.r_addr, r.r_owner)
                for r in self.result(vers, 4, pm.rpcblist_ptr, **kw)]


# --- Version 2 ---------------------------------------------------------------


def test_the_portmapper_lists_itself_like_rpcbind_does():
    assert PM().dump2() == [(100000, v, p, 111) for v in (2, 3, 4) for p in (6, 17)]
    assert PortTable(portmapper_port=None).dump() == []


def test_set_getport_dump_unset():
    p = PM()
    assert p.set2(NFS, 3, pm.IPPROTO_UDP, 2049)
    assert p.set2(NFS, 3, pm.IPPROTO_TCP, 2049)
    assert p.getport(NFS, 3, pm.IPPROTO_UDP) == 2049
    assert (NFS, 3, 17, 2049) in p.dump2() and (NFS, 3, 6, 2049) in p.dump2()
    assert p.unset2(NFS, 3)  # both protocols go
    assert p.getport(NFS, 3, pm.IPPROTO_UDP) == 0 and p.getport(NFS, 3, pm.IPPROTO_TCP) == 0


def test_set_of_an_already_registered_program_fails():
    p = PM()
    assert p.set2(MOUNT, 3, pm.IPPROTO_UDP, 20048)
    assert not p.set2(MOUNT, 3, pm.IPPROTO_UDP, 30000)
    assert p.getport(MOUNT, 3, pm.IPPROTO_UDP) == 20048


def test_set_with_an_unknown_protocol_or_port_zero_fails():
    p = PM()
    assert not p.set2(MOUNT, 3, 132, 20048)  # SCTP
    assert not p.set2(MOUNT, 3, pm.IPPROTO_UDP, 0)


def test_remote_callers_may_not_set_or_unset():
    p = PM()
    assert not p.set2(MOUNT, 3, pm.IPPROTO_UDP, 20048, ip="10.0.0.9", port=600)
    assert p.getport(MOUNT, 3, pm.IPPROTO_UDP) == 0
    assert not p.unset2(100000, 2, ip="10.0.0.9", port=600)
    assert p.getport(100000, 2, pm.IPPROTO_UDP) == 111
    assert p.set2(MOUNT, 3, pm.IPPROTO_UDP, 20048, ip="::ffff:127.0.0.1")
    assert p.set2(MOUNT, 1, pm.IPPROTO_UDP, 20048, ip="::1")


def test_unprivileged_local_callers_cannot_remove_root_registrations():
    p = PM()
    assert p.set2(NFS, 3, pm.IPPROTO_UDP, 2049, port=800)  # owner superuser
    assert p.set2(MOUNT, 3, pm.IPPROTO_UDP, 20048, port=40000)  # owner unknown
    assert not p.unset2(NFS, 3, port=40001)
    assert p.getport(NFS, 3, pm.IPPROTO_UDP) == 2049
    assert p.unset2(MOUNT, 3, port=40001)  # an unknown may remove an unknown's
    assert p.unset2(NFS, 3, port=900)


def test_getport_falls_back_to_another_version_so_clients_learn_the_range():
    p = PM()
    p.set2(NFS, 3, pm.IPPROTO_UDP, 2049)
    assert p.getport(NFS, 4, pm.IPPROTO_UDP) == 2049
    assert p.getport(NFS, 3, pm.IPPROTO_TCP) == 0
    assert p.getport(NFS, 3, 99) == 0


def test_callit_is_not_offered_and_other_versions_get_the_range():
    p = PM()
    args = encode(pm.call_args, pm.call_args(NFS, 3, 0, b""))
    assert p.call(2, 5, args).stat == accept_stat.PROC_UNAVAIL
    assert p.call(3, 5, args).stat == accept_stat.PROC_UNAVAIL
    r = p.call(5, 0)
    assert r.stat == accept_stat.PROG_MISMATCH and r.mismatch == (2, 4)
    assert p.call(2, 1, b"\0\0\0").stat == accept_stat.GARBAGE_ARGS


def test_table_add_is_what_the_daemon_uses():
    t = PortTable()
    assert t.add(NFS, 3, pm.IPPROTO_TCP, 2049, owner="nfspd")
    assert not t.add(NFS, 3, pm.IPPROTO_TCP, 2050)
    r = t.find(NFS, 3, "tcp", exact=True)
    assert (r.addr, r.owner, r.port) == ("0.0.0.0.8.1", "nfspd", 2049)
    with pytest.raises(ValueError):
        t.add(NFS, 3, 132, 2049)


# --- Versions 3 and 4 ------------------------------------------------------------


def test_rpcb_set_records_the_owner_from_the_callers_port_not_its_claim():
    p = PM()
    assert p.rpcb(3, 1, Bool, MOUNT, 3, b"udp", b"0.0.0.0.78.80", b"superuser", port=40000)
    assert p.rpcb(4, 1, Bool, MOUNT, 3, b"tcp", b"0.0.0.0.78.80", b"someone", port=700)
    dump = p.dump(4)
    assert (MOUNT, 3, b"udp", b"0.0.0.0.78.80", b"unknown") in dump
    assert (MOUNT, 3, b"tcp", b"0.0.0.0.78.80", b"superuser") in dump
    assert (100000, 4, b"udp", b"0.0.0.0.0.111", b"superuser") in dump


def test_rpcb_set_refuses_bad_addresses_and_remote_callers():
    p = PM()
    assert not p.rpcb(3, 1, Bool, MOUNT, 3, b"udp", b"nonsense")
    assert not p.rpcb(3, 1, Bool, MOUNT, 3, b"", b"0.0.0.0.78.80")
    assert not p.rpcb(3, 1, Bool, MOUNT, 3, b"udp", b"0.0.0.0.78.80", ip="192.0.2.1")
    assert not any(r[0] == MOUNT for r in p.dump())


def test_rpcb_unset_one_netid_or_all():
    p = PM()
    for netid in (b"udp", b"tcp", b"udp6"):
        addr = b"::.78.80" if netid.endswith(b"6") else b"0.0.0.0.78.80"
        assert p.rpcb(3, 1, Bool, MOUNT, 3, netid, addr)
    assert p.rpcb(3, 2, Bool, MOUNT, 3, b"tcp")
    assert {r[2] for r in p.dump() if r[0] == MOUNT} == {b"udp", b"udp6"}
    assert p.rpcb(4, 2, Bool, MOUNT, 3)
    assert not any(r[0] == MOUNT for r in p.dump())
    assert not p.rpcb(4, 2, Bool, MOUNT, 3)


def test_getaddr_answers_a_wildcard_registration_with_the_address_asked():
    p = PM()
    p.table.add(NFS, 3, pm.IPPROTO_UDP, 2049)
    got = p.rpcb(3, 3, uaddr_t, NFS, 3, b"udp", ip="10.1.1.1", local="10.1.1.2")
    assert got == b"10.1.1.2.8.1"
    # The request's own transport stands in for an empty netid.
    assert p.rpcb(4, 3, uaddr_t, NFS, 3, ip="10.1.1.1", local="10.1.1.2") == b"10.1.1.2.8.1"
    assert p.rpcb(4, 3, uaddr_t, NFS, 3, transport="tcp") == b""


def test_getaddr_falls_back_to_other_versions_but_getversaddr_does_not():
    p = PM()
    p.table.add(NFS, 3, pm.IPPROTO_UDP, 2049)
    assert p.rpcb(3, 3, uaddr_t, NFS, 4, b"udp") == b"127.0.0.1.8.1"
    assert p.rpcb(4, 9, uaddr_t, NFS, 4, b"udp") == b""
    assert p.rpcb(4, 9, uaddr_t, NFS, 3, b"udp") == b"127.0.0.1.8.1"
    assert p.call(3, 9, encode(pm.rpcb, pm.rpcb(NFS, 3, b"", b"", b""))).stat == \
        accept_stat.PROC_UNAVAIL


def test_getaddrlist_gives_every_transport_of_the_family_asked():
    p = PM()
    p.table.add(NFS, 3, pm.IPPROTO_UDP, 2049)
    p.table.add(NFS, 3, pm.IPPROTO_TCP, 2049)
    p.table.set(NFS, 3, "tcp6", "::.8.1", "superuser")
    entries = p.rpcb(4, 11, pm.rpcb_entry_list_ptr, NFS, 3, b"udp")
    assert [(e.r_maddr, e.r_nc_netid, e.r_nc_semantics, e.r_nc_protofmly, e.r_nc_proto)
            for e in entries] == [(b"127.0.0.1.8.1", b"udp", pm.NC_TPI_CLTS, b"inet", b"udp"),
                                  (b"127.0.0.1.8.1", b"tcp", pm.NC_TPI_COTS_ORD, b"inet", b"tcp")]


def test_gettime_and_address_conversions():
    p = PM()
    assert p.result(3, 6, UInt32) == 1_700_000_000
    nb = p.result(3, 7, pm.netbuf, uaddr_t, b"127.0.0.1.0.111")
    assert nb.maxlen == len(nb.buf) == 16
    assert p.result(4, 8, uaddr_t, pm.netbuf, nb) == b"127.0.0.1.0.111"
    assert p.result(3, 7, pm.netbuf, uaddr_t, b"junk") == pm.netbuf(0, b"")
    assert p.result(3, 8, uaddr_t, pm.netbuf, pm.netbuf(3, b"abc")) == b""


def test_getstat_counts_calls_sets_and_lookups_per_version():
    p = PM()
    p.set2(NFS, 3, pm.IPPROTO_UDP, 2049)
    p.getport(NFS, 3, pm.IPPROTO_UDP)
    p.getport(NFS, 9, pm.IPPROTO_TCP)
    p.rpcb(3, 3, uaddr_t, NFS, 3, b"udp")
    v2, v3, v4 = p.result(4, 12, pm.rpcb_stat_byvers)
    assert v2.info[1] == 1 and v2.info[3] == 2 and v2.setinfo == 1
    assert [(a.prog, a.vers, a.success, a.failure, a.netid) for a in v2.addrinfo] == [
        (NFS, 3, 1, 0, b"udp"), (NFS, 9, 0, 1, b"tcp")]
    assert v3.info[3] == 1 and v4.info[12] == 1


# --- Against the real rpcbind and rpcinfo, in a network namespace -----------------

needs_tools = pytest.mark.skipif(
    not (os.path.exists("/usr/sbin/rpcbind") and shutil.which("rpcinfo")),
    reason="needs Debian's rpcbind and rpcinfo")

REGS = [(NFS, 3, pm.IPPROTO_UDP, 2049), (NFS, 3, pm.IPPROTO_TCP, 2049),
        (MOUNT, 3, pm.IPPROTO_UDP, 20048), (MOUNT, 1, pm.IPPROTO_TCP, 20048)]


def rpcinfo_p(ns):
    out = ns.run(["rpcinfo", "-p", "127.0.0.1"], timeout=20)
    rows = set()
    for line in out.stdout.splitlines()[1:]:
        f = line.split()
        rows.add((int(f[0]), int(f[1]), f[2], int(f[3])))
    return out, rows


@pytest.fixture
def rpcbind(ns):
    """The system's rpcbind, running in the test's namespace (own /run, own port 111)."""
    from tools.dev.netns import stop, wait_until
    proc = ns.popen(["/usr/sbin/rpcbind", "-f"])
    wait_until(lambda: ns.run(["rpcinfo", "-p", "127.0.0.1"], timeout=5).returncode == 0,
               timeout=10, what="rpcbind answering")
    yield proc
    stop(proc)


@pytest.mark.netns
@needs_tools
def test_registering_with_the_real_rpcbind(ns, rpcbind):
    assert ns.inside(trio.run, portmapper.rpcbind_running)
    assert ns.inside(trio.run, portmapper.register_with_rpcbind, REGS) is True
    out, rows = rpcinfo_p(ns)
    assert {(100003, 3, "udp", 2049), (100003, 3, "tcp", 2049), (100005, 3, "udp", 20048),
            (100005, 1, "tcp", 20048)} <= rows, out.stdout
    # We registered from a privileged port, so the entries are root's.
    owners = ns.run(["rpcinfo", "127.0.0.1"], timeout=20).stdout
    assert re.search(r"100003\s+3\s+udp\s+0\.0\.0\.0\.8\.1\s+\S+\s+superuser", owners), owners
    # Registering again (a restart) replaces rather than fails.
    assert ns.inside(trio.run, portmapper.register_with_rpcbind, REGS) is True
    assert ns.inside(trio.run, portmapper.unregister_with_rpcbind, REGS) is True
    _, rows = rpcinfo_p(ns)
    assert not any(r[0] in (NFS, MOUNT) for r in rows)


@pytest.mark.netns
@needs_tools
def test_no_rpcbind_is_noticed_quickly(ns):
    async def probe():
        with trio.fail_after(3):
            running = await portmapper.rpcbind_running(timeout=2.0)
            registered = await portmapper.register_with_rpcbind(REGS, timeout=2.0)
        return running, registered
    assert ns.inside(trio.run, probe) == (False, False)


async def serve_udp(sock, dispatcher):
    """A plain loop, so that this test depends on the program only, not on nfspd.transport."""
    while True:
        data, client = await sock.recvfrom(65536)
        reply = await dispatcher.handle(data, CallContext(client, sock.getsockname(), "udp"))
        if reply is not None:
            await sock.sendto(reply, client)


async def serve_tcp(listener, dispatcher):
    async def connection(sock):
        ctx_addr = (sock.getpeername(), sock.getsockname())
        async with trio.SocketStream(sock) as stream:
            reader = rpc.RecordReader(1 << 20)
            while data := await stream.receive_some(65536):
                for record in reader.feed(data):
                    reply = await dispatcher.handle(record, CallContext(*ctx_addr, "tcp"))
                    if reply is not None:
                        await stream.send_all(rpc.encode_record(reply))
    async with trio.open_nursery() as nursery:
        while True:
            sock, _ = await listener.accept()
            nursery.start_soon(connection, sock)


@pytest.mark.netns
@needs_tools
def test_real_rpcinfo_reads_our_embedded_portmapper(ns):
    import socket
    table = PortTable()
    for reg in REGS:
        table.add(*reg, owner="nfspd")
    dispatcher = Dispatcher([portmapper.program(table)])

    def bind():  # sockets live in the namespace they were made in
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 111))
        tcp = socket.socket()
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind(("127.0.0.1", 111))
        tcp.listen(8)
        return udp, tcp
    udp, tcp = ns.inside(bind)

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_udp, trio.socket.from_stdlib_socket(udp), dispatcher)
            nursery.start_soon(serve_tcp, trio.socket.from_stdlib_socket(tcp), dispatcher)
            outs = []
            for argv in (["rpcinfo", "-p", "127.0.0.1"], ["rpcinfo", "127.0.0.1"],
                         ["rpcinfo", "-T", "udp", "127.0.0.1", "100000", "2"],
                         ["rpcinfo", "-l", "127.0.0.1", "100003", "3"],
                         ["rpcinfo", "-m", "127.0.0.1"]):
                outs.append(await trio.to_thread.run_sync(lambda: ns.run(argv, timeout=20)))
            nursery.cancel_scope.cancel()
        return outs

    dash_p, plain, ping, dash_l, dash_m = trio.run(main)
    assert dash_p.returncode == 0, dash_p.stderr
    assert re.search(r"100003\s+3\s+udp\s+2049\s+nfs", dash_p.stdout), dash_p.stdout
    assert re.search(r"100005\s+1\s+tcp\s+20048\s+mountd", dash_p.stdout), dash_p.stdout
    assert re.search(r"100000\s+2\s+tcp\s+111\s+portmapper", dash_p.stdout), dash_p.stdout
    assert plain.returncode == 0, plain.stderr
    # Version 4 DUMP, with the wildcard address as registered and our owner.
    assert re.search(r"100003\s+3\s+tcp\s+0\.0\.0\.0\.8\.1\s+nfs\s+nfspd", plain.stdout), \
        plain.stdout
    assert "ready and waiting" in ping.stdout, ping.stdout + ping.stderr
    assert dash_l.returncode == 0, dash_l.stderr
    assert "127.0.0.1.8.1" in dash_l.stdout, dash_l.stdout
    assert dash_m.returncode == 0, dash_m.stderr
