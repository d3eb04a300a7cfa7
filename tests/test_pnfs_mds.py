"""nfspd as a pNFS metadata server (files layout, on by default) in front of
real iods serving as data servers (iod --ds-port, by default their port +
1000): a client following the layout
writes a striped file straight to the iods, LAYOUTCOMMIT brings its size to
the metaserver, and the metaserver's own READ (the relay) reads it back;
the cases where no layout can be had and the client does its I/O through the
metaserver; and a removed file's handle refused by the data servers."""

import os
import signal

import pytest

from common import fileslayout, nfs2, nfs3, nfs4
from common.nfs4 import layoutiomode4, layoutreturn_type4, nfsstat4
from common.nfs4 import nfs_opnum4 as O
from common.xdr import decode
from tools.dev.cluster import Cluster
from tools.dev.daemons import NfspUp
from tools.dev.netns import wait_until
from tools.dev.nfs4client import Nfs4Client, Nfs4Failed, op
from tools.dev.nfs4dsclient import DsClient, ok_result, over_tcp, status
from tools.rpcclient import RpcClient

pytestmark = pytest.mark.netns

UNIT = 65536
DS_BASE = 3050
RW, READ, ANY = (layoutiomode4.LAYOUTIOMODE4_RW, layoutiomode4.LAYOUTIOMODE4_READ,
                 layoutiomode4.LAYOUTIOMODE4_ANY)


@pytest.fixture
def pnfs_cluster(ns, tmp_path):
    """A factory: iods with data servers (``ds``: which of them; the others
    run with --ds-port off) and an nfspd, each with its defaults otherwise."""
    started = []

    def start(n_iods=2, ds=None, nfspd_args=(), **kw):
        c = Cluster(ns, str(tmp_path / f"cluster{len(started)}"), n_iods=n_iods,
                    stripe_unit=UNIT, nfspd_args=list(nfspd_args), **kw)
        for i, iod in enumerate(c.iods):
            if ds is not None and i not in ds:
                iod.extra_args += ["--ds-port", "off"]
        started.append(c)
        return c.start()
    yield start
    for c in started:
        c.stop()


def mds(c, **kw):
    return c.ns.inside(Nfs4Client, "127.0.0.1", **kw).mount()


def layoutget_op(sid, iomode=RW, layout_type=fileslayout.FILES, maxcount=65536,
                 offset=0, length=nfs4.NFS4_UINT64_MAX, minlength=0):
    return op(O.OP_LAYOUTGET, nfs4.LAYOUTGET4args(False, layout_type, iomode, offset, length,
                                                  minlength, sid, maxcount))


def layoutget(client, fh, sid, **kw):
    """The LAYOUTGET4resok of the file; Nfs4Failed with the status otherwise."""
    return client.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)), layoutget_op(sid, **kw))[-1].body


def layoutget_status(client, fh, sid, **kw):
    try:
        layoutget(client, fh, sid, **kw)
    except Nfs4Failed as e:
        return e.status
    return nfsstat4.NFS4_OK


def getdeviceinfo(client, devid, maxcount=65536):
    res = client.seq(op(O.OP_GETDEVICEINFO, nfs4.GETDEVICEINFO4args(
        devid, fileslayout.FILES, maxcount, [])))
    return res


def layoutcommit(client, fh, sid, last_write):
    return client.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)), op(O.OP_LAYOUTCOMMIT,
                     nfs4.LAYOUTCOMMIT4args(0, nfs4.NFS4_UINT64_MAX, False, sid, last_write,
                                            None, nfs4.layoutupdate4(fileslayout.FILES, b""))))[-1]


def layoutreturn_file(client, fh, sid, iomode=ANY):
    """The layout stateid left, None when no layout of the file is."""
    return client.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)), op(O.OP_LAYOUTRETURN,
                     nfs4.LAYOUTRETURN4args(False, fileslayout.FILES, iomode, nfs4.layoutreturn4(
                         layoutreturn_type4.LAYOUTRETURN4_FILE,
                         nfs4.layoutreturn_file4(0, nfs4.NFS4_UINT64_MAX, sid, b"")))))[-1].body


def port_of(netaddr):
    _, hi, lo = netaddr.na_r_addr.decode().rsplit(".", 2)
    return int(hi) << 8 | int(lo)


class DataServers:
    """Sessions with the data servers of a device, and the striping of
    RFC 8881 13.4.1 as Linux computes it (nfs4_fl_calc_j_index)."""

    def __init__(self, ns, layout, device):
        self.layout, self.device = layout, device
        self.conns, self.sessions = [], {}
        for entry in device.nflda_multipath_ds_list:
            port = port_of(entry[0])
            conn = ns.inside(RpcClient, "127.0.0.1", port, "tcp", timeout=10.0,
                             cred=RpcClient.default_cred(0, 0, [0]))
            self.conns.append(conn)
            self.sessions[port] = DsClient(over_tcp(conn)).setup()

    def of(self, offset):
        lo, dev = self.layout, self.device
        j = (offset // lo.nfl_util + lo.nfl_first_stripe_index) % len(dev.nflda_stripe_indices)
        return self.sessions[port_of(dev.nflda_multipath_ds_list[dev.nflda_stripe_indices[j]][0])]

    def close(self):
        for conn in self.conns:
            conn.close()


def the_layout(lg):
    (layout,) = lg.logr_layout
    assert (layout.lo_offset, layout.lo_length) == (0, nfs4.NFS4_UINT64_MAX)
    assert layout.lo_content.loc_type == fileslayout.FILES
    return decode(nfs4.nfsv4_1_file_layout4, layout.lo_content.loc_body)


def device_of(client, layout):
    res = getdeviceinfo(client, layout.nfl_deviceid)
    assert res.status == nfsstat4.NFS4_OK
    addr = res.resarray[-1].body.body.gdir_device_addr
    assert addr.da_layout_type == fileslayout.FILES
    return decode(nfs4.nfsv4_1_file_layout_ds_addr4, addr.da_addr_body)


def open_new(client, c, name):
    dirfh = client.lookup_path(c.export)
    return client.open(dirfh, name)


def read_all(client, fh, sid, size):
    out = bytearray()
    while len(out) < size:
        res = client.seq(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)),
                         op(O.OP_READ, nfs4.READ4args(sid, len(out), 1 << 20)), cachethis=False)
        assert res.status == nfsstat4.NFS4_OK
        data = res.resarray[-1].body.body.data
        assert data, "short file"
        out += data
    return bytes(out)


def test_a_file_written_through_the_data_servers_reads_back_through_the_metaserver(
        pnfs_cluster):
    c = pnfs_cluster(n_iods=3)
    client = mds(c)
    dirfh = client.lookup_path(c.export)
    attrs = client.getattr(dirfh, [nfs4.FATTR4_FS_LAYOUT_TYPES, nfs4.FATTR4_LAYOUT_BLKSIZE])
    assert attrs[nfs4.FATTR4_FS_LAYOUT_TYPES] == [fileslayout.FILES]
    assert attrs[nfs4.FATTR4_LAYOUT_BLKSIZE] == UNIT
    sid, fh = client.open(dirfh, b"striped")
    lg = layoutget(client, fh, sid)
    assert lg.logr_return_on_close
    assert lg.logr_stateid.other != sid.other       # a layout stateid of its own
    layout = the_layout(lg)
    assert layout.nfl_util == UNIT and layout.nfl_pattern_offset == 0
    device = device_of(client, layout)
    assert sorted(port_of(e[0]) for e in device.nflda_multipath_ds_list) == \
        [DS_BASE, DS_BASE + 1, DS_BASE + 2]
    ds = DataServers(c.ns, layout, device)
    data = os.urandom(7 * UNIT + 12345)
    handle = layout.nfl_fh_list[0]
    for off in range(0, len(data), UNIT):
        w = ok_result(ds.of(off).write(handle, off, data[off:off + UNIT]))
        assert w.count == len(data[off:off + UNIT])
    for session in ds.sessions.values():
        ok_result(session.commit(handle))
    ds.close()
    # Nothing reached the metaserver yet: the file is still empty there.
    assert client.getattr(fh, [nfs4.FATTR4_SIZE])[nfs4.FATTR4_SIZE] == 0
    lc = layoutcommit(client, fh, lg.logr_stateid, len(data) - 1)
    assert lc.body.locr_newsize == len(data)
    assert client.getattr(fh, [nfs4.FATTR4_SIZE])[nfs4.FATTR4_SIZE] == len(data)
    assert read_all(client, fh, sid, len(data)) == data       # the relay, from the iods
    # Every stripe went to the iod NFSP's striping puts it on, none through nfspd.
    held = c.datafiles()
    assert all(len(files) == 1 for files in held.values())
    # Returned whole: no layout stateid left (lrs_present false).
    assert layoutreturn_file(client, fh, lg.logr_stateid) is None
    client.close_file(fh, sid)


def test_layoutcommit_never_shrinks_and_a_read_layout_cannot_commit(pnfs_cluster):
    c = pnfs_cluster()
    client = mds(c)
    sid, fh = open_new(client, c, b"sized")
    client.write(fh, sid, 0, b"x" * 5000)
    lg = layoutget(client, fh, sid)
    assert layoutcommit(client, fh, lg.logr_stateid, 99).body.locr_newsize is None
    assert client.getattr(fh, [nfs4.FATTR4_SIZE])[nfs4.FATTR4_SIZE] == 5000
    layoutreturn_file(client, fh, lg.logr_stateid, RW)
    rd = layoutget(client, fh, sid, iomode=READ)
    with pytest.raises(Nfs4Failed) as e:
        layoutcommit(client, fh, rd.logr_stateid, 10000)
    assert e.value.status == nfsstat4.NFS4ERR_BADLAYOUT


def test_layout_stateids_follow_rfc_8881_12_5_3(pnfs_cluster):
    c = pnfs_cluster()
    client = mds(c)
    sid, fh = open_new(client, c, b"seq")
    first = layoutget(client, fh, sid).logr_stateid
    assert first.seqid == 1
    # The open stateid again, or the layout stateid: the same layout, one seqid on.
    second = layoutget(client, fh, sid).logr_stateid
    assert (second.other, second.seqid) == (first.other, 2)
    third = layoutget(client, fh, first).logr_stateid       # an older seqid is accepted
    assert third.seqid == 3
    future = nfs4.stateid4(9, first.other)
    assert layoutget_status(client, fh, future) == nfsstat4.NFS4ERR_BAD_STATEID
    forged = nfs4.stateid4(1, first.other[:8] + bytes(4))      # this boot's, a bad MAC
    assert layoutget_status(client, fh, forged) == nfsstat4.NFS4ERR_BAD_STATEID
    # Another file's open stateid names no layout of this one.
    sid2, _ = open_new(client, c, b"other")
    assert layoutget_status(client, fh, sid2) == nfsstat4.NFS4ERR_BAD_STATEID
    # Returning one iomode of two leaves the layout, one seqid on.
    layoutget(client, fh, sid, iomode=READ)
    left = layoutreturn_file(client, fh, third, RW)
    assert left is not None and left.other == first.other and left.seqid == 5
    assert layoutreturn_file(client, fh, left, READ) is None
    # Gone: returning it again, or committing through it, is BAD_STATEID.
    with pytest.raises(Nfs4Failed) as e:
        layoutreturn_file(client, fh, left)
    assert e.value.status == nfsstat4.NFS4ERR_BAD_STATEID


def test_return_all_and_fsid_drop_every_layout(pnfs_cluster):
    c = pnfs_cluster()
    client = mds(c)
    sids = [open_new(client, c, name) for name in (b"a", b"b")]
    lgs = [layoutget(client, fh, sid) for sid, fh in sids]
    for how in (layoutreturn_type4.LAYOUTRETURN4_FSID, layoutreturn_type4.LAYOUTRETURN4_ALL):
        client.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(sids[0][1])), op(O.OP_LAYOUTRETURN,
                  nfs4.LAYOUTRETURN4args(False, fileslayout.FILES, ANY,
                                         nfs4.layoutreturn4(how))))
        for (sid, fh), lg in zip(sids, lgs):
            with pytest.raises(Nfs4Failed) as e:
                layoutreturn_file(client, fh, lg.logr_stateid)
            assert e.value.status == nfsstat4.NFS4ERR_BAD_STATEID
        lgs = [layoutget(client, fh, sid) for sid, fh in sids]


def test_what_cannot_be_given_is_told_as_rfc_8881_says(pnfs_cluster):
    c = pnfs_cluster()
    client = mds(c)
    sid, fh = open_new(client, c, b"f")
    assert layoutget_status(client, fh, sid, layout_type=nfs4.layouttype4.LAYOUT4_FLEX_FILES) \
        == nfsstat4.NFS4ERR_UNKNOWN_LAYOUTTYPE
    assert layoutget_status(client, fh, sid, iomode=ANY) == nfsstat4.NFS4ERR_BADIOMODE
    assert layoutget_status(client, fh, sid, length=10, minlength=20) == nfsstat4.NFS4ERR_INVAL
    assert layoutget_status(client, fh, sid, maxcount=40) == nfsstat4.NFS4ERR_TOOSMALL
    dirfh = client.lookup_path(c.export)
    assert layoutget_status(client, dirfh, sid) == nfsstat4.NFS4ERR_ISDIR
    devid = the_layout(layoutget(client, fh, sid)).nfl_deviceid
    res = getdeviceinfo(client, devid, maxcount=16)
    assert res.status == nfsstat4.NFS4ERR_TOOSMALL
    assert res.resarray[-1].body.body > 16          # gdir_mincount: what it needs
    unknown = bytes(4) + devid[4:]
    assert getdeviceinfo(client, unknown).status == nfsstat4.NFS4ERR_NOENT
    assert getdeviceinfo(client, devid[:4] + bytes(12)).status == nfsstat4.NFS4ERR_NOENT


def test_an_iod_without_a_data_server_means_io_through_the_metaserver(pnfs_cluster):
    c = pnfs_cluster(n_iods=2, ds={0})
    client = mds(c)
    sid, fh = open_new(client, c, b"f")
    assert layoutget_status(client, fh, sid) == nfsstat4.NFS4ERR_LAYOUTUNAVAILABLE
    client.write(fh, sid, 0, b"still written")      # through the metaserver, as before
    assert client.read(fh, sid, 0, 100).data == b"still written"


def test_an_iod_down_means_io_through_the_metaserver(pnfs_cluster):
    c = pnfs_cluster(n_iods=2)
    client = mds(c)
    sid, fh = open_new(client, c, b"g")
    assert layoutget_status(client, fh, sid) == nfsstat4.NFS4_OK
    c.iods[1].stop()
    wait_until(lambda: layoutget_status(client, fh, sid) ==
               nfsstat4.NFS4ERR_LAYOUTUNAVAILABLE, 30, what="nfspd to see the iod down")


def test_no_pnfs_gives_no_layouts(pnfs_cluster):
    c = pnfs_cluster(nfspd_args=("--no-pnfs",))
    client = c.ns.inside(Nfs4Client, "127.0.0.1")
    flags = client.exchange_id().eir_flags
    assert flags & nfs4.EXCHGID4_FLAG_USE_NON_PNFS
    assert not flags & nfs4.EXCHGID4_FLAG_USE_PNFS_MDS
    client.create_session()
    dirfh = client.lookup_path(c.export)
    assert client.getattr(dirfh, [nfs4.FATTR4_FS_LAYOUT_TYPES])[
        nfs4.FATTR4_FS_LAYOUT_TYPES] == []
    sid, fh = client.open(dirfh, b"f")
    assert layoutget_status(client, fh, sid) == nfsstat4.NFS4ERR_NOTSUPP


def test_an_export_may_give_some_clients_no_layouts(pnfs_cluster):
    """exports(5) no_pnfs: for clients that cannot reach the iods, say; their
    I/O goes through the metaserver."""
    c = pnfs_cluster(clients="10.77.0.2(rw,no_root_squash,insecure) "
                             "127.0.0.0/8(rw,no_root_squash,insecure,no_pnfs)")
    c.ns.run(["ip", "addr", "add", "10.77.0.2/32", "dev", "lo"], check=True)
    near = c.ns.inside(Nfs4Client, "10.77.0.2").mount()
    far = c.ns.inside(Nfs4Client, "127.0.0.1").mount()
    sid, fh = open_new(near, c, b"f")
    assert layoutget_status(near, fh, sid) == nfsstat4.NFS4_OK
    fsid, ffh = far.open(far.lookup_path(c.export), b"f", create=False)
    assert layoutget_status(far, ffh, fsid) == nfsstat4.NFS4ERR_LAYOUTUNAVAILABLE
    far.write(ffh, fsid, 0, b"through the metaserver")
    assert far.read(ffh, fsid, 0, 100).data == b"through the metaserver"
    # Nor is the far one told of layout types, so Linux does not ask for
    # layouts at all; the pseudo root has none for anyone.
    types = nfs4.FATTR4_FS_LAYOUT_TYPES
    for who, want in ((near, [nfs4.layouttype4.LAYOUT4_NFSV4_1_FILES]), (far, [])):
        dirfh = who.lookup_path(c.export)
        assert who.getattr(dirfh, [types])[types] == want
        assert who.getattr(fh if who is near else ffh, [types])[types] == want
        entries = who.readdir(dirfh, [types])
        assert [attrs[types] for _, attrs in entries] == [want], entries


def test_a_metadata_server_says_so_and_only_so(pnfs_cluster):
    """Linux refuses an EXCHANGE_ID reply with both USE_PNFS_MDS and
    USE_NON_PNFS (nfs4_check_cl_exchange_flags)."""
    c = pnfs_cluster()
    flags = c.ns.inside(Nfs4Client, "127.0.0.1").exchange_id().eir_flags
    assert flags & nfs4.EXCHGID4_FLAG_USE_PNFS_MDS
    assert not flags & nfs4.EXCHGID4_FLAG_USE_NON_PNFS


def test_a_removed_files_handle_is_stale_at_the_data_servers(pnfs_cluster):
    c = pnfs_cluster()
    client = mds(c)
    dirfh = client.lookup_path(c.export)
    sid, fh = client.open(dirfh, b"doomed")
    keep_sid, keep_fh = client.open(dirfh, b"kept")
    lg, keep = layoutget(client, fh, sid), layoutget(client, keep_fh, keep_sid)
    layout, kept = the_layout(lg), the_layout(keep)
    ds = DataServers(c.ns, layout, device_of(client, layout))
    handle = layout.nfl_fh_list[0]
    ok_result(ds.of(0).write(handle, 0, b"before"))
    client.close_file(fh, sid)
    client.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(dirfh)), op(O.OP_REMOVE, nfs4.REMOVE4args(
        b"doomed")))
    # Refused by every data server as soon as REMOVE is answered.
    for off in range(0, 2 * UNIT, UNIT):
        assert status(ds.of(off).write(handle, off, b"after")) == nfsstat4.NFS4ERR_STALE
    # Another file's handle is untouched.
    ok_result(ds.of(0).write(kept.nfl_fh_list[0], 0, b"kept"))
    ds.close()


def setattr_size(client, fh, sid, size):
    return client.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)), op(O.OP_SETATTR, nfs4.SETATTR4args(
        sid, nfs4.encode_attrs({nfs4.FATTR4_SIZE: size}))))


def test_a_truncation_fences_the_writers_and_is_carried_out_before_its_reply(pnfs_cluster):
    """Issue 16 case 1's rule with layouts: a DS WRITE from before a SETATTR
    that shrinks the file never lands after it (its handle is refused), and
    one sent after the reply is never cut by a truncation carried out late."""
    c = pnfs_cluster()
    writer, other = mds(c), mds(c)
    dirfh = writer.lookup_path(c.export)
    sid, fh = writer.open(dirfh, b"cut")
    lg = layoutget(writer, fh, sid)
    layout = the_layout(lg)
    ds = DataServers(c.ns, layout, device_of(writer, layout))
    old = layout.nfl_fh_list[0]
    data = os.urandom(4 * UNIT)
    for off in range(0, len(data), UNIT):
        ok_result(ds.of(off).write(old, off, data[off:off + UNIT]))
    layoutcommit(writer, fh, lg.logr_stateid, len(data) - 1)
    osid, _ = other.open(dirfh, b"cut", create=False, owner=b"other")
    setattr_size(other, fh, osid, UNIT)
    # The writer's old handle is refused by every data server from now on.
    for off in range(0, len(data), UNIT):
        assert status(ds.of(off).write(old, off, b"late")) == nfsstat4.NFS4ERR_STALE
    # A new layout works, and what is written through it after the reply stays.
    lg2 = layoutget(writer, fh, lg.logr_stateid)
    new = the_layout(lg2).nfl_fh_list[0]
    ok_result(ds.of(2 * UNIT).write(new, 2 * UNIT, b"after the cut"))
    layoutcommit(writer, fh, lg2.logr_stateid, 2 * UNIT + len(b"after the cut") - 1)
    ds.close()
    got = read_all(writer, fh, sid, 2 * UNIT + 13)
    assert got[:UNIT] == data[:UNIT]
    assert got[UNIT:2 * UNIT] == bytes(UNIT)            # cut, not the old bytes
    assert got[2 * UNIT:] == b"after the cut"


def test_an_expired_clients_handles_are_stale_at_the_data_servers(pnfs_cluster):
    c = pnfs_cluster(nfspd_args=("--v4-lease", "2"))
    client = mds(c)
    sid, fh = open_new(client, c, b"leased")
    layout = the_layout(layoutget(client, fh, sid))
    ds = DataServers(c.ns, layout, device_of(client, layout))
    handle = layout.nfl_fh_list[0]
    ok_result(ds.of(0).write(handle, 0, b"while renewed"))
    # Silent on the metaserver (the data servers' sessions renew nothing
    # there): the lease runs out, the lease timer revokes its handles.
    wait_until(lambda: status(ds.of(0).write(handle, 0, b"x")) == nfsstat4.NFS4ERR_STALE,
               30, what="the expired client's handle refused")
    assert client.seq(op(O.OP_PUTROOTFH)).status == nfsstat4.NFS4ERR_BADSESSION
    ds.close()


def _up(ns, tmp_path, *args):
    directory = str(tmp_path / "up")
    up = NfspUp(ns, directory, str(tmp_path / "up.log"), ["--iods", "2", *args]).start(60)
    return up, f"{directory}/export"


def _down(up):
    up.proc.send_signal(15)
    assert up.proc.wait(timeout=60) == 0


def test_nfsp_up_gives_layouts_over_its_iods_by_default(ns, tmp_path):
    up, export = _up(ns, tmp_path)
    try:
        client = ns.inside(Nfs4Client, "127.0.0.1").mount()
        sid, fh = client.open(client.lookup_path(export), b"f")
        wait_until(lambda: layoutget_status(client, fh, sid) == nfsstat4.NFS4_OK, 30,
                   what="the iods' data servers known to nfspd")
        device = device_of(client, the_layout(layoutget(client, fh, sid)))
        assert sorted(port_of(e[0]) for e in device.nflda_multipath_ds_list) == [3050, 3051]
        client.close()
    finally:
        _down(up)


def test_nfsp_up_no_pnfs_gives_none(ns, tmp_path):
    up, export = _up(ns, tmp_path, "--no-pnfs")
    try:
        client = ns.inside(Nfs4Client, "127.0.0.1").mount()
        sid, fh = client.open(client.lookup_path(export), b"f")
        assert layoutget_status(client, fh, sid) == nfsstat4.NFS4ERR_NOTSUPP
        client.close()
    finally:
        _down(up)


def test_nfsp_up_on_every_interface_hands_out_the_address_the_client_used(ns, tmp_path):
    """--bind 0.0.0.0: the iods talk to nfspd on loopback, but a remote
    client must reach their data servers: they listen on every interface,
    and a client is given the address it reached the metaserver at."""
    ns.run(["ip", "addr", "add", "10.77.0.1/32", "dev", "lo"], check=True)
    os.makedirs(tmp_path / "up")
    with open(tmp_path / "up" / "exports", "w") as f:     # this test's client is root
        f.write(f"{tmp_path}/up/export *(rw,no_root_squash,insecure)\n")
    up, export = _up(ns, tmp_path, "--bind", "0.0.0.0")
    try:
        with open(str(tmp_path / "up" / "iods.conf")) as f:
            assert [line.split()[1:] for line in f if not line.startswith("#")] == \
                [["ds=0.0.0.0"], ["ds=0.0.0.0"]]
        for address in ("10.77.0.1", "127.0.0.1"):
            client = ns.inside(Nfs4Client, address).mount()
            sid, fh = client.open(client.lookup_path(export), address.encode())
            wait_until(lambda c=client, f=fh, s=sid: layoutget_status(c, f, s) ==
                       nfsstat4.NFS4_OK, 30, what="the iods' data servers known to nfspd")
            layout = the_layout(layoutget(client, fh, sid))
            device = device_of(client, layout)
            assert sorted(e[0].na_r_addr.decode() for e in device.nflda_multipath_ds_list) == \
                [f"{address}.11.234", f"{address}.11.235"]      # ports 3050, 3051
            ds = ns.inside(RpcClient, address, 3050, "tcp", timeout=10.0,
                           cred=RpcClient.default_cred(0, 0, [0]))
            with ds:
                DsClient(over_tcp(ds)).setup()
            client.close()
    finally:
        _down(up)


def test_an_nfsv3_truncation_fences_the_pnfs_writers_too(pnfs_cluster):
    c = pnfs_cluster()
    writer = mds(c)
    sid, fh = open_new(writer, c, b"shared")
    layout = the_layout(layoutget(writer, fh, sid))
    ds = DataServers(c.ns, layout, device_of(writer, layout))
    handle = layout.nfl_fh_list[0]
    ok_result(ds.of(0).write(handle, 0, b"x" * 1000))
    v3, _ = c.connect(vers=3, transport="tcp")
    cut = nfs3.sattr3.unchanged()
    cut.size = 10
    v3.ok(nfs3.NFSPROC3.SETATTR, nfs3.SETATTR3args(fh, cut, None))
    assert status(ds.of(0).write(handle, 0, b"late")) == nfsstat4.NFS4ERR_STALE
    ds.close()


def test_after_a_metaserver_restart_old_layouts_are_refused_and_their_writes_reclaimed(
        pnfs_cluster):
    c = pnfs_cluster()
    client = mds(c)
    sid, fh = open_new(client, c, b"across")
    lg = layoutget(client, fh, sid)
    layout = the_layout(lg)
    ds = DataServers(c.ns, layout, device_of(client, layout))
    handle = layout.nfl_fh_list[0]
    ok_result(ds.of(0).write(handle, 0, b"written before the restart"))
    ok_result(ds.of(0).commit(handle))
    client.close()
    c.nfspd.stop()
    c.nfspd.start()
    # Not in the new nfspd's state, so no fence could cover it: refused.
    wait_until(lambda: status(ds.of(0).write(handle, 0, b"x")) == nfsstat4.NFS4ERR_STALE, 30,
               what="the previous boot's layouts revoked")
    ds.close()
    again = c.ns.inside(Nfs4Client, "127.0.0.1", owner=client.owner)
    again.verifier = client.verifier
    again.exchange_id()
    again.create_session()
    # In grace: the size of what was written before the restart is reclaimed.
    commit = op(O.OP_LAYOUTCOMMIT, nfs4.LAYOUTCOMMIT4args(
        0, nfs4.NFS4_UINT64_MAX, True, nfs4.stateid4(0, bytes(12)), 25, None,
        nfs4.layoutupdate4(fileslayout.FILES, b"")))
    res = again.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)), commit)
    assert res[-1].body.locr_newsize == 26
    again.ok(op(O.OP_RECLAIM_COMPLETE, nfs4.RECLAIM_COMPLETE4args(False)))
    assert again.getattr(fh, [nfs4.FATTR4_SIZE])[nfs4.FATTR4_SIZE] == 26
    # Out of grace a reclaim is refused.
    assert again.seq(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)), commit).status == \
        nfsstat4.NFS4ERR_NO_GRACE


def test_exports_reloaded_revoke_every_layout(pnfs_cluster):
    c = pnfs_cluster()
    client = mds(c)
    sid, fh = open_new(client, c, b"f")
    layout = the_layout(layoutget(client, fh, sid))
    ds = DataServers(c.ns, layout, device_of(client, layout))
    handle = layout.nfl_fh_list[0]
    ok_result(ds.of(0).write(handle, 0, b"before"))
    other = os.path.join(os.path.dirname(c.export), "another")
    os.makedirs(other)
    with open(c.nfspd.exports, "a") as f:      # the rules change: one more export
        f.write(f"{other} 127.0.0.0/8(ro,insecure)\n")
    os.kill(c.nfspd.proc.pid, signal.SIGHUP)
    wait_until(lambda: status(ds.of(0).write(handle, 0, b"x")) == nfsstat4.NFS4ERR_STALE, 30,
               what="the layouts revoked on the reload")
    ds.close()


def _victim_written_through_a_layout(c):
    """(export handle, DataServers, data-server handle) of a file "victim"
    written through its layout by an NFSv4.1 client, then closed."""
    client = mds(c)
    dirfh = client.lookup_path(c.export)
    sid, fh = client.open(dirfh, b"victim")
    layout = the_layout(layoutget(client, fh, sid))
    ds = DataServers(c.ns, layout, device_of(client, layout))
    handle = layout.nfl_fh_list[0]
    ok_result(ds.of(0).write(handle, 0, b"before"))
    client.close_file(fh, sid)
    return dirfh, ds, handle


def _assert_revoked(ds, handle):
    for off in range(0, 2 * UNIT, UNIT):
        assert status(ds.of(off).write(handle, off, b"after")) == nfsstat4.NFS4ERR_STALE
    ds.close()


@pytest.mark.parametrize("how", ["REMOVE", "RENAME over it"])
def test_an_nfsv3_removal_revokes_the_layouts_before_its_reply(pnfs_cluster, how):
    """As NFSv4's REMOVE does: not only once the PURGE reaches the iods."""
    c = pnfs_cluster()
    dirfh, ds, handle = _victim_written_through_a_layout(c)
    v3, _ = c.connect(vers=3, transport="tcp")
    if how == "REMOVE":
        v3.ok(nfs3.NFSPROC3.REMOVE, nfs3.REMOVE3args(nfs3.diropargs3(dirfh, b"victim")))
    else:
        v3.ok(nfs3.NFSPROC3.CREATE, nfs3.CREATE3args(nfs3.diropargs3(dirfh, b"other"),
                                                   nfs3.createhow3(nfs3.createmode3.UNCHECKED,
                                                                   nfs3.sattr3.unchanged())))
        v3.ok(nfs3.NFSPROC3.RENAME, nfs3.RENAME3args(nfs3.diropargs3(dirfh, b"other"),
                                                   nfs3.diropargs3(dirfh, b"victim")))
    _assert_revoked(ds, handle)


@pytest.mark.parametrize("how", ["REMOVE", "RENAME over it"])
def test_an_nfsv2_removal_revokes_the_layouts_before_its_reply(pnfs_cluster, how):
    c = pnfs_cluster()
    _, ds, handle = _victim_written_through_a_layout(c)
    v2, root = c.connect(vers=2, transport="tcp")
    if how == "REMOVE":
        assert v2.call(nfs2.NFSPROC.REMOVE, nfs2.diropargs(root, b"victim")) == \
            nfs2.nfsstat.NFS_OK
    else:
        v2.call(nfs2.NFSPROC.CREATE, nfs2.createargs(nfs2.diropargs(root, b"other"),
                                                     nfs2.sattr_unset().replace(mode=0o644)))
        assert v2.call(nfs2.NFSPROC.RENAME, nfs2.renameargs(
            nfs2.diropargs(root, b"other"), nfs2.diropargs(root, b"victim"))) == \
            nfs2.nfsstat.NFS_OK
    _assert_revoked(ds, handle)


def test_an_nfsv3_removal_of_one_link_keeps_the_layouts(pnfs_cluster):
    c = pnfs_cluster()
    client = mds(c)
    dirfh = client.lookup_path(c.export)
    sid, fh = client.open(dirfh, b"twice")
    layout = the_layout(layoutget(client, fh, sid))
    ds = DataServers(c.ns, layout, device_of(client, layout))
    v3, _ = c.connect(vers=3, transport="tcp")
    v3.ok(nfs3.NFSPROC3.LINK, nfs3.LINK3args(fh, nfs3.diropargs3(dirfh, b"again")))
    v3.ok(nfs3.NFSPROC3.REMOVE, nfs3.REMOVE3args(nfs3.diropargs3(dirfh, b"twice")))
    ok_result(ds.of(0).write(layout.nfl_fh_list[0], 0, b"still mine"))
    ds.close()


def test_a_read_layout_moves_atime_as_a_read_would(pnfs_cluster):
    """The READs go to the data servers, which know nothing of atime: the
    metaserver moves it when it hands out a layout to read with."""
    c = pnfs_cluster()
    if os.statvfs(c.export).f_flag & os.ST_NOATIME:
        pytest.skip("the export is on a noatime mount")
    client = mds(c)
    sid, fh = open_new(client, c, b"atime")
    path = os.path.join(c.export, "atime")
    st = os.stat(path)
    old = st.st_mtime_ns - 3 * 24 * 3600 * 10**9       # before mtime: a read moves it
    os.utime(path, ns=(old, st.st_mtime_ns))
    layoutget(client, fh, sid, iomode=RW)
    assert os.stat(path).st_atime_ns == old             # writing is no access
    layoutget(client, fh, sid, iomode=READ)
    assert os.stat(path).st_atime_ns > st.st_mtime_ns
