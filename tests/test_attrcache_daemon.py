"""READDIRPLUS lookups and pages (and NFSv4 READDIR replies) reused while
nothing changes (nfspd/fs/attrcache.py), through the real nfspd: one client
lists a directory again and again while another changes it over NFS, and
every listing carries, for every entry, the attributes a GETATTR gives at
that moment."""

import pytest

from common import nfs3, nfs4
from common.nfs3 import NFSPROC3
from common.nfs4 import nfs_opnum4 as O
from common.nfs4 import nfsstat4
from nfspd import admin
from tests.test_nfs4_compound import LINUX_READDIR, _readdir_page
from tools.dev import nfsclient
from tools.dev.netns import wait_until
from tools.dev.nfs4client import Nfs4Client, op

pytestmark = pytest.mark.netns


def listing(c, fh):
    """{name: (fattr3, handle)} of a whole READDIRPLUS listing, short pages."""
    out, cookie, verf = {}, 0, b"\0" * 8
    while True:
        body = c.ok(NFSPROC3.READDIRPLUS, nfs3.READDIRPLUS3args(fh, cookie, verf, 512, 2048))
        for e in body.reply.entries:
            out[e.name] = (e.name_attributes, e.name_handle)
            cookie = e.cookie
        verf = body.cookieverf
        if body.reply.eof:
            return out


def as_getattr_says(c, entries):
    return {name: (c.getattr(fh), fh) for name, (_, fh) in entries.items() if name != b".."}


def start(nfspd, workers):
    """nfspd, with ``workers`` processes that list directories and make the
    namespace changes that come over UDP (nfspd/workers.py): each process
    keeps its own lookups, all counting their changes in shared memory."""
    d = nfspd(extra_args=["--workers", str(workers)])
    if workers:
        wait_until(lambda: None not in admin.request(admin.socket_path(d.state))[
            "status"]["workers"]["pids"], 20, what="workers ready")
    return d


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("lister_transport", ["udp", "tcp"])
def test_another_clients_changes_show_in_the_next_listing(ns, nfspd, lister_transport, workers):
    d = start(nfspd, workers)
    lister, root = ns.inside(nfsclient.connect, "127.0.0.1", d.export, transport=lister_transport)
    changer, _ = ns.inside(nfsclient.connect, "127.0.0.1", d.export,
                           transport="udp" if workers else "tcp")
    top = changer.ok(NFSPROC3.MKDIR, nfs3.MKDIR3args(nfs3.diropargs3(root, b"top"),
                                                    nfs3.sattr3.unchanged())).obj
    files = {b"f%02d" % i: changer.create(top, b"f%02d" % i) for i in range(30)}
    sub = changer.ok(NFSPROC3.MKDIR, nfs3.MKDIR3args(nfs3.diropargs3(top, b"sub"),
                                                    nfs3.sattr3.unchanged())).obj
    listing(lister, top)

    def change_and_check(what, change):
        before = listing(lister, top)
        assert listing(lister, top) == before       # read again: the same
        change()
        after = listing(lister, top)
        assert {n: a for n, a in after.items() if n != b".."} == as_getattr_says(lister, after), \
            what
        assert after != before, what

    unchanged = nfs3.sattr3.unchanged()
    change_and_check("SETATTR", lambda: changer.ok(NFSPROC3.SETATTR, nfs3.SETATTR3args(
        files[b"f03"], unchanged.replace(mode=0o600), None)))
    change_and_check("WRITE", lambda: changer.write(files[b"f07"], 5000, b"grown"))
    change_and_check("LINK", lambda: changer.ok(NFSPROC3.LINK, nfs3.LINK3args(
        files[b"f11"], nfs3.diropargs3(sub, b"f11-too"))))                  # f11's nlink
    change_and_check("REMOVE", lambda: changer.ok(NFSPROC3.REMOVE, nfs3.REMOVE3args(
        nfs3.diropargs3(sub, b"f11-too"))))
    change_and_check("RENAME", lambda: changer.ok(NFSPROC3.RENAME, nfs3.RENAME3args(
        nfs3.diropargs3(top, b"f13"), nfs3.diropargs3(top, b"f14"))))
    change_and_check("MKDIR in sub", lambda: changer.ok(NFSPROC3.MKDIR, nfs3.MKDIR3args(
        nfs3.diropargs3(sub, b"deeper"), unchanged)))                       # sub's nlink


@pytest.mark.parametrize("workers", [0, 2])
def test_nfs4_readdir_replies_kept_show_another_clients_changes(ns, nfspd, workers):
    d = start(nfspd, workers)
    v4 = ns.inside(Nfs4Client, "127.0.0.1").mount()
    changer, root = ns.inside(nfsclient.connect, "127.0.0.1", d.export,
                              transport="udp" if workers else "tcp")
    files = {b"g%02d" % i: changer.create(root, b"g%02d" % i) for i in range(20)}
    elsewhere = changer.ok(NFSPROC3.MKDIR, nfs3.MKDIR3args(nfs3.diropargs3(root, b"elsewhere"),
                                                          nfs3.sattr3.unchanged())).obj
    dirfh = v4.lookup_path(d.export)
    getattr_ = [a for a in LINUX_READDIR if a != nfs4.FATTR4_RDATTR_ERROR]

    def v4_listing():
        """{name: attrs} in short pages (dircount 200: several READDIRs)."""
        out, cookie, verf = {}, 0, bytes(8)
        while True:
            _, page = _readdir_page(v4, dirfh, cookie, verf, 200, 65536, LINUX_READDIR)
            for e in page.reply.entries:
                out[e.name] = nfs4.decode_attrs(e.attrs)
                cookie = e.cookie
            verf = page.cookieverf
            if page.reply.eof:
                return out

    def as_getattr_says(listed):
        out = {}
        for name, attrs in listed.items():
            res = v4.seq(op(O.OP_PUTFH, nfs4.PUTFH4args(attrs[nfs4.FATTR4_FILEHANDLE])),
                         op(O.OP_GETATTR, nfs4.GETATTR4args(nfs4.attrs_to_bitmap4(getattr_))))
            out[name] = {nfs4.FATTR4_RDATTR_ERROR: nfsstat4.NFS4_OK,
                         **nfs4.decode_attrs(res.resarray[-1].body.body.obj_attributes)}
        return out

    v4_listing()
    unchanged = nfs3.sattr3.unchanged()
    for what, change in (
            ("SETATTR", lambda: changer.ok(NFSPROC3.SETATTR, nfs3.SETATTR3args(
                files[b"g05"], unchanged.replace(mode=0o640), None))),
            ("WRITE", lambda: changer.write(files[b"g06"], 100, b"more")),
            ("LINK", lambda: changer.ok(NFSPROC3.LINK, nfs3.LINK3args(
                files[b"g07"], nfs3.diropargs3(root, b"g07-too")))),
            # The listed directory unchanged: only g08's nlink tells.
            ("LINK elsewhere", lambda: changer.ok(NFSPROC3.LINK, nfs3.LINK3args(
                files[b"g08"], nfs3.diropargs3(elsewhere, b"g08-too"))))):
        before = v4_listing()
        assert v4_listing() == before
        change()
        after = v4_listing()
        assert after != before and after == as_getattr_says(after), what
