"""The real iod as a pNFS data server (--ds-port): NFSv4.1 over TCP from a
client in the test's network namespace, on the same datafiles the iod
protocol reads and writes, and the refusals a client sees."""

import os
import socket
import struct
import time

import pytest

from common import dsfh, fileslayout, nfs4, rpc
from common.iodproto import Op
from common.nfs4 import nfs_opnum4 as O
from common.nfs4 import nfsstat4
from common.xdr import decode
from tests.test_iod_security import sample, scrape
from tools.dev.nfs4dsclient import (
    CRED,
    DsClient,
    call_message,
    ok_result,
    op,
    over_tcp,
    status,
)
from tools.rpcclient import RpcClient

pytestmark = pytest.mark.netns

DS_PORT = 2049


@pytest.fixture
def ds_iod(iods):
    return iods(extra_args=["--ds-port", str(DS_PORT)])


def connect(iod, reserved_port=False, timeout=30.0, port=DS_PORT):
    return iod.ns.inside(RpcClient, "127.0.0.1", port, "tcp", timeout=timeout, cred=CRED,
                         reserved_port=reserved_port)


def session(iod, **kw):
    conn = connect(iod, **kw)
    return conn, DsClient(over_tcp(conn)).setup()


def fh(iod, ino, seed, client="127.0.0.1", write=True, secure=False, minted=None):
    minted = int(time.time() * 1000) if minted is None else minted
    return dsfh.mint(iod.keys, ino=ino, seed=seed, layout_gen=1, minted=minted, client=client,
                     write=write, secure=secure)


def test_a_file_written_through_the_data_server_reads_back_through_the_iod_and_back(ds_iod):
    conn, c = session(ds_iod)
    with conn, ds_iod.client("tcp") as iod:
        verifier = iod.call(Op.PING).verifier
        w = ok_result(c.write(fh(ds_iod, 11, 3), 4096, b"through the data server"))
        assert (w.count, w.writeverf) == (23, verifier)
        assert ok_result(c.commit(fh(ds_iod, 11, 3))).writeverf == verifier
        got = iod.call(Op.READ, ino=11, seed=3, offset=4090, count=30).data
        assert got == bytes(6) + b"through the data server" + bytes(1)

        assert iod.call(Op.WRITE, ino=12, seed=3, offset=1 << 30, data=b"via the iod",
                        stable=True).status == 0
        r = ok_result(c.read(fh(ds_iod, 12, 3), (1 << 30) - 2, 16))
        assert r.data == bytes(2) + b"via the iod" + bytes(3) and not r.eof


def test_large_reads_are_sent_from_the_datafile_with_sendfile(ds_iod):
    data = os.urandom(4 << 20)
    with ds_iod.client("tcp", timeout=30) as iod:
        for off in range(0, len(data), 1 << 20):
            assert iod.call(Op.WRITE, ino=21, seed=1, offset=off, data=data[off:off + (1 << 20)],
                            stable=False).status == 0
    conn, c = session(ds_iod)
    with conn:
        handle = fh(ds_iod, 21, 1)
        got = b"".join(ok_result(c.read(handle, off, 1 << 20)).data
                       for off in range(0, len(data), 1 << 20))
        assert got == data
        tail = ok_result(c.read(handle, len(data) - 10, 1 << 20)).data
        assert tail == data[-10:] + bytes((1 << 20) - 10)
    # Counted once the reply is out, so possibly after the client has it:
    # asked until the last READ's count is in (every byte of data sent by
    # sendfile, the tail's 10 too; its zeros are not file data).
    counters = ds_iod.counters_now(want={"ds_sendfile_bytes": len(data) + 10})
    assert counters["ds_read_bytes"] == len(data) + (1 << 20)


def test_requests_in_flight_on_several_slots_are_all_answered(ds_iod):
    conn, c = session(ds_iod)
    with conn:
        for i in range(8):
            ok_result(c.write(fh(ds_iod, 30 + i, 1), 0, bytes([i]) * 100_000))
        sent = {}
        for i in range(8):
            args = nfs4.encode_compound(nfs4.COMPOUND4args(b"", 1, [
                c.sequence_op(slot=i), op(O.OP_PUTFH, nfs4.PUTFH4args(fh(ds_iod, 30 + i, 1))),
                op(O.OP_READ, nfs4.READ4args(nfs4.stateid4(0, bytes(12)), 0, 100_000))]))
            xid, message = call_message(args)
            conn.send(message)
            sent[xid] = i
        for _ in range(8):
            reply = rpc.decode_reply(conn.receive())
            i = sent.pop(reply.xid)
            res = nfs4.decode_compound_res(reply.body)
            assert ok_result(res).data == bytes([i]) * 100_000
        assert not sent


def test_refusals_over_the_wire(ds_iod):
    conn, c = session(ds_iod)
    with conn:
        good = fh(ds_iod, 40, 1)
        ok_result(c.write(good, 0, b"secret"))
        forged = dsfh.mint(type(ds_iod.keys)((0, b"z" * 32)), ino=40, seed=1, layout_gen=1,
                           minted=int(time.time() * 1000), client="127.0.0.1", write=True,
                           secure=False)
        other_file = bytearray(good)
        other_file[15] ^= 1                          # ino 41
        assert status(c.read(forged, 0, 6)) == nfsstat4.NFS4ERR_BADHANDLE
        assert status(c.read(bytes(other_file), 0, 6)) == nfsstat4.NFS4ERR_BADHANDLE
        sniffed = fh(ds_iod, 40, 1, client="10.1.2.3")
        assert status(c.read(sniffed, 0, 6)) == nfsstat4.NFS4ERR_ACCESS
        assert status(c.read(fh(ds_iod, 40, 1, secure=True), 0, 6)) == nfsstat4.NFS4ERR_ACCESS
        assert status(c.write(fh(ds_iod, 40, 1, write=False), 0, b"x")) == \
            nfsstat4.NFS4ERR_ACCESS
        assert status(c.seq(seqid=c.seqids[0] + 5)) == nfsstat4.NFS4ERR_SEQ_MISORDERED
        getattr_ = c.seq(op(O.OP_PUTFH, nfs4.PUTFH4args(good)),
                         op(O.OP_GETATTR, nfs4.GETATTR4args([1 << nfs4.FATTR4_SIZE])))
        assert status(getattr_) == nfsstat4.NFS4ERR_NOTSUPP

        # the file removed: unlinkd's PURGE reaches the iod, the handle is stale
        with ds_iod.client("tcp") as iod:
            assert iod.call(Op.PURGE, files=[(40, 1)]).status == 0
        assert status(c.read(good, 0, 6)) == nfsstat4.NFS4ERR_STALE
        assert status(c.write(good, 0, b"back")) == nfsstat4.NFS4ERR_STALE
        assert (40, 1) not in ds_iod.held()
        assert ok_result(c.read(fh(ds_iod, 40, 2), 0, 2)).data == bytes(2)   # another file
    # a secure export's handle works from a reserved port
    conn, c = session(ds_iod, reserved_port=True)
    with conn:
        assert status(c.read(fh(ds_iod, 40, 2, secure=True), 0, 2)) == nfsstat4.NFS4_OK


def test_the_metaserver_revokes_a_removed_file_an_expired_client_and_everything(ds_iod):
    with ds_iod.client("tcp") as iod:
        assert iod.call(Op.PING).ds_port == DS_PORT       # where the layouts send clients
        conn, c = session(ds_iod)
        with conn:
            removed, kept = fh(ds_iod, 60, 1), fh(ds_iod, 61, 1)
            time.sleep(0.01)             # the REVOKE is stamped after these were minted
            assert iod.call(Op.REVOKE, files=[(60, 1)]).status == 0
            assert status(c.read(removed, 0, 1)) == nfsstat4.NFS4ERR_STALE
            assert status(c.read(kept, 0, 1)) == nfsstat4.NFS4_OK
            assert iod.call(Op.REVOKE, clients=["127.0.0.1"]).status == 0
            assert status(c.read(kept, 0, 1)) == nfsstat4.NFS4ERR_STALE
            time.sleep(0.01)
            fresh = fh(ds_iod, 61, 1)    # the client's new lease, a new layout
            assert status(c.read(fresh, 0, 1)) == nfsstat4.NFS4_OK
            time.sleep(0.01)
            assert iod.call(Op.REVOKE, everything=True).status == 0
            assert status(c.read(fresh, 0, 1)) == nfsstat4.NFS4ERR_STALE


def test_a_restarted_iod_refuses_handles_minted_before_it_started(ds_iod):
    old = fh(ds_iod, 50, 1)
    ds_iod.restart()
    conn, c = session(ds_iod)
    with conn:
        assert status(c.read(old, 0, 1)) == nfsstat4.NFS4ERR_STALE
        assert status(c.read(fh(ds_iod, 50, 1), 0, 1)) == nfsstat4.NFS4_OK


def test_a_record_too_large_closes_only_that_connection(ds_iod):
    s = ds_iod.ns.inside(socket.create_connection, ("127.0.0.1", DS_PORT), 10)
    with s:
        s.sendall(struct.pack(">I", 0x80000000 | (64 << 20)))
        s.settimeout(10)
        assert s.recv(10) == b""
    conn, c = session(ds_iod)
    with conn:
        assert status(c.seq()) == nfsstat4.NFS4_OK
    assert ds_iod.counters_now()["ds_dropped_bad_stream"] == 1


def test_sigterm_stops_it_cleanly_with_clients_connected(ds_iod):
    conn, c = session(ds_iod)
    with conn:
        ok_result(c.write(fh(ds_iod, 70, 1), 0, b"x"))
        assert ds_iod.stop() == 0
    text = ds_iod.log_text()
    assert "pNFS data server (NFSv4.1, files layout) on 127.0.0.1:2049" in text
    assert "iod stopped" in text and "Traceback" not in text


def test_the_data_server_port_taken_is_one_clear_line(iods, ns):
    holder = ns.inside(socket.create_server, ("127.0.0.1", DS_PORT))
    with holder, pytest.raises(RuntimeError) as e:
        iods(extra_args=["--ds-port", str(DS_PORT)])
    assert "iod exited with 1" in str(e.value)
    assert ("ERROR iod: pNFS data server: cannot listen on 127.0.0.1:2049: Address already in "
            "use (--ds-port PORT to choose another, --ds-port off for none)") in str(e.value)


def test_by_default_the_data_server_is_on_the_iods_port_plus_1000(iods):
    """So that iods sharing a host (nfsp up) each get their own, and a stock
    client gets the direct path without anyone turning it on."""
    a, b = iods(), iods()
    for iod in (a, b):
        with iod.client("tcp") as c:
            assert c.call(Op.PING).ds_port == iod.port + 1000
        conn, c = session(iod, port=iod.port + 1000)
        with conn:
            ok_result(c.write(fh(iod, 90, 1), 0, b"default"))


def test_ds_port_off_serves_no_data_server_and_says_so(iods, ns):
    iod = iods(extra_args=["--ds-port", "off"])
    with iod.client("tcp") as c:
        assert c.call(Op.PING).ds_port is None
    with pytest.raises(ConnectionRefusedError):
        connect(iod, port=iod.port + 1000)


def test_the_data_server_may_listen_elsewhere_than_the_iod(iods, ns):
    """nfsp up --bind 0.0.0.0: the iod talks to nfspd on loopback, its data
    server to clients on every interface."""
    iod = iods(extra_args=["--ds-listen", "0.0.0.0"])
    assert f"pNFS data server (NFSv4.1, files layout) on 0.0.0.0:{iod.port + 1000}" in \
        iod.log_text()
    conn, c = session(iod, port=iod.port + 1000)
    with conn:
        ok_result(c.write(fh(iod, 91, 1), 0, b"anywhere"))


def test_the_metrics_page_counts_the_data_servers_work_and_refusals(iods, ns):
    iod = iods(extra_args=["--ds-port", str(DS_PORT), "--metrics", "127.0.0.1:9111"])
    conn, c = session(iod)
    with conn:
        ok_result(c.write(fh(iod, 80, 1), 0, b"x" * 5000))
        ok_result(c.read(fh(iod, 80, 1), 0, 3000))
        ok_result(c.commit(fh(iod, 80, 1)))
        assert status(c.read(fh(iod, 80, 1, client="10.9.9.9"), 0, 1)) == nfsstat4.NFS4ERR_ACCESS
        assert status(c.read(b"forged", 0, 1)) == nfsstat4.NFS4ERR_BADHANDLE
    iod.counters_now(want={"ds_refused_badhandle": 1, "ds_commit": 1})
    _, _, text = scrape(ns, 9111)
    assert sample(text, 'nfsp_iod_ds_operations_total{op="read"}') == 1
    assert sample(text, 'nfsp_iod_ds_operations_total{op="write"}') == 1
    assert sample(text, 'nfsp_iod_ds_operations_total{op="commit"}') == 1
    assert sample(text, "nfsp_iod_ds_written_bytes_total") == 5000
    assert sample(text, "nfsp_iod_ds_read_bytes_total") == 3000
    assert sample(text, "nfsp_iod_ds_sendfile_bytes_total") == 3000
    assert sample(text, 'nfsp_iod_ds_refused_total{reason="client",status="NFS4ERR_ACCESS"}') == 1
    assert sample(text, 'nfsp_iod_ds_refused_total{reason="badhandle",'
                        'status="NFS4ERR_BADHANDLE"}') == 1
    assert sample(text, "nfsp_iod_ds_connections_total") == 1


def port_of(netaddr):
    """The port of a universal address (h1.h2.h3.h4.p1.p2)."""
    _, hi, lo = netaddr.na_r_addr.decode().rsplit(".", 2)
    return int(hi) << 8 | int(lo)


def test_a_striped_file_written_as_its_layout_says_is_where_the_iods_keep_its_stripes(iods):
    """A client following the files layout the metaserver will hand out
    (common/fileslayout.py) writes each stripe to the iod NFSP's striping puts
    it on, at its real offset: the iod protocol reads it back from there."""
    ports = (DS_PORT, DS_PORT + 100)
    cluster = [iods(extra_args=["--ds-port", str(p)]) for p in ports]
    unit, seed, ino = 65536, 12345, 90
    addresses = [("127.0.0.1", p) for p in ports]
    layout = decode(nfs4.nfsv4_1_file_layout4, fileslayout.layout_body(
        fileslayout.device_id(1, addresses), unit, seed, 2, fh(cluster[0], ino, seed)))
    device = decode(nfs4.nfsv4_1_file_layout_ds_addr4, fileslayout.ds_addr_body(addresses))
    handle = layout.nfl_fh_list[0]
    sessions = {}
    for entry in device.nflda_multipath_ds_list:
        port = port_of(entry[0])
        sessions[port] = session(cluster[ports.index(port)], port=port)

    def data_server(offset):        # RFC 8881 13.4.1, as Linux computes it
        j = (offset // unit + layout.nfl_first_stripe_index) % len(device.nflda_stripe_indices)
        return sessions[port_of(device.nflda_multipath_ds_list[
            device.nflda_stripe_indices[j]][0])][1]

    data = os.urandom(8 * unit + 1000)
    chunks = [(off, data[off:off + unit]) for off in range(0, len(data), unit)]
    for off, chunk in chunks:
        ok_result(data_server(off).write(handle, off, chunk))
    for off, chunk in chunks:
        got = ok_result(data_server(off).read(handle, off, unit)).data
        assert got == chunk + bytes(unit - len(chunk))
    for conn, _ in sessions.values():
        conn.close()
    for i, (off, chunk) in enumerate(chunks):
        holder, other = cluster[(seed + i) % 2], cluster[(seed + i + 1) % 2]
        with holder.client("tcp") as c:
            assert c.call(Op.READ, ino=ino, seed=seed, offset=off, count=len(chunk)).data == chunk
        with other.client("tcp") as c:          # sparse: the other iod has a hole there
            assert c.call(Op.READ, ino=ino, seed=seed, offset=off,
                          count=len(chunk)).data == bytes(len(chunk))
