"""pNFS layout state (nfspd/nfs4layoutstate.py, part of Nfs4State) and the
metaserver's pNFS choices (nfspd/pnfs.py) without a network: layout stateids,
their bounds, what a dropped client leaves to revoke, and when a file can be
given a layout at all."""

import pytest

from common import dsfh, fileslayout, iodproto
from common.metafile import Metafile
from common.nfs4 import (
    EXCHGID4_FLAG_USE_NON_PNFS,
    EXCHGID4_FLAG_USE_PNFS_MDS,
    OPEN4_SHARE_ACCESS_BOTH,
    nfsstat4,
)
from nfspd import nfs4layoutstate
from nfspd.nfs4layoutstate import ANY, READ, RW
from nfspd.nfs4state import (
    Nfs4Error,
    Nfs4State,
)
from nfspd.nfs4stateid import Stateid
from nfspd.pnfs import Pnfs

ALL = (1 << 64) - 1
LEASE = 90


def client_of(st, owner=b"client", now=0):
    r = st.exchange_id(owner, b"v" * 8, "sys:0", 0, now)
    st.create_session(r.clientid, r.sequenceid, 0, st.server_limits, st.server_limits,
                      "sys:0", now)
    st.reclaim_complete(r.clientid, False, now)
    return r.clientid


def opened(st, cid, file=b"fh1", owner=b"o"):
    return st.open(cid, owner, file, OPEN4_SHARE_ACCESS_BOTH, 0, 0).stateid


def status_of(fn, *args, **kw):
    with pytest.raises(Nfs4Error) as e:
        fn(*args, **kw)
    return e.value.status


@pytest.fixture
def st():
    return Nfs4State(now=0, boot_epoch=1000, lease_time=LEASE, pnfs=True)


def test_a_metadata_server_says_use_pnfs_mds_alone():
    for pnfs, flag in ((True, EXCHGID4_FLAG_USE_PNFS_MDS), (False, EXCHGID4_FLAG_USE_NON_PNFS)):
        st = Nfs4State(now=0, boot_epoch=1, pnfs=pnfs)
        flags = st.exchange_id(b"c", b"v" * 8, "sys:0", 0, 0).flags
        assert flags & (EXCHGID4_FLAG_USE_PNFS_MDS | EXCHGID4_FLAG_USE_NON_PNFS) == flag


def test_the_first_layoutget_names_an_open_then_the_layout_stateid_goes_on(st):
    cid = client_of(st)
    open_sid = opened(st, cid)
    first = st.layoutget(cid, open_sid, b"fh1", RW, 1, ip="10.0.0.5", data=(1, 2, 1))
    assert first.seqid == 1 and first.other != open_sid.other
    again = st.layoutget(cid, first, b"fh1", READ, 1, ip="10.0.0.5", data=(1, 2, 1))
    assert (again.other, again.seqid) == (first.other, 2)
    # The open stateid still leads to the same layout.
    assert st.layoutget(cid, open_sid, b"fh1", RW, 1).other == first.other
    assert status_of(st.layoutget, cid, Stateid(9, first.other), b"fh1", RW, 1) == \
        nfsstat4.NFS4ERR_BAD_STATEID
    assert status_of(st.layoutget, cid, first, b"fh2", RW, 1) == nfsstat4.NFS4ERR_BAD_STATEID
    other = client_of(st, b"other")
    assert status_of(st.layoutget, other, first, b"fh1", RW, 1) == nfsstat4.NFS4ERR_BAD_STATEID


def test_layoutreturn_of_a_whole_iomode_and_then_the_last(st):
    cid = client_of(st)
    sid = st.layoutget(cid, opened(st, cid), b"fh1", RW, 1)
    sid = st.layoutget(cid, sid, b"fh1", READ, 1)
    # A partial range keeps everything (layouts are whole-file here).
    kept = st.layoutreturn_file(cid, sid, b"fh1", RW, 0, 4096)
    assert kept.seqid == sid.seqid + 1
    left = st.layoutreturn_file(cid, kept, b"fh1", RW, 0, ALL)
    assert left is not None
    assert status_of(st.layoutcommit, cid, left, b"fh1") == nfsstat4.NFS4ERR_BADLAYOUT
    assert st.layoutreturn_file(cid, left, b"fh1", ANY, 0, ALL) is None
    assert st.layouts_of_file(b"fh1") == []
    assert status_of(st.layoutreturn_file, cid, left, b"fh1", ANY, 0, ALL) == \
        nfsstat4.NFS4ERR_BAD_STATEID


def test_who_holds_a_file_and_forgetting_it(st):
    a, b = client_of(st, b"a"), client_of(st, b"b")
    st.layoutget(a, opened(st, a, b"f"), b"f", RW, 1, ip="10.0.0.1", data=(7, 8, 1))
    st.layoutget(b, opened(st, b, b"f"), b"f", READ, 1, ip="10.0.0.2", data=(7, 8, 1))
    assert sorted(st.layouts_of_file(b"f")) == sorted(
        [(a, "10.0.0.1", (7, 8, 1), True), (b, "10.0.0.2", (7, 8, 1), False)])
    st.forget_file_layouts(b"f")
    assert st.layouts_of_file(b"f") == [] and st.layout_count() == 0


def test_an_expired_client_leaves_its_address_to_revoke(st):
    cid = client_of(st)
    st.layoutget(cid, opened(st, cid, b"f"), b"f", RW, 1, ip="10.0.0.9")
    client_of(st, b"no layouts")
    assert st.take_revocations() == ([], False)
    st.expire(LEASE + 1)
    assert st.layout_count() == 0
    assert st.take_revocations() == (["10.0.0.9"], False)
    assert st.take_revocations() == ([], False)


def test_too_many_addresses_to_revoke_become_everything(st, monkeypatch):
    monkeypatch.setattr(nfs4layoutstate, "MAX_PENDING_REVOCATIONS", 2)
    for i in range(3):
        cid = client_of(st, b"c%d" % i)
        st.layoutget(cid, opened(st, cid, b"f"), b"f", RW, 1, ip=f"10.0.0.{i}")
    st.expire(LEASE + 1)
    ips, everything = st.take_revocations()
    assert everything and len(ips) == 2


def test_layouts_per_client_are_bounded(st, monkeypatch):
    monkeypatch.setattr(nfs4layoutstate, "MAX_LAYOUTS_PER_CLIENT", 2)
    cid = client_of(st)
    for f in (b"f1", b"f2"):
        st.layoutget(cid, opened(st, cid, f), f, RW, 1)
    assert status_of(st.layoutget, cid, opened(st, cid, b"f3"), b"f3", RW, 1) == \
        nfsstat4.NFS4ERR_SERVERFAULT


# -- nfspd/pnfs.py ---------------------------------------------------------------------


class FakeLink:
    def __init__(self, ip, ds_port, up=True, clock_offset=0.0, host=None, port=2050):
        self.ip, self.ds_port, self.up, self.clock_offset = ip, ds_port, up, clock_offset
        self.host, self.port = host or ip, port


class FakeDataPath:
    def __init__(self, links):
        self.keys = iodproto.Keys((1, b"k" * 32))
        self.stripe_unit = 65536
        self.links = links
        self.layout_gen = 1

    def links_of(self, gen):
        return self.links if gen == 1 else []


LOCAL = "10.0.0.1"      # where the client reached the metaserver


def meta(gen=1):
    return Metafile(seed=5, size=0, stripe_unit=65536, layout_gen=gen)


def test_a_file_gets_a_device_only_when_every_iod_of_its_generation_serves_one():
    links = [FakeLink("10.0.1.1", 2049), FakeLink("10.0.1.2", 2049)]
    pnfs = Pnfs(FakeDataPath(links), wall=lambda: 1000.0)
    devid, n = pnfs.device(meta(), LOCAL)
    assert n == 2 and devid == fileslayout.device_id(1, [("10.0.1.1", 2049),
                                                         ("10.0.1.2", 2049)])
    assert pnfs.device_address(devid, LOCAL).da_addr_body == fileslayout.ds_addr_body(
        [("10.0.1.1", 2049), ("10.0.1.2", 2049)])
    for unavailable in (meta(gen=0), meta(gen=7)):
        assert status_of(pnfs.device, unavailable, LOCAL) == nfsstat4.NFS4ERR_LAYOUTUNAVAILABLE
    links[1].ds_port = 3000         # restarted elsewhere: the old id names nothing now
    assert status_of(pnfs.device_address, devid, LOCAL) == nfsstat4.NFS4ERR_NOENT
    links[1].up = False
    assert status_of(pnfs.device, meta(), LOCAL) == nfsstat4.NFS4ERR_LAYOUTUNAVAILABLE
    links[1].up, links[0].ds_port = True, None
    assert status_of(pnfs.device, meta(), LOCAL) == nfsstat4.NFS4ERR_LAYOUTUNAVAILABLE
    assert status_of(pnfs.device_address, b"short", LOCAL) == nfsstat4.NFS4ERR_NOENT


def test_a_data_server_is_where_iods_conf_says_clients_reach_it():
    """ds=ADDRESS[:PORT] (common/iodsconf.py): an address and port of its own,
    an address alone (the port the iod reports), or 0.0.0.0: the address this
    client reached the metaserver at (nfsp up --bind 0.0.0.0)."""
    links = [FakeLink("127.0.0.1", 3050, host="127.0.0.1", port=2050),
             FakeLink("127.0.0.1", 3051, host="127.0.0.1", port=2051),
             FakeLink("10.0.1.3", 3052, host="node3", port=2052)]
    pnfs = Pnfs(FakeDataPath(links), {("127.0.0.1", 2050): ("0.0.0.0", None),
                                      ("127.0.0.1", 2051): ("192.0.2.9", 2049)},
                wall=lambda: 1000.0)
    for local in ("192.0.2.1", "127.0.0.1"):
        expected = [(local, 3050), ("192.0.2.9", 2049), ("10.0.1.3", 3052)]
        devid, n = pnfs.device(meta(), local)
        assert devid == fileslayout.device_id(1, expected) and n == 3
        assert pnfs.device_address(devid, local).da_addr_body == \
            fileslayout.ds_addr_body(expected)
    # An id handed out on one address names nothing on another.
    assert status_of(pnfs.device_address, devid, "192.0.2.1") == nfsstat4.NFS4ERR_NOENT
    links[1].ds_port = None     # the iod serves no data server: iods.conf cannot make one
    assert status_of(pnfs.device, meta(), "192.0.2.1") == nfsstat4.NFS4ERR_LAYOUTUNAVAILABLE


def test_handles_are_minted_in_the_earliest_iod_clock():
    """A revocation stamped at any iod in its own time then covers them."""
    links = [FakeLink("10.0.1.1", 2049, clock_offset=2.0),
             FakeLink("10.0.1.2", 2049, clock_offset=-3.0)]
    pnfs = Pnfs(FakeDataPath(links), wall=lambda: 1000.0)
    fh = pnfs.handle(meta(), 42, "10.0.2.1", write=True, secure=False)
    h = dsfh.verify(pnfs.keys, fh)
    assert (h.ino, h.seed, h.minted, h.may_write, h.secure) == (42, 5, 997_000, True, False)
    assert h.client_matches("10.0.2.1") and not h.client_matches("10.0.2.2")
    assert pnfs.last_mint == 997_000
