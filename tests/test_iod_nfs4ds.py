"""The iod's pNFS data server (iod/nfs4ds.py) in process: sessions as RFC 8881
wants them, the file handle as a capability, and each refusal with the status
a client acts on. The real daemon over TCP: tests/test_iod_ds_daemon.py."""

import os
from unittest import mock

import pytest

from common import dsfh, nfs4, rpc
from common.iodproto import Keys
from common.nfs4 import nfs_opnum4 as O
from common.nfs4 import nfsstat4
from common.runtime.datastore import DataStore
from iod import nfs4ds
from iod.dsrevoked import Revoked
from iod.nfs4ds import Connection, DataServer, FileRange
from iod.nfs4dsstate import DsState
from tools.dev.nfs4dsclient import (
    ANY_STATEID,
    CRED,
    DsClient,
    call_message,
    ok_result,
    op,
    status,
)

KEYS = Keys((1, b"c" * 32))
VERIFIER = b"verifier"
CLIENT = Connection(id="conn-1", ip="192.0.2.10", port=700)
NOW_MS = 1_800_000_000_000


def flatten(reply):
    """The bytes a Reply puts on the wire (its FileRanges read back)."""
    out = bytearray()
    for part in reply.parts:
        if isinstance(part, FileRange):
            data = os.pread(part.pinned.fd, part.count, part.offset) if part.pinned else b""
            out += data + bytes(part.count - len(data))
        else:
            out += part
    reply.release()
    return bytes(out)


class Harness:
    def __init__(self, tmp_path):
        self.store = DataStore(str(tmp_path / "data"))
        self.revoked = Revoked(floor=NOW_MS - 1000)
        self.ds = DataServer(KEYS, self.store, self.revoked, verifier=VERIFIER,
                             server_id=b"S" * 16, boot_epoch=1)
        self.now = 100.0

    def record(self, message, conn=CLIENT):
        reply = self.ds.handle(memoryview(message), conn, self.now)
        data = flatten(reply)
        mark = int.from_bytes(data[:4], "big")
        assert mark == 0x80000000 | (len(data) - 4)
        return data[4:]

    def call(self, args, conn=CLIENT):
        _, message = call_message(args)
        reply = rpc.decode_reply(self.record(message, conn))
        assert reply.accepted and reply.stat == rpc.accept_stat.SUCCESS
        return reply.body

    def client(self, conn=CLIENT, **kw):
        return DsClient(lambda args: self.call(args, conn), **kw)


@pytest.fixture
def h(tmp_path):
    yield (harness := Harness(tmp_path))
    harness.store.close()


def fh(ino=7, seed=9, client=CLIENT.ip, write=True, secure=False, minted=NOW_MS, keys=KEYS):
    return dsfh.mint(keys, ino=ino, seed=seed, layout_gen=1, minted=minted, client=client,
                     write=write, secure=secure)


# -- sessions -------------------------------------------------------------------------

def test_exchange_id_answers_the_data_server_role_whatever_was_asked(h):
    for flags in (nfs4.EXCHGID4_FLAG_USE_PNFS_DS, nfs4.EXCHGID4_FLAG_USE_NON_PNFS, 0):
        ok = h.client(flags=flags).exchange_id()
        assert ok.eir_flags & nfs4.EXCHGID4_FLAG_MASK_PNFS == nfs4.EXCHGID4_FLAG_USE_PNFS_DS
        assert ok.eir_server_owner.so_major_id == b"S" * 16


def test_a_session_is_made_and_confirms_the_client_id(h):
    c = h.client()
    c.exchange_id()
    ok = c.create_session()
    assert ok.csr_flags == 0                      # no back channel, not persistent
    assert ok.csr_fore_chan_attrs.ca_maxrequests == 16
    again = c.exchange_id()
    assert again.eir_flags & nfs4.EXCHGID4_FLAG_CONFIRMED_R
    assert status(c.seq(op(O.OP_RECLAIM_COMPLETE, nfs4.RECLAIM_COMPLETE4args(False)))) == 0
    assert status(c.seq(op(O.OP_RECLAIM_COMPLETE, nfs4.RECLAIM_COMPLETE4args(False)))) == \
        nfsstat4.NFS4ERR_COMPLETE_ALREADY


def test_sequence_misordered_replayed_and_on_a_bad_slot(h):
    c = h.client().setup()
    w = c.write(fh(), 0, b"abc", cachethis=True)
    assert ok_result(w).count == 3
    # the same slot and seqid again: the cached reply, nothing run twice
    again = c.write(fh(), 0, b"XYZ", seqid=1, cachethis=True)
    assert again == w
    assert h.store.read(7, 9, 0, 3) == b"abc"
    assert status(c.seq(seqid=5)) == nfsstat4.NFS4ERR_SEQ_MISORDERED
    assert status(c.seq(slot=99)) == nfsstat4.NFS4ERR_BADSLOT
    # a retry whose reply was not cached
    c.read(fh(), 0, 3)
    assert status(c.read(fh(), 0, 3, seqid=c.seqids[0])) == nfsstat4.NFS4ERR_RETRY_UNCACHED_REP


def test_operations_outside_a_session_and_out_of_place(h):
    c = h.client().setup()
    alone = c.compound([op(O.OP_PUTFH, nfs4.PUTFH4args(fh()))])
    assert status(alone) == nfsstat4.NFS4ERR_OP_NOT_IN_SESSION
    second = c.seq(op(O.OP_SEQUENCE, nfs4.SEQUENCE4args(c.sessionid, 1, 1, 1, False)))
    assert status(second) == nfsstat4.NFS4ERR_SEQUENCE_POS
    not_alone = c.compound([op(O.OP_EXCHANGE_ID, nfs4.EXCHANGE_ID4args(
        nfs4.client_owner4(b"v" * 8, b"o"), 0,
        nfs4.state_protect4_a(nfs4.state_protect_how4.SP4_NONE), [])),
        op(O.OP_PUTFH, nfs4.PUTFH4args(fh()))])
    assert status(not_alone) == nfsstat4.NFS4ERR_NOT_ONLY_OP


def test_more_operations_or_bytes_than_the_session_allows(h):
    small = nfs4.channel_attrs4(0, 8192, 8192, 1024, 4, 2, [])
    c = h.client(fore=small).setup()
    putfh = op(O.OP_PUTFH, nfs4.PUTFH4args(fh()))
    res = c.seq(putfh, putfh, putfh, putfh)
    assert status(res) == nfsstat4.NFS4ERR_TOO_MANY_OPS
    assert [r.disc for r in res.resarray] == [O.OP_SEQUENCE]
    assert status(c.write(fh(), 0, b"x" * 9000)) == nfsstat4.NFS4ERR_REQ_TOO_BIG
    assert h.store.read(7, 9, 0, 1) == b""
    assert status(c.write(fh(), 0, b"x" * 100)) == nfsstat4.NFS4_OK
    # past what any COMPOUND may hold, before a session is even looked at
    res = c.compound([c.sequence_op()] + [putfh] * (nfs4.NFS4_COMPOUND_MAX_OPS + 1))
    assert status(res) == nfsstat4.NFS4ERR_TOO_MANY_OPS
    assert [r.disc for r in res.resarray] == [O.OP_SEQUENCE]


@pytest.mark.parametrize("opnum,args", [
    (O.OP_GETATTR, nfs4.GETATTR4args([1 << nfs4.FATTR4_SIZE])),
    (O.OP_PUTROOTFH, None),
    (O.OP_LOOKUP, nfs4.LOOKUP4args(b"x")),
    (O.OP_LAYOUTGET, None),
])
def test_what_a_data_server_does_not_do_is_notsupp(h, opnum, args):
    c = h.client().setup()
    if opnum == O.OP_LAYOUTGET:
        args = nfs4.LAYOUTGET4args(False, nfs4.layouttype4.LAYOUT4_NFSV4_1_FILES,
                                   nfs4.layoutiomode4.LAYOUTIOMODE4_READ, 0, 1, 1,
                                   nfs4.stateid4(0, bytes(12)), 4096)
    res = c.seq(op(O.OP_PUTFH, nfs4.PUTFH4args(fh())), op(opnum, args))
    assert status(res) == nfsstat4.NFS4ERR_NOTSUPP and res.resarray[-1].disc == opnum


def test_minor_version_0_is_refused(h):
    res = h.client().compound([op(O.OP_PUTFH, nfs4.PUTFH4args(fh()))], minorversion=0)
    assert status(res) == nfsstat4.NFS4ERR_MINOR_VERS_MISMATCH and res.resarray == []


def test_other_programs_versions_and_procedures(h):
    for prog, vers, proc, want in ((100005, 3, 0, rpc.accept_stat.PROG_UNAVAIL),
                                   (nfs4.NFS4_PROGRAM, 3, 0, rpc.accept_stat.PROG_MISMATCH),
                                   (nfs4.NFS4_PROGRAM, 4, 2, rpc.accept_stat.PROC_UNAVAIL),
                                   (nfs4.NFS4_PROGRAM, 4, 0, rpc.accept_stat.SUCCESS)):
        _, message = call_message(b"", prog=prog, vers=vers, proc=proc)
        assert rpc.decode_reply(h.record(message)).stat == want
    _, garbage = call_message(b"\0\0\0\x05abc")
    assert rpc.decode_reply(h.record(garbage)).stat == rpc.accept_stat.GARBAGE_ARGS


def test_destroying_the_session_and_the_client_id(h):
    c = h.client().setup()
    assert status(c.compound([op(O.OP_DESTROY_CLIENTID, nfs4.DESTROY_CLIENTID4args(
        c.clientid))])) == nfsstat4.NFS4ERR_CLIENTID_BUSY
    assert status(c.compound([op(O.OP_DESTROY_SESSION, nfs4.DESTROY_SESSION4args(
        c.sessionid))])) == 0
    assert status(c.seq()) == nfsstat4.NFS4ERR_BADSESSION
    assert status(c.compound([op(O.OP_DESTROY_CLIENTID, nfs4.DESTROY_CLIENTID4args(
        c.clientid))])) == 0
    assert status(c.compound([op(O.OP_CREATE_SESSION, nfs4.CREATE_SESSION4args(
        c.clientid, 2, 0, nfs4.channel_attrs4(0, 8192, 8192, 0, 8, 1, []),
        nfs4.channel_attrs4(0, 8192, 8192, 0, 8, 1, []), 0, []))])) == \
        nfsstat4.NFS4ERR_STALE_CLIENTID


def test_bind_conn_to_session_binds_the_fore_channel(h):
    c = h.client().setup()
    res = c.compound([op(O.OP_BIND_CONN_TO_SESSION, nfs4.BIND_CONN_TO_SESSION4args(
        c.sessionid, nfs4.channel_dir_from_client4.CDFC4_FORE_OR_BOTH, False))])
    assert ok_result(res).bctsr_dir == nfs4.channel_dir_from_server4.CDFS4_FORE


# -- the file ---------------------------------------------------------------------------

def test_write_commit_read_land_in_the_datafile(h):
    c = h.client().setup()
    w = ok_result(c.write(fh(), 5, b"hello"))
    assert (w.count, w.committed, w.writeverf) == (5, nfs4.stable_how4.UNSTABLE4, VERIFIER)
    assert ok_result(c.commit(fh())).writeverf == VERIFIER
    stable = ok_result(c.write(fh(), 20, b"!", stable=nfs4.stable_how4.FILE_SYNC4))
    # On the disk, but the size is the metaserver's to make stable (a
    # LAYOUTCOMMIT): FILE_SYNC4 would tell the client to send none.
    assert stable.committed == nfs4.stable_how4.DATA_SYNC4
    assert h.store.read(7, 9, 0, 21) == bytes(5) + b"hello" + bytes(10) + b"!"
    r = ok_result(c.read(fh(), 3, 30))
    # holes and past the datafile's end read as zeros, count bytes; never eof
    assert r.data == bytes(2) + b"hello" + bytes(10) + b"!" + bytes(12) and not r.eof
    # a file this iod holds nothing of reads as zeros
    assert ok_result(c.read(fh(ino=8), 0, 4)).data == bytes(4)
    # and once the replies are sent no datafile stays pinned open
    assert [e.users for e in h.store._open.values()] == [0]


def test_a_cached_read_carries_its_data_within_the_slot_cache(h):
    c = h.client().setup()
    c.write(fh(), 0, b"x" * 100)
    assert ok_result(c.read(fh(), 0, 100, cachethis=True)).data == b"x" * 100
    assert status(c.read(fh(), 0, 1 << 16, cachethis=True)) == \
        nfsstat4.NFS4ERR_REP_TOO_BIG_TO_CACHE


def test_a_forged_or_altered_handle_is_badhandle(h):
    c = h.client().setup()
    forged = fh(keys=Keys((1, b"f" * 32)))
    altered = bytearray(fh())
    altered[12] ^= 1                  # another inode
    for bad in (forged, bytes(altered), b"", b"\0" * 64, os.urandom(128)):
        res = c.read(bad, 0, 4)
        assert status(res) == nfsstat4.NFS4ERR_BADHANDLE
        assert res.resarray[-1].disc == O.OP_PUTFH


def test_a_handle_for_another_client_address_is_refused(h):
    c = h.client().setup()
    sniffed = fh(client="192.0.2.99")
    for res in (c.read(sniffed, 0, 4), c.write(sniffed, 0, b"x"), c.commit(sniffed)):
        assert status(res) == nfsstat4.NFS4ERR_ACCESS
    assert h.store.read(7, 9, 0, 1) == b""


def test_a_secure_export_needs_a_reserved_port(h):
    insecure = Connection(id="conn-2", ip=CLIENT.ip, port=40000)
    c = h.client(conn=insecure).setup()
    assert status(c.read(fh(secure=True), 0, 4)) == nfsstat4.NFS4ERR_ACCESS
    assert status(c.read(fh(secure=False), 0, 4)) == 0
    reserved = h.client().setup()
    assert status(reserved.read(fh(secure=True), 0, 4)) == 0


def test_a_read_only_handle_reads_but_does_not_write(h):
    c = h.client().setup()
    ro = fh(write=False)
    assert status(c.write(ro, 0, b"x")) == nfsstat4.NFS4ERR_ACCESS
    assert status(c.read(ro, 0, 1)) == 0
    assert h.store.read(7, 9, 0, 1) == b""


def test_a_purged_file_and_an_old_handle_are_stale(h):
    c = h.client().setup()
    c.write(fh(), 0, b"data")
    h.revoked.revoke_file(7, 9, NOW_MS + 5)
    h.store.purge(7, 9)
    for res in (c.read(fh(), 0, 4), c.write(fh(), 0, b"back")):
        assert status(res) == nfsstat4.NFS4ERR_STALE
        assert res.resarray[-1].disc == O.OP_PUTFH
    assert not os.path.exists(h.store.path(7, 9))     # the WRITE brought nothing back
    # minted before the iod started
    assert status(c.read(fh(ino=5, minted=NOW_MS - 2000), 0, 1)) == nfsstat4.NFS4ERR_STALE


def test_io_without_a_file_handle(h):
    c = h.client().setup()
    res = c.seq(op(O.OP_READ, nfs4.READ4args(nfs4.stateid4(0, bytes(12)), 0, 1)))
    assert status(res) == nfsstat4.NFS4ERR_NOFILEHANDLE


# -- the fast path ----------------------------------------------------------------------

class Twins:
    """Two data servers fed the same records, one with the fast path
    (SEQUENCE, PUTFH, READ | WRITE | COMMIT read at fixed offsets) and one
    without: every reply must be the same bytes."""

    def __init__(self, tmp_path):
        self.fast, self.generic = Harness(tmp_path / "fast"), Harness(tmp_path / "generic")
        for h in (self.fast, self.generic):
            h.ds.state = DsState(boot_epoch=1, secret=b"s" * 16)
        self.fast_taken = 0

    def call(self, args, conn=CLIENT):
        _, message = call_message(args)
        if nfs4ds._parse_fast(memoryview(message)[40 + len(CRED.encode()):]) is not None:
            self.fast_taken += 1
        fast = self.fast.record(message, conn)
        with mock.patch.object(nfs4ds, "_parse_fast", lambda args: None):
            generic = self.generic.record(message, conn)
        assert fast == generic
        return rpc.decode_reply(fast).body

    def client(self, conn=CLIENT, **kw):
        return DsClient(lambda args: self.call(args, conn), **kw)

    def revoke_file(self, ino, seed, at):
        for h in (self.fast, self.generic):
            h.revoked.revoke_file(ino, seed, at)


def test_the_fast_path_answers_byte_for_byte_as_the_generic_path(tmp_path):
    t = Twins(tmp_path)
    c = t.client().setup()
    assert status(c.write(fh(), 0, b"hello")) == 0
    assert status(c.write(fh(), 8, b"stable!", stable=nfs4.stable_how4.FILE_SYNC4)) == 0
    assert status(c.commit(fh())) == 0
    for offset, count in ((0, 5), (1, 7), (3, 30), (1 << 20, 10), (1 << 40, 9),
                          (nfs4.NFS4_MAXFILEOFF + 1, 1), (0, 2 << 20),
                          ((1 << 63) - 2, 4096)):
        c.read(fh(), offset, count)
    # Offsets past the kernel's off_t are refused, not handed to pread.
    for offset in ((1 << 63) - 1, nfs4.NFS4_MAXFILEOFF):
        assert status(c.read(fh(), offset, 1)) == nfsstat4.NFS4ERR_INVAL
    assert status(c.write(fh(), (1 << 63) - 2, b"xy")) == nfsstat4.NFS4ERR_FBIG
    c.read(fh(ino=8), 0, 6)                                  # no datafile
    c.compound([c.sequence_op(), op(O.OP_PUTFH, nfs4.PUTFH4args(fh())),
                op(O.OP_READ, nfs4.READ4args(ANY_STATEID, 0, 5))], minorversion=2)
    # replays: a cached reply, an uncached one, a slot still in order
    c.write(fh(), 0, b"abc", cachethis=True)
    assert status(c.write(fh(), 0, b"abc", seqid=c.seqids[0])) == 0
    c.read(fh(), 0, 3)
    assert status(c.read(fh(), 0, 3, seqid=c.seqids[0])) == \
        nfsstat4.NFS4ERR_RETRY_UNCACHED_REP
    assert status(c.read(fh(), 0, 3, seqid=c.seqids[0] + 5)) == \
        nfsstat4.NFS4ERR_SEQ_MISORDERED
    assert status(c.read(fh(), 0, 3, slot=99)) == nfsstat4.NFS4ERR_BADSLOT
    # handles refused
    forged = fh(keys=Keys((1, b"f" * 32)))
    for bad in (forged, b"", b"\0" * 64, bytes(128)):
        assert status(c.read(bad, 0, 4)) == nfsstat4.NFS4ERR_BADHANDLE
    for res in (c.read(fh(client="192.0.2.99"), 0, 4), c.write(fh(write=False), 0, b"x"),
                c.commit(fh(client="192.0.2.99"))):
        assert status(res) == nfsstat4.NFS4ERR_ACCESS
    insecure = t.client(conn=Connection(id="conn-2", ip=CLIENT.ip, port=40000)).setup()
    assert status(insecure.read(fh(secure=True), 0, 4)) == nfsstat4.NFS4ERR_ACCESS
    t.revoke_file(7, 9, NOW_MS + 5)
    for res in (c.read(fh(), 0, 4), c.write(fh(), 0, b"x"), c.commit(fh())):
        assert status(res) == nfsstat4.NFS4ERR_STALE
    # more than the session takes
    small = t.client(fore=nfs4.channel_attrs4(0, 8192, 8192, 1024, 4, 2, [])).setup()
    assert status(small.write(fh(ino=5), 0, b"x" * 9000)) == nfsstat4.NFS4ERR_REQ_TOO_BIG
    assert status(small.read(fh(ino=5), 0, 9000)) == 0
    # a session that is gone
    c.compound([op(O.OP_DESTROY_SESSION, nfs4.DESTROY_SESSION4args(c.sessionid))])
    assert status(c.read(fh(ino=5), 0, 4)) == nfsstat4.NFS4ERR_BADSESSION
    assert t.fast_taken >= 30
    for h in (t.fast, t.generic):
        h.store.close()


def test_a_handle_verified_once_is_still_refused_once_revoked(h):
    c = h.client().setup()
    assert status(c.read(fh(), 0, 4)) == 0        # its MAC now checked and remembered
    h.revoked.revoke_file(7, 9, NOW_MS + 5)
    assert status(c.read(fh(), 0, 4)) == nfsstat4.NFS4ERR_STALE
    assert status(c.write(fh(), 0, b"x")) == nfsstat4.NFS4ERR_STALE


def test_a_handle_verified_once_is_refused_once_its_key_is_retired(h):
    keys = Keys((1, b"c" * 32))
    h.ds.keys = h.ds.handles.keys = keys
    c = h.client().setup()
    old = fh(keys=keys)
    assert status(c.read(old, 0, 4)) == 0
    keys.update(Keys((2, b"n" * 32)))         # the key file now holds key 2 alone
    assert status(c.read(old, 0, 4)) == nfsstat4.NFS4ERR_BADHANDLE
    assert status(c.read(fh(keys=keys), 0, 4)) == 0


def test_the_verified_handles_are_bounded(h):
    h.ds.handles.limit = 4
    c = h.client().setup()
    for ino in range(10):
        assert status(c.read(fh(ino=ino), 0, 1)) == 0
    assert len(h.ds.handles._entries) == 4


def test_verified_handles_are_remembered_first_in_first_out_up_to_a_bound(monkeypatch):
    verified = nfs4ds._VerifiedHandles(KEYS, limit=4)
    checked = []
    real = dsfh.verify
    monkeypatch.setattr(nfs4ds.dsfh, "verify", lambda keys, f: (checked.append(f), real(keys, f))[1])
    handles = [fh(ino=i) for i in range(6)]
    for f in handles:
        assert verified.verify(f).ino == dsfh.verify(KEYS, f).ino
    checked.clear()
    for f in handles[2:]:
        verified.verify(f)
    assert checked == []                           # the 4 latest: remembered
    verified.verify(handles[0])
    assert checked == [handles[0]]                 # dropped, the oldest first
