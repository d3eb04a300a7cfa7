"""Relayed READs under load: many 1 MiB READs in flight over one TCP
connection to an nfspd with two iods, each READ split into stripe READs on
both iods' links at once.

A link bounds the stripe requests in flight on it (IodLink max_inflight, 64
by default). A 1 MiB READ over 64 KiB stripes is 8 requests on each of two
iods; 16 such READs ask 128 of each link. The bound must only make them take
turns: every READ is answered with its data, none with NFS3ERR_JUKEBOX (what
nfspd answers when an iod does not answer in time). It once did not: a READ
kept the link's tokens of its answered pieces until its last piece was
answered, so READs each holding some of a link's tokens and waiting for
more waited on one another until nfspd's 10 s timeout, then got JUKEBOX.
Smaller stripe units (more pieces per READ) make that certain, not likely.

Real processes in the test's network namespace: the iods, nfspd, and a
client of our own that keeps ``WINDOW`` READs outstanding on one
connection (tools/dev/nfsclient waits for each answer before the next call).
"""

import itertools
import random
import socket

import pytest

from common import nfs3, rpc
from common.nfs3 import NFSPROC3, nfsstat3
from common.xdr import Unpacker, encode
from tools.rpcclient import RpcClient

pytestmark = pytest.mark.netns

MIB = 1 << 20
WINDOW = 16
FILE_SIZE = 16 * MIB
# Far beyond nfspd's own wait for an iod (10 s, then JUKEBOX): a stalled
# relay shows as JUKEBOX, and a server that answers nothing at all ends the
# test instead of hanging it.
REPLY_WAIT = 120.0


def relayed_reads(fh, offsets, count, window):
    """READ ``count`` bytes at each offset over one TCP connection, keeping
    ``window`` calls outstanding (a new one as each answer comes). Returns
    [(offset, rpc.Reply, READ3res or None)] in answer order, stopping at
    the first answer that is not a successful READ."""
    cred = RpcClient.default_cred(0, 0, [0])
    todo = iter(offsets)
    xids = itertools.count(random.getrandbits(31))
    pending = {}
    answers = []
    reader = rpc.RecordReader(count + 64 * 1024)
    with socket.create_connection(("127.0.0.1", 2049), timeout=REPLY_WAIT) as sock:

        def send_next():
            offset = next(todo, None)
            if offset is None:
                return
            xid = next(xids) & 0xFFFFFFFF
            args = encode(nfs3.READ3args, nfs3.READ3args(fh, offset, count))
            sock.sendall(rpc.encode_record(
                rpc.encode_call(xid, nfs3.NFS_PROGRAM, 3, NFSPROC3.READ, args, cred)))
            pending[xid] = offset

        for _ in range(window):
            send_next()
        while pending:
            data = sock.recv(1 << 20)
            assert data, f"nfspd closed the connection with {len(pending)} READs unanswered"
            for record in reader.feed(data):
                reply = rpc.decode_reply(record)
                offset = pending.pop(reply.xid)
                res = None
                if reply.accepted and reply.stat == rpc.accept_stat.SUCCESS:
                    res = nfs3.READ3res.unpack(Unpacker(reply.body))
                answers.append((offset, reply, res))
                if res is None or res.disc != nfsstat3.NFS3_OK:
                    return answers
                send_next()
    return answers


@pytest.mark.parametrize("stripe_unit, passes", [
    (65536, 4),   # the default unit: 8 stripe READs per iod per READ
    (32768, 4),   # 16 per iod per READ: a link's 64 are taken by 4 READs of the 16
    (4096, 1),    # 128 per iod per READ: more than a link's 64 for one READ alone
], ids=["64KiB-stripes", "32KiB-stripes", "4KiB-stripes"])
def test_relayed_reads_in_flight_all_answered_with_their_data(cluster, stripe_unit, passes):
    c = cluster(n_iods=2, stripe_unit=stripe_unit)
    client, root = c.connect(transport="tcp")
    fh = client.create(root, b"big")
    content = random.Random(stripe_unit).randbytes(FILE_SIZE)
    # Writes of a few stripes each, one at a time: only the READs are under test.
    client.write_all(fh, content, chunk=128 * 1024)
    assert client.getattr(fh).size == FILE_SIZE

    offsets = [i * MIB for i in range(FILE_SIZE // MIB)] * passes
    answers = c.ns.inside(relayed_reads, fh, offsets, MIB, WINDOW)

    for offset, reply, res in answers:
        assert reply.accepted and reply.stat == rpc.accept_stat.SUCCESS, (offset, reply)
        assert res.disc != nfsstat3.NFS3ERR_JUKEBOX, \
            f"READ at {offset} answered JUKEBOX: nfspd waited out its iods"
        assert res.disc == nfsstat3.NFS3_OK, (offset, res.disc)
        body = res.body
        assert body.count == MIB and body.data == content[offset:offset + MIB], \
            f"READ at {offset}: wrong data"
        assert body.eof == (offset + MIB == FILE_SIZE)
    assert len(answers) == len(offsets)
    assert "Traceback" not in c.nfspd_log()
