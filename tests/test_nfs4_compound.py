"""NFSv4.1 against the real nfspd process, driven by tools/dev/nfs4client.py:
sessions, the pseudo root, files through the data path, and the COMPOUND rules."""

import os
import signal

import pytest

from common import nfs4, rpc
from common.nfs4 import nfs_opnum4 as O
from common.nfs4 import nfsstat4
from tools.dev.netns import wait_until
from tools.dev.nfs4client import Nfs4Client, Nfs4Failed, op


def client(ns, **kw):
    return ns.inside(Nfs4Client, "127.0.0.1", **kw)


def mounted(ns, **kw):
    return client(ns, **kw).mount()


def test_a_session_then_the_export_through_the_pseudo_root(ns, nfspd):
    d = nfspd()
    c = mounted(ns)
    fh = c.lookup_path(d.export)
    attrs = c.getattr(fh, [nfs4.FATTR4_TYPE, nfs4.FATTR4_FSID, nfs4.FATTR4_FILEID])
    assert attrs[nfs4.FATTR4_TYPE] == nfs4.nfs_ftype4.NF4DIR
    assert attrs[nfs4.FATTR4_FILEID] == os.stat(d.export).st_ino
    root = c.ok(op(O.OP_PUTROOTFH), op(O.OP_GETFH))[-1].body.object
    pseudo = c.getattr(root, [nfs4.FATTR4_FSID])
    # Crossing into the export crosses a file-system boundary.
    assert pseudo[nfs4.FATTR4_FSID] != attrs[nfs4.FATTR4_FSID]


def test_write_read_close_round_trip(ns, nfspd):
    d = nfspd()
    c = mounted(ns)
    dirfh = c.lookup_path(d.export)
    sid, fh = c.open(dirfh, b"hello")
    w = c.write(fh, sid, 0, b"hello, v4")
    assert w.count == 9
    r = c.read(fh, sid, 0, 100)
    assert r.data == b"hello, v4" and r.eof
    c.close_file(fh, sid)
    with open(os.path.join(d.export, "hello"), "rb") as f:
        assert len(f.read()) < 200  # a metafile, not the data


def _export_dir(c, d):
    return c.lookup_path(d.export)


def test_a_retransmitted_request_is_answered_from_the_slot_not_run_again(ns, nfspd):
    d = nfspd()
    c = mounted(ns)
    dirfh = _export_dir(c, d)
    mkdir = op(O.OP_CREATE, nfs4.CREATE4args(nfs4.createtype4(nfs4.nfs_ftype4.NF4DIR), b"once",
                                             nfs4.encode_attrs({})))
    seq = c.sequence_op(cachethis=True)
    args = nfs4.encode_compound(nfs4.COMPOUND4args(b"", 1, [seq, op(O.OP_PUTFH,
                                                   nfs4.PUTFH4args(dirfh)), mkdir]))
    first = c.compound_raw(args)
    again = c.compound_raw(args)
    assert nfs4.decode_compound_res(first).status == nfsstat4.NFS4_OK
    assert again == first  # not EXIST: the cached reply
    assert os.path.isdir(os.path.join(d.export, "once"))
    # The next sequence id goes on as usual; one skipped is misordered.
    c.ok(op(O.OP_PUTROOTFH))
    c.seqid += 1
    assert c.seq(op(O.OP_PUTROOTFH)).status == nfsstat4.NFS4ERR_SEQ_MISORDERED


def test_a_retransmitted_write_is_answered_from_the_slot(ns, nfspd):
    """WRITE waits on the data path (an operation that finishes later): its
    reply is cached in the slot all the same, so the retry gets the same bytes."""
    d = nfspd()
    c = mounted(ns)
    sid, fh = c.open(_export_dir(c, d), b"w")
    seq = c.sequence_op(cachethis=True)
    write = op(O.OP_WRITE, nfs4.WRITE4args(sid, 0, nfs4.stable_how4.FILE_SYNC4, b"once"))
    args = nfs4.encode_compound(nfs4.COMPOUND4args(b"", 1, [seq, op(O.OP_PUTFH,
                                                   nfs4.PUTFH4args(fh)), write]))
    first = c.compound_raw(args)
    again = c.compound_raw(args)
    assert nfs4.decode_compound_res(first).status == nfsstat4.NFS4_OK
    assert again == first


def test_sequence_on_a_destroyed_session_is_badsession(ns, nfspd):
    nfspd()
    c = mounted(ns)
    sid = c.sessionid
    res = c.compound([op(O.OP_DESTROY_SESSION, nfs4.DESTROY_SESSION4args(sid))])
    assert res.status == nfsstat4.NFS4_OK
    assert c.seq(op(O.OP_PUTROOTFH)).status == nfsstat4.NFS4ERR_BADSESSION


def test_minor_version_0_is_a_mismatch_and_4_1_4_2_are_served(ns, nfspd):
    nfspd()
    c = mounted(ns)
    res = c.compound([op(O.OP_PUTROOTFH)], minorversion=0)
    assert res.status == nfsstat4.NFS4ERR_MINOR_VERS_MISMATCH and res.resarray == []
    assert c.compound([op(O.OP_PUTROOTFH)], minorversion=3).status == \
        nfsstat4.NFS4ERR_MINOR_VERS_MISMATCH
    c.seqid += 1
    res = c.compound([c.sequence_op(seqid=c.seqid), op(O.OP_PUTROOTFH)], minorversion=2)
    assert res.status == nfsstat4.NFS4_OK


def test_session_rules_before_any_operation_runs(ns, nfspd):
    d = nfspd()
    c = mounted(ns)
    alone = c.compound([op(O.OP_PUTROOTFH), op(O.OP_GETFH)])
    assert alone.status == nfsstat4.NFS4ERR_OP_NOT_IN_SESSION and len(alone.resarray) == 1
    late = c.compound([c.sequence_op(), op(O.OP_PUTROOTFH), c.sequence_op()])
    assert late.status == nfsstat4.NFS4ERR_SEQUENCE_POS
    c.seqid -= 2  # neither SEQUENCE ran
    eid = nfs4.EXCHANGE_ID4args(nfs4.client_owner4(c.verifier, c.owner), 0,
                                nfs4.state_protect4_a(nfs4.state_protect_how4.SP4_NONE), [])
    two = c.compound([op(O.OP_EXCHANGE_ID, eid), op(O.OP_PUTROOTFH)])
    assert two.status == nfsstat4.NFS4ERR_NOT_ONLY_OP
    assert c.lookup_path(d.export)  # the session still works


def _raw_compound(minor, count, ops_bytes):
    return b"\0\0\0\0" + minor.to_bytes(4, "big") + count.to_bytes(4, "big") + ops_bytes


def test_malformed_and_absurd_compounds_get_clear_errors_and_the_server_goes_on(ns, nfspd):
    d = nfspd()
    c = mounted(ns)
    # More operations claimed than bytes sent: the arguments do not decode.
    reply = rpc.decode_reply(c.call_raw(_raw_compound(1, 1_000_000_000, b"\0\0\0\x18")))
    assert reply.stat == rpc.accept_stat.GARBAGE_ARGS
    # More operations than any request may carry.
    many = _raw_compound(1, 500, (int(O.OP_PUTROOTFH).to_bytes(4, "big")) * 500)
    res = nfs4.decode_compound_res(c.compound_raw(many))
    assert res.status == nfsstat4.NFS4ERR_TOO_MANY_OPS
    # An operation whose arguments are cut short: BADXDR there.
    seq = nfs4.encode(nfs4.nfs_argop4, c.sequence_op())
    cut = _raw_compound(1, 2, seq + int(O.OP_PUTFH).to_bytes(4, "big") + b"\0\0\0\x40ab")
    res = nfs4.decode_compound_res(c.compound_raw(cut))
    assert res.status == nfsstat4.NFS4ERR_BADXDR and len(res.resarray) == 2
    # An operation number that does not exist.
    seq = nfs4.encode(nfs4.nfs_argop4, c.sequence_op())
    res = nfs4.decode_compound_res(c.compound_raw(_raw_compound(1, 2, seq + b"\0\0\x99\x99")))
    assert res.status == nfsstat4.NFS4ERR_OP_ILLEGAL
    assert c.lookup_path(d.export)


def test_forged_and_stale_stateids_are_refused(ns, nfspd):
    d = nfspd()
    c = mounted(ns)
    dirfh = _export_dir(c, d)
    sid, fh = c.open(dirfh, b"f")
    # The same boot's epoch and index, a MAC that does not match.
    forged = nfs4.stateid4(sid.seqid, sid.other[:8] + bytes(b ^ 0x5A for b in sid.other[8:]))
    with pytest.raises(Nfs4Failed) as e:
        c.read(fh, forged, 0, 10)
    assert e.value.status == nfsstat4.NFS4ERR_BAD_STATEID
    c.rpc.close()
    d.restart()
    c = mounted(ns)
    with pytest.raises(Nfs4Failed) as e:
        c.read(fh, sid, 0, 10)
    assert e.value.status in (nfsstat4.NFS4ERR_STALE_STATEID, nfsstat4.NFS4ERR_GRACE)


def test_getattr_gives_the_mandatory_attributes_and_those_linux_asks_for(ns, nfspd):
    d = nfspd()
    c = mounted(ns)
    sid, fh = c.open(_export_dir(c, d), b"attrs", mode=0o640)
    c.write(fh, sid, 0, b"x" * 5000)
    wanted = [nfs4.FATTR4_SUPPORTED_ATTRS, nfs4.FATTR4_TYPE, nfs4.FATTR4_FH_EXPIRE_TYPE,
              nfs4.FATTR4_CHANGE, nfs4.FATTR4_SIZE, nfs4.FATTR4_LINK_SUPPORT,
              nfs4.FATTR4_SYMLINK_SUPPORT, nfs4.FATTR4_NAMED_ATTR, nfs4.FATTR4_FSID,
              nfs4.FATTR4_UNIQUE_HANDLES, nfs4.FATTR4_LEASE_TIME, nfs4.FATTR4_RDATTR_ERROR,
              nfs4.FATTR4_FILEHANDLE, nfs4.FATTR4_MODE, nfs4.FATTR4_NUMLINKS, nfs4.FATTR4_OWNER,
              nfs4.FATTR4_OWNER_GROUP, nfs4.FATTR4_SPACE_USED, nfs4.FATTR4_TIME_MODIFY,
              nfs4.FATTR4_FILEID, nfs4.FATTR4_MOUNTED_ON_FILEID, nfs4.FATTR4_MAXREAD,
              nfs4.FATTR4_SPACE_TOTAL, nfs4.FATTR4_ACL]
    a = c.getattr(fh, wanted)
    assert nfs4.FATTR4_ACL not in a  # not supported: left out, not an error
    st = os.stat(os.path.join(d.export, "attrs"))
    assert a[nfs4.FATTR4_SIZE] == 5000
    assert a[nfs4.FATTR4_MODE] == 0o640
    assert a[nfs4.FATTR4_OWNER] == b"0" and a[nfs4.FATTR4_OWNER_GROUP] == b"0"
    assert a[nfs4.FATTR4_FILEID] == a[nfs4.FATTR4_MOUNTED_ON_FILEID] == st.st_ino
    assert a[nfs4.FATTR4_FILEHANDLE] == fh
    assert a[nfs4.FATTR4_LEASE_TIME] == 90
    assert a[nfs4.FATTR4_TIME_MODIFY].seconds == int(st.st_mtime)
    supported = set(nfs4.bitmap4_to_attrs(a[nfs4.FATTR4_SUPPORTED_ATTRS]))
    assert set(wanted) - {nfs4.FATTR4_ACL} <= supported
    before = a[nfs4.FATTR4_CHANGE]
    c.write(fh, sid, 0, b"y")
    assert c.getattr(fh, [nfs4.FATTR4_CHANGE])[nfs4.FATTR4_CHANGE] != before


def test_readdir_lists_names_with_attributes_and_no_dot_entries(ns, nfspd):
    d = nfspd()
    for i in range(300):
        os.mkdir(os.path.join(d.export, f"file{i:03}"))
    c = mounted(ns)
    # Small pages, so the listing takes several READDIRs.
    names = c.readdir(_export_dir(c, d), [nfs4.FATTR4_TYPE, nfs4.FATTR4_FILEID], maxcount=4096)
    assert sorted(n for n, _ in names) == [f"file{i:03}".encode() for i in range(300)]
    assert all(a[nfs4.FATTR4_TYPE] == nfs4.nfs_ftype4.NF4DIR for _, a in names)
    root = c.ok(op(O.OP_PUTROOTFH), op(O.OP_GETFH))[-1].body.object
    top = d.export.strip("/").split("/")[0].encode()
    assert [n for n, _ in c.readdir(root, [nfs4.FATTR4_TYPE])] == [top]


def test_a_file_that_is_not_a_metafile_gets_an_rdattr_error_and_the_listing_goes_on(ns, nfspd):
    # A file put in the export by hand: as Linux's client asks rdattr_error
    # with every READDIR, that entry carries the error and the others their
    # attributes, every time (RFC 8881 18.23.4), not an IO for the directory.
    d = nfspd()
    os.mkdir(os.path.join(d.export, "dir"))
    with open(os.path.join(d.export, "foreign"), "wb"):
        pass
    c = mounted(ns)
    for _ in range(2):
        names = dict(c.readdir(_export_dir(c, d), [nfs4.FATTR4_TYPE, nfs4.FATTR4_RDATTR_ERROR]))
        assert names[b"foreign"] == {nfs4.FATTR4_RDATTR_ERROR: nfsstat4.NFS4ERR_IO}
        assert names[b"dir"][nfs4.FATTR4_TYPE] == nfs4.nfs_ftype4.NF4DIR


def test_namespace_operations(ns, nfspd):
    d = nfspd()
    c = mounted(ns)
    dirfh = _export_dir(c, d)
    put = op(O.OP_PUTFH, nfs4.PUTFH4args(dirfh))
    none = nfs4.encode_attrs({})
    c.ok(put, op(O.OP_CREATE, nfs4.CREATE4args(nfs4.createtype4(nfs4.nfs_ftype4.NF4DIR),
                                               b"sub", nfs4.encode_attrs({nfs4.FATTR4_MODE:
                                                                          0o700}))))
    assert os.stat(os.path.join(d.export, "sub")).st_mode & 0o777 == 0o700
    c.ok(put, op(O.OP_CREATE, nfs4.CREATE4args(nfs4.createtype4(nfs4.nfs_ftype4.NF4LNK,
                                                                b"sub/target"), b"ln", none)))
    link = c.ok(put, op(O.OP_LOOKUP, nfs4.LOOKUP4args(b"ln")), op(O.OP_READLINK))
    assert link[-1].body.link == b"sub/target"
    sid, fh = c.open(dirfh, b"a")
    c.close_file(fh, sid)
    # LINK: saved = the file, current = the directory.
    c.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)), op(O.OP_SAVEFH), put,
         op(O.OP_LINK, nfs4.LINK4args(b"b")))
    assert os.stat(os.path.join(d.export, "b")).st_nlink == 2
    # RENAME: saved = from, current = to.
    c.ok(put, op(O.OP_SAVEFH), op(O.OP_LOOKUP, nfs4.LOOKUP4args(b"sub")),
         op(O.OP_RENAME, nfs4.RENAME4args(b"b", b"moved")))
    assert os.path.exists(os.path.join(d.export, "sub", "moved"))
    back = c.ok(put, op(O.OP_LOOKUP, nfs4.LOOKUP4args(b"sub")), op(O.OP_LOOKUPP), op(O.OP_GETFH))
    assert back[-1].body.object == dirfh
    c.ok(put, op(O.OP_REMOVE, nfs4.REMOVE4args(b"a")))
    c.ok(put, op(O.OP_REMOVE, nfs4.REMOVE4args(b"ln")))
    res = c.seq(put, op(O.OP_REMOVE, nfs4.REMOVE4args(b"sub")))
    assert res.status == nfsstat4.NFS4ERR_NOTEMPTY
    assert sorted(os.listdir(d.export)) == ["sub"]
    # From the export root, LOOKUPP climbs into the pseudo file system.
    up = c.ok(put, op(O.OP_LOOKUPP), op(O.OP_GETATTR, nfs4.GETATTR4args(
        nfs4.attrs_to_bitmap4([nfs4.FATTR4_TYPE]))))
    assert nfs4.decode_attrs(up[-1].body.obj_attributes)[nfs4.FATTR4_TYPE] == \
        nfs4.nfs_ftype4.NF4DIR


def _lock(c, fh, sid, owner, offset=0, length=100, locktype=nfs4.nfs_lock_type4.WRITE_LT):
    locker = nfs4.locker4(True, nfs4.open_to_lock_owner4(0, sid, 0,
                                                         nfs4.lock_owner4(c.clientid, owner)))
    return c.seq(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)), op(O.OP_LOCK, nfs4.LOCK4args(
        locktype, False, offset, length, locker)))


def test_locks_conflict_between_two_clients(ns, nfspd):
    d = nfspd()
    a, b = mounted(ns), mounted(ns)
    sa, fh = a.open(_export_dir(a, d), b"locked")
    sb, _ = b.open(_export_dir(b, d), b"locked")
    got = _lock(a, fh, sa, b"lo-a")
    assert got.status == nfsstat4.NFS4_OK
    lsid = got.resarray[-1].body.body.lock_stateid
    refused = _lock(b, fh, sb, b"lo-b", offset=50, length=10)
    assert refused.status == nfsstat4.NFS4ERR_DENIED
    denied = refused.resarray[-1].body.body
    assert (denied.offset, denied.length, denied.owner.owner) == (0, 100, b"lo-a")
    test = b.seq(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)), op(O.OP_LOCKT, nfs4.LOCKT4args(
        nfs4.nfs_lock_type4.READ_LT, 0, 1, nfs4.lock_owner4(b.clientid, b"lo-b"))))
    assert test.status == nfsstat4.NFS4ERR_DENIED
    a.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)), op(O.OP_LOCKU, nfs4.LOCKU4args(
        nfs4.nfs_lock_type4.WRITE_LT, 0, lsid, 0, 100)))
    assert _lock(b, fh, sb, b"lo-b", offset=50, length=10).status == nfsstat4.NFS4_OK


def test_a_silent_client_loses_its_locks_after_the_lease(ns, nfspd):
    import time
    d = nfspd(extra_args=["--v4-lease", "1"])
    a, b = mounted(ns), mounted(ns)
    sa, fh = a.open(_export_dir(a, d), b"leased")
    sb, _ = b.open(_export_dir(b, d), b"leased")
    assert _lock(a, fh, sa, b"lo-a").status == nfsstat4.NFS4_OK
    assert _lock(b, fh, sb, b"lo-b").status == nfsstat4.NFS4ERR_DENIED
    for _ in range(6):  # a sends nothing for more than its lease; b renews
        time.sleep(0.4)
        b.ok(op(O.OP_PUTROOTFH))
    assert _lock(b, fh, sb, b"lo-b").status == nfsstat4.NFS4_OK
    assert a.seq(op(O.OP_PUTROOTFH)).status in (nfsstat4.NFS4ERR_BADSESSION,
                                                nfsstat4.NFS4ERR_EXPIRED)


def test_share_reservations_deny_a_second_opener(ns, nfspd):
    d = nfspd()
    a, b = mounted(ns), mounted(ns)
    a.open(_export_dir(a, d), b"shared", access=3, deny=2)  # deny writers
    with pytest.raises(Nfs4Failed) as e:
        b.open(_export_dir(b, d), b"shared", access=2, create=False)
    assert e.value.status == nfsstat4.NFS4ERR_SHARE_DENIED
    b.open(_export_dir(b, d), b"shared", access=1, create=False)


def test_another_principal_cannot_take_over_a_client_owner(ns, nfspd):
    nfspd()
    a = mounted(ns)
    squatter = client(ns, uid=1000, gid=1000, owner=a.owner)
    with pytest.raises(Nfs4Failed) as e:
        squatter.exchange_id()
    assert e.value.status == nfsstat4.NFS4ERR_CLID_INUSE
    assert a.seq(op(O.OP_PUTROOTFH)).status == nfsstat4.NFS4_OK


def test_the_pseudo_root_shows_only_exports_this_client_may_mount(ns, nfspd, tmp_path):
    shown, hidden, ro = (str(tmp_path / n) for n in ("shown", "hidden", "ro"))
    for p in (shown, hidden, ro):
        os.makedirs(p)
    d = nfspd(exports_text=f"{shown} 127.0.0.0/8(rw,no_root_squash,insecure)\n"
                           f"{hidden} 10.9.9.9(rw,insecure)\n"
                           f"{ro} 127.0.0.0/8(ro,insecure)\n")
    c = mounted(ns)
    c.lookup_path(shown)
    with pytest.raises(Nfs4Failed) as e:
        c.lookup_path(hidden)
    assert e.value.status == nfsstat4.NFS4ERR_NOENT
    parent = c.lookup_path(str(tmp_path))
    assert sorted(n for n, _ in c.readdir(parent)) == [b"ro", b"shown"]
    with pytest.raises(Nfs4Failed) as e:
        c.open(c.lookup_path(ro), b"new")
    assert e.value.status == nfsstat4.NFS4ERR_ROFS
    del d


def test_nfs4_over_udp_is_refused_with_the_v2_v3_range(ns, nfspd):
    d = nfspd()
    with d.client("udp") as u:
        r = u.call(100003, 4, 0)
    assert r.stat == rpc.accept_stat.PROG_MISMATCH and r.mismatch == (2, 3)
    with d.client("tcp") as t:
        assert t.call(100003, 4, 0).stat == rpc.accept_stat.SUCCESS
        r = t.call(100003, 5, 0)
    assert r.stat == rpc.accept_stat.PROG_MISMATCH and r.mismatch == (2, 4)


def _reclaim_open(c, fh, owner=b"o1"):
    args = nfs4.OPEN4args(0, 3, 0, nfs4.open_owner4(c.clientid, owner),
                          nfs4.openflag4(nfs4.opentype4.OPEN4_NOCREATE),
                          nfs4.open_claim4(nfs4.open_claim_type4.CLAIM_PREVIOUS,
                                           nfs4.open_delegation_type4.OPEN_DELEGATE_NONE))
    return c.seq(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)), op(O.OP_OPEN, args))


def test_after_a_restart_opens_and_locks_are_reclaimed_before_anyone_else_gets_them(ns, nfspd):
    d = nfspd()
    a = mounted(ns)
    sid, fh = a.open(_export_dir(a, d), b"kept")
    assert _lock(a, fh, sid, b"lo-a").status == nfsstat4.NFS4_OK
    a.rpc.close()
    d.restart()
    b = mounted(ns)
    # A newcomer waits for the grace period: nothing new while a reclaims.
    with pytest.raises(Nfs4Failed) as e:
        b.open(_export_dir(b, d), b"kept", create=False)
    assert e.value.status == nfsstat4.NFS4ERR_GRACE
    # a comes back with the same owner and verifier: a new client id, old state reclaimable.
    again = client(ns, owner=a.owner)
    again.verifier = a.verifier
    again.exchange_id()
    again.create_session()
    res = _reclaim_open(again, fh)
    assert res.status == nfsstat4.NFS4_OK
    osid = res.resarray[-1].body.body.stateid
    locker = nfs4.locker4(True, nfs4.open_to_lock_owner4(
        0, osid, 0, nfs4.lock_owner4(again.clientid, b"lo-a")))
    again.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)), op(O.OP_LOCK, nfs4.LOCK4args(
        nfs4.nfs_lock_type4.WRITE_LT, True, 0, 100, locker)))
    again.ok(op(O.OP_RECLAIM_COMPLETE, nfs4.RECLAIM_COMPLETE4args(False)))
    # Every recorded client is done: grace is over, and the lock is a's again.
    sb, _ = b.open(_export_dir(b, d), b"kept", create=False)
    assert _lock(b, fh, sb, b"lo-b").status == nfsstat4.NFS4ERR_DENIED


ALL_ATTRS = [0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF]


def test_what_a_linux_mount_asks_is_answered_for_every_attribute(ns, nfspd):
    """Linux asks bitmaps with attributes nobody supports: those are left out,
    never an error, on the pseudo root, an export root, a file and in READDIR."""
    d = nfspd()
    c = mounted(ns)
    flavors = c.ok(op(O.OP_PUTROOTFH), op(O.OP_SECINFO_NO_NAME,
                                          nfs4.secinfo_style4.SECINFO_STYLE4_CURRENT_FH))
    assert [f.disc for f in flavors[-1].body] == [1]  # AUTH_SYS
    everything = op(O.OP_GETATTR, nfs4.GETATTR4args(ALL_ATTRS))
    root = c.ok(op(O.OP_PUTROOTFH), op(O.OP_GETFH), everything)
    _, fh = c.open(c.lookup_path(d.export), b"f")
    for where in (root[1].body.object, c.lookup_path(d.export), fh):
        res = c.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(where)), everything,
                   op(O.OP_ACCESS, nfs4.ACCESS4args(0x3F)))
        attrs = nfs4.decode_attrs(res[1].body.obj_attributes)
        assert nfs4.FATTR4_TYPE in attrs and nfs4.FATTR4_FILEHANDLE in attrs
        assert res[2].body.supported == 0x3F
    for dirfh in (root[1].body.object, c.lookup_path(d.export)):
        assert c.readdir(dirfh, nfs4.bitmap4_to_attrs(ALL_ATTRS)) is not None
    export_root = c.getattr(c.lookup_path(d.export), [nfs4.FATTR4_MOUNTED_ON_FILEID,
                                                      nfs4.FATTR4_FILEID])
    # An export root is mounted on the pseudo directory the client saw.
    assert export_root[nfs4.FATTR4_MOUNTED_ON_FILEID] != export_root[nfs4.FATTR4_FILEID]


def test_what_the_pseudo_root_refuses(ns, nfspd):
    d = nfspd()
    c = mounted(ns)
    put = op(O.OP_PUTROOTFH)
    mkdir = op(O.OP_CREATE, nfs4.CREATE4args(nfs4.createtype4(nfs4.nfs_ftype4.NF4DIR), b"x",
                                             nfs4.encode_attrs({})))
    assert c.seq(put, mkdir).status == nfsstat4.NFS4ERR_ROFS
    assert c.seq(put, op(O.OP_READLINK)).status == nfsstat4.NFS4ERR_INVAL
    assert c.seq(put, op(O.OP_LOOKUP, nfs4.LOOKUP4args(b"nope"))).status == nfsstat4.NFS4ERR_NOENT
    assert c.seq(put, op(O.OP_LOOKUPP)).status == nfsstat4.NFS4ERR_NOENT
    assert c.seq(op(O.OP_GETFH)).status == nfsstat4.NFS4ERR_NOFILEHANDLE
    forged = bytes([0xF4]) + bytes(15)
    assert c.seq(op(O.OP_PUTFH, nfs4.PUTFH4args(forged))).status == nfsstat4.NFS4ERR_STALE
    junk = c.seq(op(O.OP_PUTFH, nfs4.PUTFH4args(b"\x01" + bytes(30))))
    assert junk.status == nfsstat4.NFS4ERR_BADHANDLE
    assert c.lookup_path(d.export)


def _open_args(c, name, how, access=3, owner=b"o1"):
    return nfs4.OPEN4args(0, access, 0, nfs4.open_owner4(c.clientid, owner),
                          nfs4.openflag4(nfs4.opentype4.OPEN4_CREATE, how),
                          nfs4.open_claim4(nfs4.open_claim_type4.CLAIM_NULL, name))


def test_create_modes_guarded_and_exclusive_with_its_verifier(ns, nfspd):
    d = nfspd()
    c = mounted(ns)
    put = op(O.OP_PUTFH, nfs4.PUTFH4args(_export_dir(c, d)))
    guarded = nfs4.createhow4(nfs4.createmode4.GUARDED4, nfs4.encode_attrs({}))
    assert c.seq(put, op(O.OP_OPEN, _open_args(c, b"g", guarded))).status == nfsstat4.NFS4_OK
    assert c.seq(put, op(O.OP_OPEN, _open_args(c, b"g", guarded))).status == \
        nfsstat4.NFS4ERR_EXIST

    def excl(verf):
        return nfs4.createhow4(nfs4.createmode4.EXCLUSIVE4_1, nfs4.creatverfattr(
            verf, nfs4.encode_attrs({nfs4.FATTR4_MODE: 0o600})))
    first = c.seq(put, op(O.OP_OPEN, _open_args(c, b"x", excl(b"verf0001"))), op(O.OP_GETFH))
    assert first.status == nfsstat4.NFS4_OK
    assert nfs4.bitmap4_to_attrs(first.resarray[2].body.body.attrset) == [nfs4.FATTR4_MODE]
    assert os.stat(os.path.join(d.export, "x")).st_mode & 0o777 == 0o600
    # The same verifier again (a client's retry after a lost reply) opens it.
    again = c.seq(put, op(O.OP_OPEN, _open_args(c, b"x", excl(b"verf0001"))), op(O.OP_GETFH))
    assert again.status == nfsstat4.NFS4_OK
    assert again.resarray[-1].body.body.object == first.resarray[-1].body.body.object
    # Not made this time: no attributes set, the directory unchanged.
    body = again.resarray[2].body.body
    assert nfs4.bitmap4_to_attrs(body.attrset) == []
    assert body.cinfo.before == body.cinfo.after
    other = c.seq(put, op(O.OP_OPEN, _open_args(c, b"x", excl(b"verf0002"))))
    assert other.status == nfsstat4.NFS4ERR_EXIST


def test_stateid_operations_setattr_commit_and_seek(ns, nfspd):
    d = nfspd()
    c = mounted(ns, minorversion=2)  # SEEK is NFSv4.2's
    c.open(_export_dir(c, d), b"s", access=1)
    sid, fh = c.open(_export_dir(c, d), b"s", access=3, create=False)  # the same open, upgraded
    put = op(O.OP_PUTFH, nfs4.PUTFH4args(fh))
    c.write(fh, sid, 0, b"z" * 10000, stable=0)
    assert len(c.ok(put, op(O.OP_COMMIT, nfs4.COMMIT4args(0, 0)))[-1].body.writeverf) == 8
    seek = c.ok(put, op(O.OP_SEEK, nfs4.SEEK4args(sid, 10, nfs4.data_content4.NFS4_CONTENT_HOLE)))
    assert (seek[-1].body.sr_eof, seek[-1].body.sr_offset) == (True, 10000)
    past = c.seq(put, op(O.OP_SEEK, nfs4.SEEK4args(sid, 10000, nfs4.data_content4.NFS4_CONTENT_DATA)))
    assert past.status == nfsstat4.NFS4ERR_NXIO
    size = nfs4.encode_attrs({nfs4.FATTR4_SIZE: 3, nfs4.FATTR4_MODE: 0o604})
    res = c.ok(put, op(O.OP_SETATTR, nfs4.SETATTR4args(sid, size)))
    assert sorted(nfs4.bitmap4_to_attrs(res[-1].attrsset)) == [nfs4.FATTR4_SIZE, nfs4.FATTR4_MODE]
    assert c.getattr(fh, [nfs4.FATTR4_SIZE])[nfs4.FATTR4_SIZE] == 3
    # Only a write-open may change the size: downgraded back to read, OPENMODE.
    down = c.ok(put, op(O.OP_OPEN_DOWNGRADE, nfs4.OPEN_DOWNGRADE4args(sid, 0, 1, 0)))
    rsid = down[-1].body.open_stateid
    res = c.seq(put, op(O.OP_SETATTR, nfs4.SETATTR4args(rsid, size)))
    assert res.status == nfsstat4.NFS4ERR_OPENMODE
    bad = nfs4.stateid4(1, b"\x07" * 12)
    tested = c.ok(op(O.OP_TEST_STATEID, nfs4.TEST_STATEID4args([rsid, bad])))[-1].body
    assert tested.tsr_status_codes[0] == nfsstat4.NFS4_OK
    assert tested.tsr_status_codes[1] != nfsstat4.NFS4_OK
    c.close_file(fh, rsid)
    # The current stateid: OPEN then WRITE with (1, zeros) in one request.
    how = nfs4.createhow4(nfs4.createmode4.UNCHECKED4, nfs4.encode_attrs({}))
    current = nfs4.stateid4(1, bytes(12))
    res = c.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(_export_dir(c, d))),
               op(O.OP_OPEN, _open_args(c, b"cur", how)),
               op(O.OP_WRITE, nfs4.WRITE4args(current, 0, nfs4.stable_how4.FILE_SYNC4, b"abc")),
               op(O.OP_CLOSE, nfs4.CLOSE4args(0, current)))
    assert res[2].body.count == 3


def test_bind_conn_and_destroy_clientid(ns, nfspd):
    nfspd()
    c = mounted(ns)
    other = client(ns)  # a second connection binds to c's session
    other.sessionid, other.clientid = c.sessionid, c.clientid
    bound = other.compound([op(O.OP_BIND_CONN_TO_SESSION, nfs4.BIND_CONN_TO_SESSION4args(
        c.sessionid, nfs4.channel_dir_from_client4.CDFC4_FORE_OR_BOTH, False))])
    assert bound.status == nfsstat4.NFS4_OK
    assert bound.resarray[0].body.body.bctsr_dir == nfs4.channel_dir_from_server4.CDFS4_FORE
    busy = c.compound([op(O.OP_DESTROY_CLIENTID, nfs4.DESTROY_CLIENTID4args(c.clientid))])
    assert busy.status == nfsstat4.NFS4ERR_CLIENTID_BUSY  # its session is still there
    c.compound([op(O.OP_DESTROY_SESSION, nfs4.DESTROY_SESSION4args(c.sessionid))])
    gone = c.compound([op(O.OP_DESTROY_CLIENTID, nfs4.DESTROY_CLIENTID4args(c.clientid))])
    assert gone.status == nfsstat4.NFS4_OK


def test_a_file_has_the_same_handle_over_nfsv3_and_nfsv4(ns, nfspd):
    from tools.dev import nfsclient
    d = nfspd()
    c = mounted(ns)
    _, fh = c.open(_export_dir(c, d), b"same")
    v3, root = ns.inside(nfsclient.connect, "127.0.0.1", d.export, vers=3, transport="tcp")
    assert root == _export_dir(c, d)
    assert v3.lookup(root, b"same") == fh


def test_owners_as_names_with_an_idmapping_domain(ns, nfspd):
    d = nfspd(extra_args=["--v4-domain", "example.org"])
    c = mounted(ns)
    _, fh = c.open(_export_dir(c, d), b"owned")
    a = c.getattr(fh, [nfs4.FATTR4_OWNER, nfs4.FATTR4_OWNER_GROUP])
    assert a[nfs4.FATTR4_OWNER] == b"root@example.org"
    put = op(O.OP_PUTFH, nfs4.PUTFH4args(fh))
    anon = nfs4.stateid4(0, bytes(12))
    for owner in (b"root@example.org", b"0"):
        c.ok(put, op(O.OP_SETATTR, nfs4.SETATTR4args(anon, nfs4.encode_attrs(
            {nfs4.FATTR4_OWNER: owner}))))
    res = c.seq(put, op(O.OP_SETATTR, nfs4.SETATTR4args(anon, nfs4.encode_attrs(
        {nfs4.FATTR4_OWNER: b"root@elsewhere.example"}))))
    assert res.status == nfsstat4.NFS4ERR_BADOWNER


def test_the_session_bounds_operations_and_reply_sizes(ns, nfspd):
    d = nfspd()
    a = mounted(ns)
    sid, fh = a.open(_export_dir(a, d), b"big")
    a.write(fh, sid, 0, b"b" * 10000)
    a.close_file(fh, sid)
    c = client(ns)
    c.exchange_id()
    c.create_session(maxresponsesize=4096, cached=400, maxoperations=4)
    put = op(O.OP_PUTFH, nfs4.PUTFH4args(fh))
    anonymous = nfs4.stateid4(0, bytes(12))
    five = c.seq(put, op(O.OP_GETFH), op(O.OP_GETFH), op(O.OP_GETFH))
    assert five.status == nfsstat4.NFS4ERR_TOO_MANY_OPS and len(five.resarray) == 5
    big = c.seq(put, op(O.OP_READ, nfs4.READ4args(anonymous, 0, 10000)), cachethis=False)
    assert big.status == nfsstat4.NFS4ERR_REP_TOO_BIG
    everything = op(O.OP_GETATTR, nfs4.GETATTR4args(ALL_ATTRS))
    cached = c.seq(put, everything, cachethis=True)
    assert cached.status == nfsstat4.NFS4ERR_REP_TOO_BIG_TO_CACHE
    assert c.seq(put, everything, cachethis=False).status == nfsstat4.NFS4_OK


def _datafiles(d):
    """Data files in the metaserver's local store (named SEED.INO in hex)."""
    return sum(1 for _, _, files in os.walk(os.path.join(d.state, "data"))
               for f in files if len(f) == 33 and f[16] == ".")


def test_a_file_removed_while_open_stays_readable_until_closed(ns, nfspd):
    d = nfspd()
    c = mounted(ns)
    dirfh = _export_dir(c, d)
    put = op(O.OP_PUTFH, nfs4.PUTFH4args(dirfh))
    how = nfs4.createhow4(nfs4.createmode4.UNCHECKED4, nfs4.encode_attrs({}))
    res = c.ok(put, op(O.OP_OPEN, _open_args(c, b"doomed", how)), op(O.OP_GETFH))
    assert res[1].body.rflags & 0x8  # OPEN4_RESULT_PRESERVE_UNLINKED: no silly rename needed
    sid, fh = res[1].body.stateid, res[2].body.object
    c.write(fh, sid, 0, b"still here")
    other = mounted(ns)
    other.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(dirfh)), op(O.OP_REMOVE, nfs4.REMOVE4args(b"doomed")))
    assert os.listdir(d.export) == []
    assert _datafiles(d) == 1
    assert c.read(fh, sid, 0, 100).data == b"still here"
    c.write(fh, sid, 10, b", written after")
    assert c.read(fh, sid, 0, 100).data == b"still here, written after"
    c.close_file(fh, sid)
    gone = c.seq(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)), op(O.OP_GETATTR, nfs4.GETATTR4args([1])))
    assert gone.status == nfsstat4.NFS4ERR_STALE
    # The data goes with the last close (purged in the background).
    wait_until(lambda: _datafiles(d) == 0, 10, what="the purge of the removed file's data")
    # Not held: a file nobody has open goes at once.
    sid2, fh2 = c.open(dirfh, b"plain")
    c.close_file(fh2, sid2)
    c.ok(put, op(O.OP_REMOVE, nfs4.REMOVE4args(b"plain")))
    assert c.seq(op(O.OP_PUTFH, nfs4.PUTFH4args(fh2))).status == nfsstat4.NFS4ERR_STALE


def test_a_removed_file_held_open_goes_when_its_client_expires(ns, nfspd):
    d = nfspd(extra_args=["--v4-lease", "1"])
    c = mounted(ns)
    dirfh = _export_dir(c, d)
    sid, fh = c.open(dirfh, b"orphan")
    c.write(fh, sid, 0, b"x" * 100)
    c.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(dirfh)), op(O.OP_REMOVE, nfs4.REMOVE4args(b"orphan")))
    assert _datafiles(d) == 1
    # c falls silent; once its lease is over, the lease timer drops its state
    # and with it the last open of the removed file.
    wait_until(lambda: _datafiles(d) == 0, 15, what="the purge after the lease expired")


def test_change_moves_with_the_size_even_within_one_clock_tick():
    from nfspd.nfs4attrs import change_of
    t = 1_700_000_000_000_000_000
    assert change_of(10, t, t) != change_of(11, t, t)
    assert change_of(10, t, t) != change_of(10, t, t + 4_000_000)
    assert 0 <= change_of(1 << 63, t, t) < 1 << 64


def test_changes_answered_survive_a_kill_9_of_nfspd(ns, nfspd):
    # A sync export answers a COMPOUND once its changes are durable (the
    # group commit, issue 15); a kill -9 of the process loses none of them.
    d = nfspd()
    c = mounted(ns)
    dirfh = _export_dir(c, d)
    for name in (b"kept", b"moved", b"gone"):
        sid, fh = c.open(dirfh, name)
        c.close_file(fh, sid)
    put = op(O.OP_PUTFH, nfs4.PUTFH4args(dirfh))
    c.ok(put, op(O.OP_SAVEFH), op(O.OP_RENAME, nfs4.RENAME4args(b"moved", b"renamed")))
    c.ok(put, op(O.OP_REMOVE, nfs4.REMOVE4args(b"gone")))
    os.kill(d.pid, signal.SIGKILL)
    d.restart()
    assert sorted(os.listdir(d.export)) == ["kept", "renamed"]


LINUX_READDIR = [nfs4.FATTR4_RDATTR_ERROR, nfs4.FATTR4_MOUNTED_ON_FILEID, nfs4.FATTR4_TYPE,
                 nfs4.FATTR4_CHANGE, nfs4.FATTR4_SIZE, nfs4.FATTR4_FSID, nfs4.FATTR4_FILEHANDLE,
                 nfs4.FATTR4_FILEID, nfs4.FATTR4_MODE, nfs4.FATTR4_NUMLINKS, nfs4.FATTR4_OWNER,
                 nfs4.FATTR4_OWNER_GROUP, nfs4.FATTR4_RAWDEV, nfs4.FATTR4_SPACE_USED,
                 nfs4.FATTR4_TIME_ACCESS, nfs4.FATTR4_TIME_METADATA, nfs4.FATTR4_TIME_MODIFY]


def _readdir_page(c, dirfh, cookie, verf, dircount, maxcount, attrs):
    """One READDIR: (its reply's bytes, the READDIR4resok)."""
    args = nfs4.encode_compound(nfs4.COMPOUND4args(b"", 1, [
        c.sequence_op(cachethis=False), op(O.OP_PUTFH, nfs4.PUTFH4args(dirfh)),
        op(O.OP_READDIR, nfs4.READDIR4args(cookie, verf, dircount, maxcount,
                                           nfs4.attrs_to_bitmap4(attrs)))]))
    raw = c.compound_raw(args)
    res = nfs4.decode_compound_res(raw)
    assert res.status == nfsstat4.NFS4_OK, res
    return raw, res.resarray[-1].body.body


def test_readdir_and_getattr_replies_are_the_codecs_encoding_and_agree(ns, nfspd):
    # READDIR and GETATTR pack their results with compiled encoders: the bytes
    # must be exactly what the generic codec makes of what they decode to, and
    # each entry's attributes what a GETATTR of its handle says.
    d = nfspd()
    c = mounted(ns)
    dirfh = _export_dir(c, d)
    _, fh = c.open(dirfh, b"regular")
    for i in range(30):
        os.mkdir(os.path.join(d.export, f"dir{i:02}"))
    os.symlink("regular", os.path.join(d.export, "link"))
    raw, page = _readdir_page(c, dirfh, 0, bytes(8), 0, 65536, LINUX_READDIR)
    assert nfs4.encode_compound_res(nfs4.decode_compound_res(raw)) == raw
    entries = page.reply.entries
    assert len(entries) == 32 and page.reply.eof
    getattr_ = [a for a in LINUX_READDIR if a != nfs4.FATTR4_RDATTR_ERROR]
    for e in entries:
        attrs = nfs4.decode_attrs(e.attrs)
        assert attrs[nfs4.FATTR4_RDATTR_ERROR] == nfsstat4.NFS4_OK
        handle = attrs[nfs4.FATTR4_FILEHANDLE]
        res = c.seq(op(O.OP_PUTFH, nfs4.PUTFH4args(handle)),
                    op(O.OP_GETATTR, nfs4.GETATTR4args(nfs4.attrs_to_bitmap4(getattr_))))
        assert res.status == nfsstat4.NFS4_OK
        assert nfs4.decode_attrs(res.resarray[-1].body.body.obj_attributes) == \
            {a: v for a, v in attrs.items() if a != nfs4.FATTR4_RDATTR_ERROR}, e.name
        assert (e.name == b"regular") == (handle == fh)
    args = nfs4.encode_compound(nfs4.COMPOUND4args(b"", 1, [
        c.sequence_op(cachethis=False), op(O.OP_PUTFH, nfs4.PUTFH4args(fh)),
        op(O.OP_GETATTR, nfs4.GETATTR4args(nfs4.attrs_to_bitmap4(getattr_)))]))
    raw = c.compound_raw(args)
    assert nfs4.encode_compound_res(nfs4.decode_compound_res(raw)) == raw


@pytest.mark.parametrize("dircount", [1, 100, 1000])
def test_readdir_keeps_names_and_cookies_within_dircount(ns, nfspd, dircount):
    d = nfspd()
    for i in range(60):
        os.mkdir(os.path.join(d.export, f"entry-{i:02}"))
    c = mounted(ns)
    dirfh = _export_dir(c, d)
    names, cookie, verf, pages = [], 0, bytes(8), 0
    while True:
        _, page = _readdir_page(c, dirfh, cookie, verf, dircount, 65536, [nfs4.FATTR4_FILEID])
        entries = page.reply.entries
        pages += 1
        # Names and cookies within dircount, as Linux's nfsd counts them; a
        # page always has one entry.
        assert len(entries) == 1 or \
            sum(4 + (len(e.name) + 3) // 4 * 4 + 8 for e in entries) <= dircount
        names += [e.name for e in entries]
        if page.reply.eof:
            break
        cookie, verf = entries[-1].cookie, page.cookieverf
    assert sorted(names) == [f"entry-{i:02}".encode() for i in range(60)]
    assert pages > 1


# What Linux asks in a GETATTR revalidating a file (nfs4_fattr_bitmap), change and times included.
REVALIDATE = nfs4.attrs_to_bitmap4([
    nfs4.FATTR4_TYPE, nfs4.FATTR4_CHANGE, nfs4.FATTR4_SIZE, nfs4.FATTR4_FSID,
    nfs4.FATTR4_FILEID, nfs4.FATTR4_MODE, nfs4.FATTR4_NUMLINKS, nfs4.FATTR4_OWNER,
    nfs4.FATTR4_OWNER_GROUP, nfs4.FATTR4_SPACE_USED, nfs4.FATTR4_TIME_ACCESS,
    nfs4.FATTR4_TIME_METADATA, nfs4.FATTR4_TIME_MODIFY])
GETATTR_REVALIDATE = op(O.OP_GETATTR, nfs4.GETATTR4args(REVALIDATE))


def _raw(c, *ops):
    """(reply bytes, decoded) of SEQUENCE + ops, the reply checked to be the codec's."""
    raw = c.compound_raw(nfs4.encode_compound(nfs4.COMPOUND4args(
        b"tag", 1, [c.sequence_op(cachethis=False), *ops])))
    res = nfs4.decode_compound_res(raw)
    assert nfs4.encode_compound_res(res) == raw
    return raw, res


def _attrs(res, i=-1):
    return nfs4.decode_attrs(res.resarray[i].body.body.obj_attributes)


def test_attributes_an_operation_fetched_serve_the_getattr_after_it_as_a_fresh_fetch_would(
        ns, nfspd):
    # PUTFH, LOOKUP and OPEN keep what they found for the GETATTR that follows:
    # it must answer what a GETATTR in a request of its own answers.
    d = nfspd()
    c = mounted(ns)
    dirfh = _export_dir(c, d)
    put_dir = op(O.OP_PUTFH, nfs4.PUTFH4args(dirfh))
    how = nfs4.createhow4(nfs4.createmode4.UNCHECKED4, nfs4.encode_attrs({nfs4.FATTR4_MODE: 0o640}))
    _, opened = _raw(c, put_dir, op(O.OP_OPEN, _open_args(c, b"f", how)), op(O.OP_GETFH),
                     GETATTR_REVALIDATE)
    assert opened.status == nfsstat4.NFS4_OK
    fh, sid = opened.resarray[3].body.body.object, opened.resarray[2].body.body.stateid
    fresh = c.getattr(fh, nfs4.bitmap4_to_attrs(REVALIDATE))
    assert _attrs(opened) == fresh and fresh[nfs4.FATTR4_MODE] == 0o640
    _, looked_up = _raw(c, put_dir, op(O.OP_LOOKUP, nfs4.LOOKUP4args(b"f")), GETATTR_REVALIDATE)
    _, put = _raw(c, op(O.OP_PUTFH, nfs4.PUTFH4args(fh)), GETATTR_REVALIDATE, GETATTR_REVALIDATE)
    assert _attrs(looked_up) == _attrs(put, 2) == _attrs(put, 3) == fresh
    # Not past an operation that changes the file: a WRITE (which waits on the
    # data path), a SETATTR.
    _, written = _raw(c, op(O.OP_PUTFH, nfs4.PUTFH4args(fh)), GETATTR_REVALIDATE,
                      op(O.OP_WRITE, nfs4.WRITE4args(sid, 0, nfs4.stable_how4.FILE_SYNC4,
                                                     b"12345")),
                      GETATTR_REVALIDATE)
    assert _attrs(written, 2)[nfs4.FATTR4_SIZE] == 0
    assert _attrs(written)[nfs4.FATTR4_SIZE] == 5
    assert _attrs(written)[nfs4.FATTR4_CHANGE] != _attrs(written, 2)[nfs4.FATTR4_CHANGE]
    assert _attrs(written) == c.getattr(fh, nfs4.bitmap4_to_attrs(REVALIDATE))
    _, cut = _raw(c, op(O.OP_PUTFH, nfs4.PUTFH4args(fh)), GETATTR_REVALIDATE,
                  op(O.OP_SETATTR, nfs4.SETATTR4args(sid, nfs4.encode_attrs({nfs4.FATTR4_SIZE: 2}))),
                  GETATTR_REVALIDATE)
    assert cut.status == nfsstat4.NFS4_OK
    assert (_attrs(cut, 2)[nfs4.FATTR4_SIZE], _attrs(cut)[nfs4.FATTR4_SIZE]) == (5, 2)
    # Nor for another object: SAVEFH keeps the current one, RESTOREFH changes it.
    _, restored = _raw(c, put_dir, op(O.OP_SAVEFH), op(O.OP_PUTFH, nfs4.PUTFH4args(fh)),
                       GETATTR_REVALIDATE, op(O.OP_RESTOREFH), GETATTR_REVALIDATE)
    assert _attrs(restored, 4)[nfs4.FATTR4_TYPE] == nfs4.nfs_ftype4.NF4REG
    assert _attrs(restored)[nfs4.FATTR4_TYPE] == nfs4.nfs_ftype4.NF4DIR
    c.close_file(fh, sid)


def test_putfh_refuses_bad_handles_and_nothing_runs_after_a_failed_operation(ns, nfspd):
    d = nfspd()
    c = mounted(ns)
    dirfh = _export_dir(c, d)
    sid, fh = c.open(dirfh, b"gone")
    c.close_file(fh, sid)
    c.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(dirfh)), op(O.OP_REMOVE, nfs4.REMOVE4args(b"gone")))
    cases = [
        ([op(O.OP_PUTFH, nfs4.PUTFH4args(fh)), GETATTR_REVALIDATE], nfsstat4.NFS4ERR_STALE),
        ([op(O.OP_PUTFH, nfs4.PUTFH4args(b"\x01" + bytes(30))), GETATTR_REVALIDATE],
         nfsstat4.NFS4ERR_BADHANDLE),
        ([GETATTR_REVALIDATE, op(O.OP_PUTFH, nfs4.PUTFH4args(dirfh))],
         nfsstat4.NFS4ERR_NOFILEHANDLE),
        ([op(O.OP_PUTFH, nfs4.PUTFH4args(dirfh)), op(O.OP_LOOKUP, nfs4.LOOKUP4args(b"gone")),
          GETATTR_REVALIDATE], nfsstat4.NFS4ERR_NOENT),
    ]
    for ops, status in cases:
        _, res = _raw(c, *ops)
        assert res.status == status
        failed = next(i for i, r in enumerate(res.resarray) if nfs4.resop_status(r) != 0)
        assert failed == len(res.resarray) - 1 and nfs4.resop_status(res.resarray[failed]) == status
    # A good PUTFH after all that: the session and the server go on.
    _, ok = _raw(c, op(O.OP_PUTFH, nfs4.PUTFH4args(dirfh)), GETATTR_REVALIDATE)
    assert ok.status == nfsstat4.NFS4_OK
