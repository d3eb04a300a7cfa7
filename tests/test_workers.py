"""`nfspd --workers N` (nfspd/workers.py): NFSv3 READDIR and READDIRPLUS
answered by worker processes, exactly as nfspd itself answers them; real
daemons in a private namespace, over UDP and TCP."""

import os
import signal

import pytest

from common import nfs3, rpc
from common.nfs3 import NFSPROC3, nfsstat3
from common.xdr import Unpacker, encode
from nfspd import admin
from tools.dev import nfsclient
from tools.dev.netns import wait_until
from tools.rpcclient import RpcClient


def start(nfspd, workers, **kw):
    d = nfspd(extra_args=["--workers", str(workers)], **kw)
    if workers:
        wait_until(lambda: None not in workers_of(d)["pids"], 20, what="workers ready")
    return d


def workers_of(d):
    return admin.request(admin.socket_path(d.state))["status"]["workers"]


def connect(ns, d, transport, uid=0):
    return ns.inside(nfsclient.connect, "127.0.0.1", d.export, transport=transport,
                     uid=uid, gid=uid)


def raw_listing(c, fh, proc, xid):
    """The reply bytes (RPC header included) of every page listing ``fh``."""
    pages, cookie, verf = [], 0, b"\0" * 8
    while True:
        if proc == NFSPROC3.READDIRPLUS:
            args = encode(nfs3.READDIRPLUS3args,
                          nfs3.READDIRPLUS3args(fh, cookie, verf, 1024, 8192))
            res_type = nfs3.READDIRPLUS3res
        else:
            args = encode(nfs3.READDIR3args, nfs3.READDIR3args(fh, cookie, verf, 1024))
            res_type = nfs3.READDIR3res
        xid += 1
        raw = c.rpc.call_raw(rpc.encode_call(xid, 100003, 3, proc, args, c.rpc.cred), xid)
        pages.append(raw)
        res = res_type.unpack(Unpacker(rpc.decode_reply(raw).body))
        assert res.disc == nfsstat3.NFS3_OK
        body = res.body
        if body.reply.eof:
            return pages
        cookie, verf = body.reply.entries[-1].cookie, body.cookieverf


def populate(c, root, export):
    """A directory of regular files (metafiles: made over NFS), a
    subdirectory and a symlink; its handle."""
    big = c.ok(NFSPROC3.MKDIR, nfs3.MKDIR3args(nfs3.diropargs3(root, b"big"),
                                              nfs3.sattr3.unchanged())).obj
    for i in range(150):
        f = c.create(big, b"file-%03d" % i)
        if i % 10 == 0:
            c.write_all(f, b"x" * i)
    c.ok(NFSPROC3.MKDIR, nfs3.MKDIR3args(nfs3.diropargs3(big, b"sub"), nfs3.sattr3.unchanged()))
    os.symlink("file-001", os.path.join(export, "big", "link"))
    return big


def entries(res):
    assert res.disc == nfsstat3.NFS3_OK
    return [(e.name, e.cookie, e.name_handle) for e in res.body.reply.entries]


def readdirplus(c, fh):
    return c.call(NFSPROC3.READDIRPLUS, nfs3.READDIRPLUS3args(fh, 0, b"\0" * 8, 4096, 32768))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_worker_answers_byte_for_byte_what_nfspd_answers(ns, nfspd, transport):
    d = start(nfspd, 0)
    c, root = connect(ns, d, transport)
    big = populate(c, root, d.export)
    # Listed once first: a directory's first read after a change sets its atime.
    raw_listing(c, big, NFSPROC3.READDIRPLUS, 1000)
    mine = {p: raw_listing(c, big, p, 1000) for p in (NFSPROC3.READDIRPLUS, NFSPROC3.READDIR)}
    assert len(mine[NFSPROC3.READDIRPLUS]) > 1  # cookies and verifiers are compared too
    c.rpc.close()
    d.stop()
    d.extra_args = ["--workers", "1"]
    d.start()
    wait_until(lambda: None not in workers_of(d)["pids"], 20, what="workers ready")
    c, _ = connect(ns, d, transport)
    theirs = {p: raw_listing(c, big, p, 1000) for p in mine}
    assert theirs == mine
    assert workers_of(d)["offloaded"] == sum(map(len, theirs.values()))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_export_rules_and_their_reload_reach_the_workers(ns, nfspd, transport):
    d = start(nfspd, 1, clients="127.0.0.0/8(rw,root_squash,insecure)")
    private = os.path.join(d.export, "private")
    os.makedirs(private, mode=0o700)
    open(os.path.join(private, "secret"), "w").close()
    c, root = connect(ns, d, transport)
    fh = c.lookup(root, b"private")  # LOOKUP: nfspd itself
    # root is squashed to nobody, who may not read a 0700 directory of root's.
    assert readdirplus(c, fh).disc == nfsstat3.NFS3ERR_ACCES
    assert c.call(NFSPROC3.READDIR, nfs3.READDIR3args(fh, 0, b"\0" * 8, 4096)).disc \
        == nfsstat3.NFS3ERR_ACCES
    assert workers_of(d)["offloaded"] == 2

    def reload(clients):
        with open(d.exports, "w") as f:
            f.write(f"{d.export} {clients}\n")
        n = d.log_text().count("exports reloaded")
        d.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: d.log_text().count("exports reloaded") > n, 10, what="reload")

    reload("127.0.0.0/8(rw,no_root_squash,insecure)")
    res = readdirplus(c, fh)
    assert res.disc == nfsstat3.NFS3_OK
    assert b"secret" in [e.name for e in res.body.reply.entries]
    reload("127.0.0.2(rw,no_root_squash,insecure)")  # not us any more
    assert readdirplus(c, fh).disc == nfsstat3.NFS3ERR_STALE
    assert c.call(NFSPROC3.GETATTR, nfs3.GETATTR3args(fh)).disc == nfsstat3.NFS3ERR_STALE
    assert workers_of(d)["offloaded"] == 4


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_killed_worker_is_replaced_and_calls_keep_being_answered(ns, nfspd, transport):
    d = start(nfspd, 1)
    c, root = connect(ns, d, transport)
    big = populate(c, root, d.export)
    before = entries(readdirplus(c, big))
    (pid,) = workers_of(d)["pids"]
    os.kill(pid, signal.SIGKILL)
    # A call handed to it before nfspd noticed would be lost (the client
    # retransmits); once nfspd knows, it answers them itself until the
    # replacement is ready.
    wait_until(lambda: workers_of(d)["pids"][0] != pid, 20, what="the worker's end noticed")
    assert entries(readdirplus(c, big)) == before
    wait_until(lambda: workers_of(d)["pids"][0] not in (None, pid), 20, what="a new worker")
    offloaded = workers_of(d)["offloaded"]
    assert entries(readdirplus(c, big)) == before
    status = workers_of(d)
    assert status["offloaded"] == offloaded + 1 and status["restarts"] == 1


def test_workers_stop_with_nfspd(ns, nfspd):
    d = start(nfspd, 2)
    pids = workers_of(d)["pids"]
    d.stop()
    wait_until(lambda: not any(os.path.exists(f"/proc/{p}") and _alive(p) for p in pids), 10,
               what="workers gone")


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_worker_refuses_an_unprivileged_port_on_a_secure_export(ns, nfspd, transport):
    d = start(nfspd, 1, clients="127.0.0.0/8(rw,no_root_squash)")
    root = ns.inside(nfsclient.mount_export, "127.0.0.1", d.export, transport=transport)
    rpcc = ns.inside(RpcClient, "127.0.0.1", 2049, transport, cred=RpcClient.default_cred(0, 0),
                     reserved_port=False)
    assert readdirplus(nfsclient.Nfs3(rpcc), root).disc == nfsstat3.NFS3ERR_PERM
    rpcc = ns.inside(RpcClient, "127.0.0.1", 2049, transport, cred=RpcClient.default_cred(0, 0),
                     reserved_port=True)
    assert readdirplus(nfsclient.Nfs3(rpcc), root).disc == nfsstat3.NFS3_OK
    assert workers_of(d)["offloaded"] == 2


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_retransmitted_changes_get_the_cached_reply_with_workers_running(ns, nfspd, transport):
    # The REMOVE is nfspd's; over UDP the CREATE is a worker's
    # (tests/test_workers_namespace.py), over TCP nfspd's. Either way a
    # retransmission finds its first reply in the cache of whoever ran it,
    # whatever else the workers are answering in between.
    d = start(nfspd, 2)
    c, root = connect(ns, d, transport)
    c.create(root, b"victim")
    remove = rpc.encode_call(4242, 100003, 3, NFSPROC3.REMOVE, encode(
        nfs3.REMOVE3args, nfs3.REMOVE3args(nfs3.diropargs3(root, b"victim"))), c.rpc.cred)
    how = nfs3.createhow3(nfs3.createmode3.GUARDED, nfs3.sattr3.unchanged())
    create = rpc.encode_call(4343, 100003, 3, NFSPROC3.CREATE, encode(
        nfs3.CREATE3args, nfs3.CREATE3args(nfs3.diropargs3(root, b"new"), how)), c.rpc.cred)
    offloaded = workers_of(d)["offloaded"]
    replies = {}
    for msg, xid in ((remove, 4242), (create, 4343)):
        first = c.rpc.call_raw(msg, xid)
        assert entries(readdirplus(c, root))  # a worker's answer in between
        replies[xid] = (first, c.rpc.call_raw(msg, xid))
    for first, again in replies.values():
        assert again == first  # byte for byte: the cached reply, not a second run
    assert nfs3.REMOVE3res.unpack(Unpacker(rpc.decode_reply(replies[4242][0]).body)).disc == \
        nfsstat3.NFS3_OK
    assert nfs3.CREATE3res.unpack(Unpacker(rpc.decode_reply(replies[4343][0]).body)).disc == \
        nfsstat3.NFS3_OK
    assert workers_of(d)["offloaded"] >= offloaded + 2
