"""Issue 8, "The RPC layer", end to end: a real nfspd (with a real iod) in a
testbed of network namespaces, three client hosts, Debian's real tools and the
project's client, each in its own host.

    /x  A(rw,insecure)            only A
    /y  A(secure) B(secure)       A and B, privileged source ports only
    C   is in no export at all

What each refusal looks like was checked against Linux:

- MNT by a client an export does not list: MNT3ERR_ACCES (nfs-utils' mountd),
  which libnfs prints as "MNT3ERR_ACCES(13) Permission denied(13)".
- A handle of an export used by a client it does not list: Linux's
  nfsd_set_fh_dentry() answers nfserr_stale when rqst_exp_find() finds no
  export for this client (-ENOENT); the protocol's STALE (RFC 1094, 1813) is
  a handle whose file is gone "or access to it has been revoked". STALE also
  tells a stranger nothing (nfspd's ACCES confirms the handle names a live
  export).
- `secure` and a source port >= 1024: MNT3ERR_ACCES from mountd ("illegal
  port"), nfserr_perm from nfsd_setuser_and_check_port(). AUTH_TOOWEAK is not
  what Linux uses for this (v2/v3 get ACCES even for a wrong security flavor).
- AUTH_SYS with more than 16 gids: AUTH_BADCRED (Linux and RFC 5531). Machine
  names over 255 bytes and bodies that do not parse: the issue asks for
  AUTH_BADCRED too (Linux's svcauth_unix_accept() says GARBAGE_ARGS for those
  since its xdr_stream rewrite, BADCRED before); nfspd answers every one, never
  drops it, and never logs a traceback.
"""

import os
import random
import struct

import pytest

from common import mount, nfs2, nfs3, rpc
from common.nfs3 import NFSPROC3, nfsstat3
from common.xdr import Packer, Struct
from tools.dev import netns as nslib
from tools.dev import nfsclient
from tools.dev import testbed as tblib
from tools.dev.daemons import Nfspd
from tools.rpcclient import RpcClient, getport

pytestmark = pytest.mark.netns

SECRET = bytes(random.Random(8).randrange(256) for _ in range(100_000))  # two 64 KiB stripes
NOBODY = 65534


class Site:
    """The testbed, our nfspd, and what host A made in the exports."""

    def __init__(self, tb, nfspd, x, y):
        self.tb, self.nfspd, self.x, self.y = tb, nfspd, x, y
        self.A, self.B, self.C = tb.clients
        self.ms = tb.ms.ip
        self.h = {}  # A's handles, see _populate

    def url(self, export, path=""):
        return f"nfs://{self.ms}{export}/{path}"

    def served_cleanly(self):
        """nfspd still runs and logged no traceback (whatever it was sent)."""
        assert self.nfspd.proc.poll() is None, self.nfspd.log_text()[-3000:]
        log = self.nfspd.log_text()
        assert "Traceback" not in log, log[log.index("Traceback") - 500:][:4000]


def _populate(site):
    """A's files, made through NFS as a client makes them: /x/f (SECRET),
    /x/d, /x/l -> f; /y/g. Returns the handles (v3, and v2 for /x)."""
    def make():
        c, root = nfsclient.connect(site.ms, site.x, transport="udp")
        try:
            sattr = nfs3.sattr3.unchanged().replace(mode=0o755)
            d = c.ok(NFSPROC3.MKDIR, nfs3.MKDIR3args(nfs3.diropargs3(root, b"d"), sattr)).obj
            f = c.create(root, b"f", mode=0o600)
            c.write_all(f, SECRET)
            link = c.ok(NFSPROC3.SYMLINK, nfs3.SYMLINK3args(
                nfs3.diropargs3(root, b"l"), nfs3.symlinkdata3(sattr, b"f"))).obj
            assert c.read_all(f) == SECRET
        finally:
            c.rpc.close()
        c2, root2 = nfsclient.connect(site.ms, site.x, vers=2, transport="udp")
        try:
            root2 = root2.ljust(32, b"\0")
            f2 = c2.call(nfs2.NFSPROC.LOOKUP, nfs2.diropargs(root2, b"f")).body.file
        finally:
            c2.rpc.close()
        cy, rooty = nfsclient.connect(site.ms, site.y, transport="udp")
        try:
            cy.create(rooty, b"g")
        finally:
            cy.rpc.close()
        return dict(root=root, f=f, d=d, l=link, root2=root2, f2=f2, rooty=rooty)
    return site.A.inside(make)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if not nslib.available():
        pytest.skip("needs root with nsenter (network namespaces)")
    work = tmp_path_factory.mktemp("access")
    with_iods = tblib.Testbed.iod_built()
    tb = tblib.Testbed(f"ac{os.getpid()}", n_iods=1 if with_iods else 0, n_clients=3,
                       workdir=str(work / "bed"))
    d = None
    try:
        # The testbed starts the iod and an nfspd exporting to everyone; ours
        # replaces that nfspd, with the exports under test and the same iod.
        tb.up()
        argv = tb._load_state()["daemons"]["nfspd"]["argv"]
        tb.stop_daemon("nfspd")
        data_args = []
        if with_iods:
            data_args = ["--iods", argv[argv.index("--iods") + 1],
                         "--key", argv[argv.index("--key") + 1], "--unlinkd", "off"]
        x, y = str(work / "x"), str(work / "y")
        os.makedirs(x)
        os.makedirs(y)
        A, B, _ = tb.clients
        exports = (f"{x} {A.ip}(rw,no_root_squash,insecure)\n"
                   f"{y} {A.ip}(rw,no_root_squash,secure) {B.ip}(rw,no_root_squash,secure)\n")
        (work / "ms").mkdir()
        d = Nfspd(tb.ms, str(work / "ms"), export=x, exports_text=exports, portmap="embedded",
                  extra_args=["--bind", "0.0.0.0"] + data_args).start()
        s = Site(tb, d, x, y)
        s.h = _populate(s)
        yield s
    finally:
        if d is not None:
            d.stop()
        tb.down()


# --- Debian's real tools -------------------------------------------------------

MNT_ACCES = ("Failed to mount nfs share : mount_cb: RPC error: Mount failed with error "
             "MNT3ERR_ACCES(13) Permission denied(13)")


def _tool(host, *argv, user=None):
    if user is not None:  # libnfs binds a port below 1024 only when it can (root)
        argv = ("setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups") + argv
    return host.run(list(argv), timeout=30, text=False)


def _need(*tools):
    import shutil
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (nfs-common, libnfs-utils)")


def test_real_tools_from_unlisted_hosts_get_nothing_of_x(site):
    _need("showmount", "rpcinfo", "nfs-ls", "nfs-cat")
    A, B, C = site.A, site.B, site.C
    # The export list is public, as with mountd; it names who may mount what.
    for h in (A, B, C):
        r = _tool(h, "showmount", "-e", site.ms)
        assert r.returncode == 0, r.stderr
        assert r.stdout.decode().splitlines()[1:] == [
            f"{site.x} {A.ip}", f"{site.y} {A.ip},{B.ip}"], r.stdout
        # So is the portmapper: MOUNT and NFS are there, answering NULL.
        r = _tool(h, "rpcinfo", "-p", site.ms)
        assert r.returncode == 0 and b"100005" in r.stdout and b"100003" in r.stdout, r.stderr
        r = _tool(h, "rpcinfo", "-u", site.ms, "100005", "3")
        assert r.returncode == 0 and b"ready and waiting" in r.stdout, r.stderr
    # A, which /x lists, reads it...
    r = _tool(A, "nfs-ls", site.url(site.x))
    names = sorted(ln.split()[-1] for ln in r.stdout.decode().splitlines())
    assert r.returncode == 0 and names == ["d", "f", "l"], r.stdout + r.stderr
    r = _tool(A, "nfs-cat", site.url(site.x, "f"))
    assert r.returncode == 0 and r.stdout == SECRET, r.stderr
    # ...B and C get MNT3ERR_ACCES and not a byte.
    for h in (B, C):
        r = _tool(h, "nfs-ls", site.url(site.x))
        assert r.returncode != 0 and r.stdout == b"", r.stdout
        assert r.stderr.decode().splitlines() == [MNT_ACCES], r.stderr
        r = _tool(h, "nfs-cat", site.url(site.x, "f"))
        assert r.returncode != 0 and r.stdout == b"", r.stdout
        assert r.stderr.decode().splitlines() == [
            MNT_ACCES, f"Failed to open {site.url(site.x, 'f')}"], r.stderr
    # C is in no export: /y is refused to it as well.
    r = _tool(C, "nfs-ls", site.url(site.y))
    assert r.returncode != 0 and r.stderr.decode().splitlines() == [MNT_ACCES], r.stderr
    site.served_cleanly()


def test_real_tools_need_a_privileged_port_on_a_secure_export(site):
    _need("nfs-ls", "setpriv")
    r = _tool(site.B, "nfs-ls", site.url(site.y))
    assert r.returncode == 0 and r.stdout.decode().split()[-1:] == ["g"], r.stdout + r.stderr
    # As nobody, libnfs cannot bind below 1024: `secure` refuses the mount.
    r = _tool(site.B, "nfs-ls", site.url(site.y), user=NOBODY)
    assert r.returncode != 0 and r.stderr.decode().splitlines() == [MNT_ACCES], r.stderr
    # /x says `insecure` for A: any port will do.
    r = _tool(site.A, "nfs-ls", site.url(site.x), user=NOBODY)
    assert r.returncode == 0 and b" f\n" in r.stdout, r.stderr
    site.served_cleanly()


# --- A's handles in B's and C's hands ----------------------------------------


def _v3_attempts(h):
    """Every NFSv3 procedure with a handle A obtained from /x."""
    root, f, d, link = h["root"], h["f"], h["d"], h["l"]
    s = nfs3.sattr3.unchanged()
    at = nfs3.diropargs3
    return [
        (NFSPROC3.GETATTR, nfs3.GETATTR3args(root)),
        (NFSPROC3.SETATTR, nfs3.SETATTR3args(f, s.replace(mode=0o666), None)),
        (NFSPROC3.LOOKUP, nfs3.LOOKUP3args(at(root, b"f"))),
        (NFSPROC3.ACCESS, nfs3.ACCESS3args(f, 0x3F)),
        (NFSPROC3.READLINK, nfs3.READLINK3args(link)),
        (NFSPROC3.READ, nfs3.READ3args(f, 0, 8192)),
        (NFSPROC3.WRITE, nfs3.WRITE3args(f, 0, 5, nfs3.stable_how.FILE_SYNC, b"EVIL!")),
        (NFSPROC3.CREATE, nfs3.CREATE3args(at(root, b"evil"),
                                           nfs3.createhow3(nfs3.createmode3.UNCHECKED, s))),
        (NFSPROC3.MKDIR, nfs3.MKDIR3args(at(root, b"evildir"), s)),
        (NFSPROC3.SYMLINK, nfs3.SYMLINK3args(at(root, b"evillink"),
                                             nfs3.symlinkdata3(s, b"/etc"))),
        (NFSPROC3.MKNOD, nfs3.MKNOD3args(at(root, b"evilfifo"),
                                         nfs3.mknoddata3(nfs3.ftype3.NF3FIFO, s))),
        (NFSPROC3.REMOVE, nfs3.REMOVE3args(at(root, b"f"))),
        (NFSPROC3.RMDIR, nfs3.RMDIR3args(at(root, b"d"))),
        (NFSPROC3.RENAME, nfs3.RENAME3args(at(root, b"f"), at(d, b"moved"))),
        (NFSPROC3.LINK, nfs3.LINK3args(f, at(d, b"hard"))),
        (NFSPROC3.READDIR, nfs3.READDIR3args(root, 0, b"\0" * 8, 4096)),
        (NFSPROC3.READDIRPLUS, nfs3.READDIRPLUS3args(root, 0, b"\0" * 8, 4096, 32768)),
        (NFSPROC3.FSSTAT, nfs3.FSSTAT3args(root)),
        (NFSPROC3.FSINFO, nfs3.FSINFO3args(root)),
        (NFSPROC3.PATHCONF, nfs3.PATHCONF3args(root)),
        (NFSPROC3.COMMIT, nfs3.COMMIT3args(f, 0, 0)),
    ]


def _v2_attempts(h):
    root, f = h["root2"], h["f2"]
    return [
        (nfs2.NFSPROC.GETATTR, root),
        (nfs2.NFSPROC.LOOKUP, nfs2.diropargs(root, b"f")),
        (nfs2.NFSPROC.READ, nfs2.readargs(f, 0, 8192, 0)),
        (nfs2.NFSPROC.WRITE, nfs2.writeargs(f, 0, 0, 0, b"EVIL!")),
        (nfs2.NFSPROC.READDIR, nfs2.readdirargs(root, b"\0" * 4, 4096)),
    ]


def _attributes_in(value):
    """Object attributes anywhere in a decoded result (a refusal must carry none)."""
    if isinstance(value, (nfs3.fattr3, nfs3.wcc_attr, nfs2.fattr)):
        return [value]
    if isinstance(value, Struct):
        return [a for name, _ in value._fields for a in _attributes_in(getattr(value, name))]
    if isinstance(value, (list, tuple)):
        return [a for v in value for a in _attributes_in(v)]
    return []


def _try_handles(site, host, transport, vers):
    """{procedure name: (status, raw reply)} for A's handles used by ``host``,
    from a privileged port and as root (so neither `secure` nor squashing is
    the reason for a refusal)."""
    def run():
        cred = RpcClient.default_cred(0, 0, [0])
        with RpcClient(site.ms, 2049, transport, timeout=5, cred=cred,
                       reserved_port=True) as c:
            out = {}
            if vers == 3:
                for proc, args in _v3_attempts(site.h):
                    res = nfsclient.Nfs3(c).call(proc, args)
                    out[proc.name] = (res.disc, res.body)
            else:
                for proc, args in _v2_attempts(site.h):
                    res = nfsclient.Nfs2(c).call(proc, args)
                    disc = res if isinstance(res, nfs2.nfsstat) else res.disc
                    out[proc.name] = (disc, None if disc is res else res.body)
            return out
    return host.inside(run)


def _a_sees_nothing_changed(site):
    def look():
        c, root = nfsclient.connect(site.ms, site.x, transport="tcp")
        try:
            names = sorted(n for n in c.listdir(root) if n not in (b".", b".."))
            f = c.lookup(root, b"f")
            return names, c.read_all(f), c.getattr(f).mode & 0o7777, f
        finally:
            c.rpc.close()
    names, data, mode, f = site.A.inside(look)
    assert names == [b"d", b"f", b"l"]
    assert data == SECRET and mode == 0o600 and f == site.h["f"]


CASES = [("B", "udp", 3), ("B", "tcp", 3), ("C", "udp", 3), ("C", "tcp", 3),
         ("B", "udp", 2), ("C", "tcp", 2)]
REFUSED3 = {nfsstat3.NFS3ERR_STALE, nfsstat3.NFS3ERR_ACCES, nfsstat3.NFS3ERR_PERM}
REFUSED2 = {nfs2.nfsstat.NFSERR_STALE, nfs2.nfsstat.NFSERR_ACCES, nfs2.nfsstat.NFSERR_PERM}


@pytest.mark.parametrize("who,transport,vers", CASES, ids=[f"{w}-{t}-v{v}" for w, t, v in CASES])
def test_handles_of_another_clients_mount_do_nothing(site, who, transport, vers):
    got = _try_handles(site, getattr(site, who), transport, vers)
    refused = REFUSED3 if vers == 3 else REFUSED2
    assert {name: st for name, (st, _) in got.items() if st not in refused} == {}, got
    # Not even post-op attributes: nothing about the objects leaks.
    assert {name: body for name, (_, body) in got.items() if _attributes_in(body)} == {}
    _a_sees_nothing_changed(site)
    site.served_cleanly()


@pytest.mark.parametrize("who,transport,vers", CASES, ids=[f"{w}-{t}-v{v}" for w, t, v in CASES])
def test_handles_of_another_clients_mount_are_stale(site, who, transport, vers):
    got = _try_handles(site, getattr(site, who), transport, vers)
    stale = nfsstat3.NFS3ERR_STALE if vers == 3 else nfs2.nfsstat.NFSERR_STALE
    assert {name: st.name for name, (st, _) in got.items() if st != stale} == {}


def test_rename_and_link_cannot_cross_into_an_export_that_does_not_list_the_client(site):
    """B may use /y: it still cannot move or link anything between /y and /x
    (each handle of a two-handle call is checked, not just the first)."""
    def run():
        rooty = nfsclient.mount_export(site.ms, site.y, cred=RpcClient.default_cred(0, 0, [0]))
        with RpcClient(site.ms, 2049, "udp", timeout=5, reserved_port=True,
                       cred=RpcClient.default_cred(0, 0, [0])) as rpcc:
            c = nfsclient.Nfs3(rpcc)
            g = c.lookup(rooty, b"g")
            at, x, f = nfs3.diropargs3, site.h["root"], site.h["f"]
            tries = {
                "rename y/g -> x": (NFSPROC3.RENAME,
                                    nfs3.RENAME3args(at(rooty, b"g"), at(x, b"g"))),
                "rename x/f -> y": (NFSPROC3.RENAME,
                                    nfs3.RENAME3args(at(x, b"f"), at(rooty, b"f"))),
                "link x/f into y": (NFSPROC3.LINK, nfs3.LINK3args(f, at(rooty, b"f"))),
                "link y/g into x": (NFSPROC3.LINK, nfs3.LINK3args(g, at(x, b"g"))),
            }
            got = {what: c.call(proc, args).disc for what, (proc, args) in tries.items()}
            names = sorted(n for n in c.listdir(rooty) if n not in (b".", b".."))
        return got, names
    got, names = site.B.inside(run)
    assert {w: st for w, st in got.items() if st not in REFUSED3 | {nfsstat3.NFS3ERR_XDEV}} == {}
    assert names == [b"g"]
    _a_sees_nothing_changed(site)
    site.served_cleanly()


# --- secure ------------------------------------------------------------------------


def _mnt(site, host, transport, privileged, vers=3):
    """MNT of /y from ``host``: the handle, or the refusal's mountstat3."""
    def run():
        try:
            return nfsclient.mount_export(site.ms, site.y, vers=vers, transport=transport,
                                          reserved_port=privileged,
                                          cred=RpcClient.default_cred(0, 0, [0]))
        except nfsclient.NfsError as e:
            return e.status
    return host.inside(run)


def _getattr(site, host, fh, transport, privileged, vers=3):
    def run():
        with RpcClient(site.ms, 2049, transport, timeout=5, reserved_port=privileged,
                       cred=RpcClient.default_cred(0, 0, [0])) as c:
            if vers == 3:
                return nfsclient.Nfs3(c).call(NFSPROC3.GETATTR, nfs3.GETATTR3args(fh)).disc
            return nfsclient.Nfs2(c).call(nfs2.NFSPROC.GETATTR, fh.ljust(32, b"\0")).disc
    return host.inside(run)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_secure_export_wants_a_privileged_source_port(site, transport):
    B = site.B
    assert _mnt(site, B, transport, privileged=False) == mount.mountstat3.MNT3ERR_ACCES
    assert _mnt(site, B, transport, privileged=False, vers=1) == mount.mountstat3.MNT3ERR_ACCES
    root = _mnt(site, B, transport, privileged=True)
    assert root == site.h["rooty"]
    assert _getattr(site, B, root, transport, privileged=True) == nfsstat3.NFS3_OK
    assert _getattr(site, B, root, transport, privileged=False) == nfsstat3.NFS3ERR_PERM
    assert _getattr(site, B, root, transport, privileged=True, vers=2) == nfs2.nfsstat.NFS_OK
    assert _getattr(site, B, root, transport, privileged=False, vers=2) == \
        nfs2.nfsstat.NFSERR_PERM
    # The same source port is fine where the export says `insecure`.
    assert _getattr(site, site.A, site.h["root"], transport, privileged=False) == nfsstat3.NFS3_OK
    site.served_cleanly()


# --- Out-of-spec AUTH_SYS credentials -------------------------------------------


def _authsys(name=b"a", gids=(0,), uid=0, gid=0):
    return rpc.AuthSys(1, name, uid, gid, list(gids)).encode()


def _call(xid, prog, vers, proc, cred_body, args=b"", declared=None):
    """A CALL whose AUTH_SYS body is ``cred_body`` (padded to 4 bytes) with the
    length field ``declared`` (default: its true length)."""
    n = len(cred_body) if declared is None else declared
    head = struct.pack(">IIIIIIII", xid, 0, 2, prog, vers, proc, rpc.auth_flavor.AUTH_SYS, n)
    return head + cred_body + b"\0" * (-len(cred_body) % 4) + struct.pack(">II", 0, 0) + args


def _bad_credentials():
    """(what, body, declared length): AUTH_SYS bodies no client may send."""
    good = _authsys(b"client-a", gids=range(4))
    rnd = random.Random(17)
    cases = [
        ("17 gids", _authsys(gids=range(17)), None),
        ("16 gids then 1 more than the count says", _authsys(gids=range(16)) + b"\0\0\0\x07", None),
        ("gid count 2**32-1", struct.pack(">IIBxxxIII", 1, 1, 97, 0, 0, 0xFFFFFFFF), None),
        ("256-byte machine name", _authsys(b"m" * 256), None),
        ("machine name length 2**32-1", struct.pack(">II", 1, 0xFFFFFFFF) + b"x" * 40, None),
        ("declared shorter than the body", good, len(good) - 8),
        ("declared longer than the body", good + b"\0" * 8, None),
        ("body cut short (gids missing)", good[:-8], None),
        ("body of 3 bytes", b"abc", None),
        ("empty body", b"", None),
        ("declared 401 (over the 400 of opaque_auth)", good + b"\0" * (404 - len(good)), 401),
        ("declared beyond the message", good, 0x7FFFFFF0),
    ]
    for i in range(8):
        body = bytes(rnd.randrange(256) for _ in range(rnd.choice((4, 20, 64, 200, 400))))
        cases.append((f"random body {i}", body, None))
    return cases


def _valid_getattr(site, xid):
    args = Packer()
    nfs3.GETATTR3args.pack(args, nfs3.GETATTR3args(site.h["root"]))
    return _call(xid, nfs3.NFS_PROGRAM, 3, NFSPROC3.GETATTR, _authsys(), args.get_buffer())


def _send_each(site, transport, port, messages):
    """Send each (xid, message) on one socket, and a valid GETATTR after each;
    [(reply to the message, reply to the GETATTR)] decoded."""
    def run():
        out = []
        with RpcClient(site.ms, port, transport, timeout=3) as c, \
                RpcClient(site.ms, 2049, transport, timeout=3) as nfs:
            for xid, message in messages:
                bad = rpc.decode_reply(c.call_raw(message, xid))
                ok = rpc.decode_reply(nfs.call_raw(_valid_getattr(site, xid + 1), xid + 1))
                out.append((bad, ok))
        return out
    return site.A.inside(run)


def _auth_stat(reply):
    if reply.accepted:
        return reply.stat.name
    return reply.auth.name if reply.auth is not None else reply.stat.name


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("service", ["nfs", "mount"])
def test_out_of_spec_auth_sys_is_auth_badcred_and_nfspd_keeps_serving(site, transport, service):
    if service == "nfs":
        port = 2049
        args = Packer()
        nfs3.GETATTR3args.pack(args, nfs3.GETATTR3args(site.h["root"]))
        prog, vers, proc, args = nfs3.NFS_PROGRAM, 3, NFSPROC3.GETATTR, args.get_buffer()
    else:
        port = site.A.inside(getport, site.ms, mount.MOUNT_PROGRAM, 3, transport)
        args = Packer()
        mount.dirpath.pack(args, site.x.encode())
        prog, vers, proc, args = mount.MOUNT_PROGRAM, 3, mount.MOUNTPROC3.MOUNTPROC3_MNT, \
            args.get_buffer()
    cases = _bad_credentials()
    # At the limits, accepted: 16 gids, a 255-byte machine name.
    fine = [("16 gids", _authsys(gids=range(16)), None),
            ("255-byte name", _authsys(b"n" * 255), None)]
    messages = [(0x5EC0000 + 2 * i, _call(0x5EC0000 + 2 * i, prog, vers, proc, body, args, n))
                for i, (_, body, n) in enumerate(fine + cases)]
    replies = _send_each(site, transport, port, messages)
    got = {what: _auth_stat(bad) for (what, _, _), (bad, _) in zip(fine + cases, replies)}
    want = {what: "SUCCESS" for what, _, _ in fine}
    want.update({what: "AUTH_BADCRED" for what, _, _ in cases})
    assert got == want
    # After each of them the next call is served.
    assert [_auth_stat(ok) for _, ok in replies] == ["SUCCESS"] * len(replies)
    site.served_cleanly()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_client_with_too_many_gids_is_refused_on_the_same_connection_and_served_after(
        site, transport):
    """The project's own client, as a buggy client would be: 17 gids give an
    AUTH_BADCRED RpcCallError, and the very same socket then works."""
    def run():
        c, root = nfsclient.connect(site.ms, site.x, transport=transport)
        try:
            too_many = RpcClient.default_cred(0, 0, list(range(17)))
            with pytest.raises(nfsclient.RpcCallError) as e:
                c.call(NFSPROC3.GETATTR, nfs3.GETATTR3args(root), cred=too_many)
            long_name = RpcClient.default_cred(0, 0, [0])
            long_name.machinename = b"h" * 256
            with pytest.raises(nfsclient.RpcCallError) as e2:
                c.call(NFSPROC3.GETATTR, nfs3.GETATTR3args(root), cred=long_name)
            return e.value.reply.auth, e2.value.reply.auth, c.getattr(root).type
        finally:
            c.rpc.close()
    first, second, after = site.A.inside(run)
    assert first == second == rpc.auth_stat.AUTH_BADCRED
    assert after == nfs3.ftype3.NF3DIR
    site.served_cleanly()
