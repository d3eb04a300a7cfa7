"""READDIRPLUS lookups reused while nothing changes (nfspd/fs/attrcache.py),
through the real nfspd: one client lists a directory again and again while
another changes it over NFS, and every listing carries, for every entry, the
attributes a GETATTR gives at that moment."""

import pytest

from common import nfs3
from common.nfs3 import NFSPROC3
from tools.dev import nfsclient

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


@pytest.mark.parametrize("lister_transport", ["udp", "tcp"])
def test_another_clients_changes_show_in_the_next_listing(ns, nfspd, lister_transport):
    d = nfspd()
    lister, root = ns.inside(nfsclient.connect, "127.0.0.1", d.export, transport=lister_transport)
    changer, _ = ns.inside(nfsclient.connect, "127.0.0.1", d.export, transport="tcp")
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
