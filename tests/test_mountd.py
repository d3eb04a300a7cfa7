"""The MOUNT service and the exports registry behind it: MNT/DUMP/UMNT/EXPORT
through the Dispatcher with encoded calls, and resolve(), the contract the NFS
services use for every handle."""

import logging
import re
import shutil
import struct
import threading
import time

import pytest
import trio

from common import mount as m
from common import rpc
from common.nfs3 import nfsstat3
from common.rpc import accept_stat
from common.xdr import decode, encode
from nfspd import mountd
from nfspd.dispatch import CallContext, Dispatcher
from nfspd.exports import ExportRegistry, HostnameCache
from nfspd.fs.handles import export_id_of, mac_len
from nfspd.fs.types import FileType, FsError

ROOT_CRED = rpc.AuthSys(1, b"client", 0, 0, [0, 10])
USER_CRED = rpc.AuthSys(1, b"client", 1000, 100, [100, 200])


def fake_fh(export_id, tag):
    """Shaped like nfspd.fs.handles' handles: version 1, export id, type, n, data, MAC."""
    data = tag.ljust(8, b"\0")[:8]
    return struct.pack(">BIBB", 1, export_id, 1, 8) + data + b"M" * mac_len(8)


class Attr:
    def __init__(self, type):
        self.type = type


class TinyFS:
    """What the registry needs of a MetaFS: root_fh, and lookup for subdirectory mounts."""

    def __init__(self, path, export_id, tree=None):
        self.path = path
        self.export_id = export_id
        self.root_fh = fake_fh(export_id, b"root")
        # {(dir fh, name): (fh, type)}
        self.tree = {}
        self.lookups = []
        for rel, kind in (tree or {}).items():
            parent = self.root_fh
            parts = rel.split("/")
            for i, part in enumerate(parts):
                key = (parent, part.encode())
                if key not in self.tree:
                    t = kind if i == len(parts) - 1 else FileType.DIR
                    self.tree[key] = (fake_fh(export_id, "/".join(parts[:i + 1]).encode()), t)
                parent = self.tree[key][0]

    def lookup(self, dir_fh, name, caller):
        self.lookups.append((name, caller.uid))
        hit = self.tree.get((dir_fh, name))
        if hit is None:
            if any(k[0] == dir_fh for k in self.tree) or dir_fh == self.root_fh:
                raise FsError(nfsstat3.NFS3ERR_NOENT)
            raise FsError(nfsstat3.NFS3ERR_NOTDIR)
        return hit[0], Attr(hit[1]), None


class Fixture:
    def __init__(self, tmp_path, text, tree=None, hostnames=None, rmtab=True):
        self.file = tmp_path / "exports"
        self.file.write_text(text)
        self.made = []
        self.tree = tree or {}
        ids = iter(range(0x1000, 0x2000))

        def make_fs(path):
            fs = TinyFS(path, next(ids), self.tree.get(path))
            self.made.append(fs)
            return fs
        self.rmtab = str(tmp_path / "rmtab") if rmtab else None
        self.registry = ExportRegistry(str(self.file), make_fs, rmtab_path=self.rmtab,
                                       hostnames=hostnames or HostnameCache(lambda ip: ()),
                                       dns_wait=0.05, mount_dns_wait=0.5)
        self.registry.load()
        self.dispatcher = Dispatcher([mountd.program(self.registry)])

    def fs(self, path):
        return next(f for f in reversed(self.made) if f.path == path)

    def call(self, vers, proc, args=b"", ip="127.0.0.1", port=700, cred=None, transport="udp"):
        ctx = CallContext((ip, port), ("127.0.0.1", 20048), transport)
        data = rpc.encode_call(7, m.MOUNT_PROGRAM, vers, proc, args, cred)
        return rpc.decode_reply(trio.run(self.dispatcher.handle, data, ctx))

    def result(self, vers, proc, res_type, args=b"", **kw):
        r = self.call(vers, proc, args, **kw)
        assert r.accepted and r.stat == accept_stat.SUCCESS, r
        return decode(res_type, r.body)

    def mnt3(self, path, **kw):
        return self.result(3, 1, m.mountres3, encode(m.dirpath, path), **kw)


def eventually(predicate, timeout=5.0):
    """For the lookup threads: poll with a bound."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def ctx(ip="10.0.0.5", port=700, cred=ROOT_CRED):
    c = CallContext((ip, port), ("10.0.0.1", 2049), "udp")
    c.cred = cred
    return c


EXPORTS = ("/srv     10.0.0.0/8(rw) 127.0.0.1(rw,insecure)\n"
           "/pub     *(ro)\n"
           "/private 192.168.9.9(rw)\n")


# --- MNT -------------------------------------------------------------------


def test_mnt_v3_returns_the_export_root_handle_and_auth_sys(tmp_path):
    f = Fixture(tmp_path, EXPORTS)
    res = f.mnt3(b"/srv")
    assert res.disc == m.mountstat3.MNT3_OK
    assert res.body.fhandle == f.fs("/srv").root_fh
    assert res.body.auth_flavors == [1]


@pytest.mark.parametrize("vers", [1, 2])
def test_mnt_v1_v2_return_the_handle_padded_to_32_bytes(tmp_path, vers):
    f = Fixture(tmp_path, EXPORTS)
    res = f.result(vers, 1, m.fhstatus, encode(m.dirpath, b"/pub"))
    root = f.fs("/pub").root_fh
    assert res.disc == 0 and len(res.body) == 32
    assert res.body == root + b"\0" * (32 - len(root))


@pytest.mark.parametrize("vers", [1, 2])
def test_mnt_v1_v2_errors_are_errnos(tmp_path, vers):
    f = Fixture(tmp_path, EXPORTS)
    assert f.result(vers, 1, m.fhstatus, encode(m.dirpath, b"/nope")) == m.fhstatus(2)
    assert f.result(vers, 1, m.fhstatus, encode(m.dirpath, b"/private")) == m.fhstatus(13)


def test_mnt_of_a_path_in_no_export_is_noent(tmp_path):
    f = Fixture(tmp_path, EXPORTS)
    assert f.mnt3(b"/elsewhere").disc == m.mountstat3.MNT3ERR_NOENT
    assert f.mnt3(b"srv").disc == m.mountstat3.MNT3ERR_NOENT
    assert f.mnt3(b"/srv/../private").disc == m.mountstat3.MNT3ERR_NOENT
    assert f.mnt3(b"/srvx").disc == m.mountstat3.MNT3ERR_NOENT  # a prefix is not a parent


def test_mnt_by_a_client_not_listed_is_acces(tmp_path):
    f = Fixture(tmp_path, EXPORTS)
    assert f.mnt3(b"/private").disc == m.mountstat3.MNT3ERR_ACCES
    assert f.mnt3(b"/srv", ip="192.168.0.1").disc == m.mountstat3.MNT3ERR_ACCES


def test_mnt_from_an_unprivileged_port_needs_insecure(tmp_path):
    # nfs-utils' mountd refuses an "illegal port" with MNT3ERR_ACCES.
    f = Fixture(tmp_path, EXPORTS)
    assert f.mnt3(b"/srv", ip="10.1.1.1", port=40000).disc == m.mountstat3.MNT3ERR_ACCES
    assert f.mnt3(b"/srv", ip="10.1.1.1", port=1023).disc == m.mountstat3.MNT3_OK
    assert f.mnt3(b"/srv", ip="127.0.0.1", port=40000).disc == m.mountstat3.MNT3_OK


def test_mnt_of_a_subdirectory_walks_down_from_the_export_root_as_root(tmp_path):
    tree = {"/srv": {"proj/a": FileType.DIR, "proj/file": FileType.REG}}
    f = Fixture(tmp_path, EXPORTS, tree)
    res = f.mnt3(b"/srv//proj/a/")
    assert res.disc == m.mountstat3.MNT3_OK
    fs = f.fs("/srv")
    assert res.body.fhandle == fs.tree[(fs.tree[(fs.root_fh, b"proj")][0], b"a")][0]
    assert fs.lookups == [(b"proj", 0), (b"a", 0)]
    assert f.mnt3(b"/srv/proj/file").disc == m.mountstat3.MNT3ERR_NOTDIR
    assert f.mnt3(b"/srv/proj/missing").disc == m.mountstat3.MNT3ERR_NOENT
    assert f.mnt3(b"/srv/proj/file/x").disc == m.mountstat3.MNT3ERR_NOTDIR


def test_mnt_uses_the_longest_export_that_lets_the_client_in(tmp_path):
    text = "/srv 10.0.0.0/8(rw)\n/srv/inner 192.168.0.0/16(rw)\n"
    tree = {"/srv": {"inner": FileType.DIR}}
    f = Fixture(tmp_path, text, tree)
    inner = f.mnt3(b"/srv/inner", ip="192.168.1.1")
    assert inner.body.fhandle == f.fs("/srv/inner").root_fh
    via_parent = f.mnt3(b"/srv/inner", ip="10.1.1.1")
    assert via_parent.body.fhandle == f.fs("/srv").tree[(f.fs("/srv").root_fh, b"inner")][0]


def test_mnt_by_host_name_waits_for_the_lookup(tmp_path):
    names = HostnameCache(lambda ip: ("node7.cluster",) if ip == "10.0.0.7" else ())
    f = Fixture(tmp_path, "/srv node7.cluster(rw) *.other(ro)\n", hostnames=names)
    assert f.mnt3(b"/srv", ip="10.0.0.7").disc == m.mountstat3.MNT3_OK
    assert f.mnt3(b"/srv", ip="10.0.0.8").disc == m.mountstat3.MNT3ERR_ACCES


def test_oversized_dirpath_is_garbage_args(tmp_path):
    f = Fixture(tmp_path, EXPORTS)
    args = (1025).to_bytes(4, "big") + b"/" * 1028
    assert f.call(3, 1, args).stat == accept_stat.GARBAGE_ARGS


def test_versions_and_procedures(tmp_path):
    f = Fixture(tmp_path, EXPORTS)
    for vers in (1, 2, 3):
        assert f.call(vers, 0).stat == accept_stat.SUCCESS
    assert f.call(2, m.MOUNTPROC.MOUNTPROC_PATHCONF, encode(m.dirpath, b"/srv")).stat == \
        accept_stat.PROC_UNAVAIL
    assert f.call(3, 6).stat == accept_stat.PROC_UNAVAIL  # EXPORTALL is not in v3
    r = f.call(4, 0)
    assert r.stat == accept_stat.PROG_MISMATCH and r.mismatch == (1, 3)


# --- DUMP, UMNT, UMNTALL, EXPORT --------------------------------------------


def test_dump_lists_mounts_until_umnt_and_umntall(tmp_path):
    f = Fixture(tmp_path, EXPORTS + "/other 127.0.0.1(insecure)\n")
    f.mnt3(b"/srv")
    f.mnt3(b"/pub")
    f.mnt3(b"/other")
    f.mnt3(b"/pub", ip="10.9.9.9")
    f.mnt3(b"/pub")  # again: listed once
    dump = f.result(3, 2, m.mountlist)
    assert [(b.ml_hostname, b.ml_directory) for b in dump] == [
        (b"127.0.0.1", b"/srv"), (b"127.0.0.1", b"/other"), (b"10.9.9.9", b"/pub"),
        (b"127.0.0.1", b"/pub")]
    f.call(3, 3, encode(m.dirpath, b"/srv"))
    assert len(f.result(1, 2, m.mountlist)) == 3
    f.call(3, 4)
    assert [(b.ml_hostname, b.ml_directory) for b in f.result(3, 2, m.mountlist)] == [
        (b"10.9.9.9", b"/pub")]


def test_failed_mounts_are_not_listed(tmp_path):
    f = Fixture(tmp_path, EXPORTS)
    f.mnt3(b"/private")
    f.mnt3(b"/nope")
    assert f.result(3, 2, m.mountlist) == []


def test_the_mount_list_survives_a_restart_and_is_bounded(tmp_path):
    f = Fixture(tmp_path, EXPORTS)
    f.mnt3(b"/pub", ip="10.0.0.1")
    f.mnt3(b"/pub", ip="10.0.0.2")
    again = Fixture(tmp_path, EXPORTS)
    assert [b.ml_hostname for b in again.result(3, 2, m.mountlist)] == [b"10.0.0.1", b"10.0.0.2"]
    again.registry.mounts.max_entries = 3
    for i in range(3, 8):
        again.mnt3(b"/pub", ip=f"10.0.0.{i}")
    assert [b.ml_hostname for b in again.result(3, 2, m.mountlist)] == [
        b"10.0.0.5", b"10.0.0.6", b"10.0.0.7"]


def test_a_corrupt_mount_list_file_is_ignored(tmp_path):
    (tmp_path / "rmtab").write_text("{not json")
    f = Fixture(tmp_path, EXPORTS)
    assert f.result(3, 2, m.mountlist) == []
    f.mnt3(b"/pub")
    assert len(Fixture(tmp_path, EXPORTS).result(3, 2, m.mountlist)) == 1


@pytest.mark.parametrize("vers, proc", [(1, 5), (2, 5), (3, 5), (1, 6), (2, 6)])
def test_export_lists_paths_and_client_groups_empty_meaning_everyone(tmp_path, vers, proc):
    f = Fixture(tmp_path, EXPORTS)
    ex = f.result(vers, proc, m.exports)
    assert [(e.ex_dir, e.ex_groups) for e in ex] == [
        (b"/srv", [b"10.0.0.0/8", b"127.0.0.1"]), (b"/pub", []), (b"/private", [b"192.168.9.9"])]


# --- resolve(): the contract of the NFS services -----------------------------


def test_resolve_gives_the_fs_and_a_squashed_caller(tmp_path):
    f = Fixture(tmp_path, EXPORTS + "/open 10.0.0.0/8(rw,no_root_squash)\n")
    srv = f.fs("/srv")
    fs, caller = f.registry.resolve(ctx(), srv.root_fh)
    assert fs is srv
    assert (caller.uid, caller.gid, caller.gids, caller.readonly) == \
        (65534, 65534, (65534, 10), False)
    fs, caller = f.registry.resolve(ctx(cred=USER_CRED), fake_fh(srv.export_id, b"any"))
    assert (caller.uid, caller.gid, caller.gids) == (1000, 100, (100, 200))
    _, caller = f.registry.resolve(ctx(), f.fs("/open").root_fh)
    assert (caller.uid, caller.gid) == (0, 0)


def test_resolve_tells_whether_the_callers_changes_must_be_durable_before_the_reply(tmp_path):
    f = Fixture(tmp_path, "/srv 10.0.0.1(rw,async) 10.0.0.0/8(rw)\n")
    _, caller = f.registry.resolve(ctx(ip="10.0.0.1"), f.fs("/srv").root_fh)
    assert caller.sync is False
    _, caller = f.registry.resolve(ctx(ip="10.0.0.2"), f.fs("/srv").root_fh)
    assert caller.sync is True


def test_resolve_ro_export_and_anonymous_callers(tmp_path):
    f = Fixture(tmp_path, "/pub *(ro,anonuid=7,anongid=8)\n")
    _, caller = f.registry.resolve(ctx(cred=None), f.fs("/pub").root_fh)
    assert (caller.uid, caller.gid, caller.gids, caller.readonly) == (7, 8, (), True)


def test_resolve_accepts_ipv4_mapped_client_addresses(tmp_path):
    f = Fixture(tmp_path, EXPORTS)
    assert f.registry.resolve(ctx(ip="::ffff:10.0.0.5"), f.fs("/srv").root_fh)[0] is f.fs("/srv")


@pytest.mark.parametrize("fh, status", [
    (b"", nfsstat3.NFS3ERR_BADHANDLE),
    (b"\x07" * 32, nfsstat3.NFS3ERR_BADHANDLE),
    (fake_fh(0xDEAD, b"x"), nfsstat3.NFS3ERR_STALE),
])
def test_resolve_rejects_garbage_and_unknown_exports(tmp_path, fh, status):
    f = Fixture(tmp_path, EXPORTS)
    with pytest.raises(FsError) as exc:
        f.registry.resolve(ctx(), fh)
    assert exc.value.status == status


def test_resolve_refuses_unlisted_clients_and_insecure_ports(tmp_path):
    f = Fixture(tmp_path, EXPORTS)
    with pytest.raises(FsError) as exc:
        f.registry.resolve(ctx(ip="192.168.0.1"), f.fs("/srv").root_fh)
    assert exc.value.status == nfsstat3.NFS3ERR_STALE
    with pytest.raises(FsError) as exc:
        f.registry.resolve(ctx(port=1024), f.fs("/srv").root_fh)
    assert exc.value.status == nfsstat3.NFS3ERR_PERM
    assert f.registry.resolve(ctx(ip="127.0.0.1", port=50000), f.fs("/srv").root_fh)


def test_resolve_says_jukebox_while_a_host_name_is_being_looked_up(tmp_path):
    release = threading.Event()

    def slow(ip):
        release.wait(5)
        return ("node7.cluster",)
    f = Fixture(tmp_path, "/srv node7.cluster(rw)\n", hostnames=HostnameCache(slow))
    root = f.fs("/srv").root_fh
    with pytest.raises(FsError) as exc:
        f.registry.resolve(ctx(ip="10.0.0.7"), root)
    assert exc.value.status == nfsstat3.NFS3ERR_JUKEBOX
    release.set()
    eventually(lambda: f.registry.hostnames.peek("10.0.0.7") is not None)
    assert f.registry.resolve(ctx(ip="10.0.0.7"), root)[1].readonly is False


# --- load and reload ----------------------------------------------------------


def test_load_refuses_a_bad_file_with_file_and_line(tmp_path):
    (tmp_path / "exports").write_text("/srv h(rw)\n/pub h(bogus)\n")
    reg = ExportRegistry(str(tmp_path / "exports"), lambda p: TinyFS(p, 1))
    with pytest.raises(ValueError, match=r"exports:2: unknown export option 'bogus'"):
        reg.load()
    with pytest.raises(OSError):
        ExportRegistry(str(tmp_path / "missing"), lambda p: TinyFS(p, 1)).load()


def test_load_reports_an_export_that_cannot_be_made_with_its_line(tmp_path):
    (tmp_path / "exports").write_text("# c\n/srv h(rw)\n")

    def make_fs(path):
        raise FileNotFoundError(2, "No such file or directory", path)
    with pytest.raises(ValueError, match=r"exports:2: cannot export /srv"):
        ExportRegistry(str(tmp_path / "exports"), make_fs).load()


def test_two_exports_with_the_same_id_are_refused(tmp_path):
    (tmp_path / "exports").write_text("/a h\n/b h\n")
    with pytest.raises(ValueError, match="same export id"):
        ExportRegistry(str(tmp_path / "exports"), lambda p: TinyFS(p, 5)).load()


def test_reload_keeps_the_old_table_when_the_new_file_is_bad(tmp_path, caplog):
    f = Fixture(tmp_path, EXPORTS)
    f.file.write_text("/srv 10.0.0.0/8(rw\n")
    with caplog.at_level(logging.ERROR):
        assert f.registry.reload() is False
    assert re.search(r"/exports:1: .*unbalanced parentheses", caplog.text)
    assert f.registry.export_paths() == ["/srv", "/pub", "/private"]
    assert f.registry.resolve(ctx(), f.fs("/srv").root_fh)


def test_reload_applies_new_options_keeps_fs_objects_and_drops_removed_exports(tmp_path):
    f = Fixture(tmp_path, EXPORTS)
    srv, pub = f.fs("/srv"), f.fs("/pub")
    f.file.write_text("/srv 10.0.0.0/8(ro)\n/new *(rw)\n")
    assert f.registry.reload() is True
    assert f.registry.export_paths() == ["/srv", "/new"]
    fs, caller = f.registry.resolve(ctx(), srv.root_fh)
    assert fs is srv and caller.readonly
    assert len([x for x in f.made if x.path == "/srv"]) == 1
    with pytest.raises(FsError) as exc:
        f.registry.resolve(ctx(), pub.root_fh)
    assert exc.value.status == nfsstat3.NFS3ERR_STALE


def test_fake_handles_are_what_nfspd_handles_parses():
    assert export_id_of(fake_fh(0x1234, b"x")) == 0x1234


# --- HostnameCache ----------------------------------------------------------


def test_hostname_cache_serves_stale_names_while_refreshing():
    now = [0.0]
    calls = []

    def lookup(ip):
        calls.append(ip)
        return (f"n{len(calls)}",)
    cache = HostnameCache(lookup, ttl=10, negative_ttl=1, clock=lambda: now[0])
    assert cache.get("10.0.0.1", wait=2) == (True, ("n1",))
    assert cache.get("10.0.0.1", wait=0) == (True, ("n1",)) and len(calls) == 1
    now[0] = 11
    assert cache.get("10.0.0.1", wait=0) == (True, ("n1",))  # stale, refresh started
    eventually(lambda: cache.peek("10.0.0.1") == ("n2",))
    assert cache.get("10.0.0.1", wait=0) == (True, ("n2",))


def test_hostname_cache_bounds_concurrent_lookups():
    release = threading.Event()
    cache = HostnameCache(lambda ip: release.wait(5) and (), max_pending=2)
    assert cache.get("10.0.0.1", 0) == (False, ())
    assert cache.get("10.0.0.2", 0) == (False, ())
    assert cache.get("10.0.0.3", 0) == (True, ())  # no thread to spare: treated as nameless
    release.set()


# --- The real showmount against our MOUNT and portmapper ---------------------


@pytest.mark.netns
@pytest.mark.skipif(not shutil.which("showmount"), reason="needs nfs-common's showmount")
def test_real_showmount_lists_exports_and_mounts(ns, tmp_path):
    import socket

    from nfspd import portmapper
    from tests.test_portmapper import serve_tcp, serve_udp

    f = Fixture(tmp_path, EXPORTS)
    f.mnt3(b"/pub")  # from 127.0.0.1
    table = portmapper.PortTable()
    for vers in (1, 2, 3):
        for prot in (socket.IPPROTO_UDP, socket.IPPROTO_TCP):
            table.add(m.MOUNT_PROGRAM, vers, prot, 20048)
    services = [(111, Dispatcher([portmapper.program(table)])), (20048, f.dispatcher)]

    def bind():  # sockets live in the namespace they were made in
        socks = []
        for port, _ in services:
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", port))
            tcp = socket.socket()
            tcp.bind(("127.0.0.1", port))
            tcp.listen(8)
            socks.append((udp, tcp))
        return socks
    socks = ns.inside(bind)

    async def main():
        async with trio.open_nursery() as nursery:
            for (udp, tcp), (_, dispatcher) in zip(socks, services):
                nursery.start_soon(serve_udp, trio.socket.from_stdlib_socket(udp), dispatcher)
                nursery.start_soon(serve_tcp, trio.socket.from_stdlib_socket(tcp), dispatcher)
            outs = []
            for argv in (["showmount", "-e", "127.0.0.1"], ["showmount", "-a", "127.0.0.1"]):
                outs.append(await trio.to_thread.run_sync(lambda: ns.run(argv, timeout=20)))
            nursery.cancel_scope.cancel()
        return outs

    exports, mounts = trio.run(main)
    assert exports.returncode == 0, exports.stderr
    # showmount sorts each export's groups; no groups prints as (everyone).
    assert [line.split() for line in exports.stdout.splitlines()[1:]] == [
        ["/srv", "10.0.0.0/8,127.0.0.1"], ["/pub", "(everyone)"], ["/private", "192.168.9.9"]], \
        exports.stdout
    assert mounts.returncode == 0, mounts.stderr
    assert mounts.stdout.splitlines()[1:] == ["127.0.0.1:/pub"], mounts.stdout


class ClosableFS(TinyFS):
    closed = []

    def close(self):
        self.closed.append(self.path)


def test_reload_closes_dropped_exports_and_a_refused_file_leaks_nothing(tmp_path):
    ids = iter(range(10, 99))
    ClosableFS.closed = []
    f = tmp_path / "exports"
    f.write_text("/a h\n/b h\n")
    reg = ExportRegistry(str(f), lambda p: ClosableFS(p, next(ids)))
    reg.load()
    f.write_text("/a h\n")
    assert reg.reload()
    assert ClosableFS.closed == ["/b"]
    # /c is made, then the duplicate id of /d refuses the file: /c is closed, /a kept.
    reg2 = ExportRegistry(str(f), lambda p: ClosableFS(p, 7))
    f.write_text("/c h\n/d h\n")
    assert not reg2.reload()
    assert ClosableFS.closed == ["/b", "/c", "/d"]
