"""The data path end to end: a real nfspd with --iods and real iod processes
(separate data directories) in a private network namespace, driven by the
project's client (NFSv2/UDP, NFSv3/UDP, NFSv3/TCP) and libnfs's nfs-cp and
nfs-cat. Over UDP the iods answer READ and WRITE themselves (spoofed from
127.0.0.1:2049; checked through their counters); over TCP the metaserver
relays."""

import hashlib
import json
import os
import shutil
import signal
import socket
import threading

import pytest

from common import nfs2, nfs3
from common.nfs2 import NFSPROC
from common.nfs3 import NFSPROC3, nfsstat3, stable_how
from nfspd import admin
from tests.support.faults import NfQueue
from tools.dev.netns import wait_until
from tools.dev.nfsclient import NfsError
from tools.rpcclient import RpcTimeout

pytestmark = pytest.mark.netns

U = 16384  # a small stripe unit: many stripes with little data


def patterned(size, salt=b""):
    """Deterministic bytes that differ at every offset (a misplaced stripe shows)."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(salt + i.to_bytes(8, "big")).digest()
        i += 1
    return bytes(out[:size])


# --- NFSv3 and NFSv2 helpers on top of tools/dev/nfsclient --------------------------


def v3_write(c, fh, offset, data, chunk, stable=stable_how.FILE_SYNC):
    res = None
    for off in range(0, len(data), chunk):
        part = data[off:off + chunk]
        res = c.write(fh, offset + off, part, stable)
        assert res.count == len(part)
    return res


def v3_read(c, fh, offset, count, chunk):
    """Reads as a client does: continue after a short read, stop at eof."""
    out = bytearray()
    while len(out) < count:
        data, eof = c.read(fh, offset + len(out), min(chunk, count - len(out)))
        out += data
        if eof:
            break
        assert data, "a short read of nothing before EOF"
    return bytes(out)


def v3_setsize(c, fh, size):
    sattr = nfs3.sattr3.unchanged().replace(size=size)
    c.ok(NFSPROC3.SETATTR, nfs3.SETATTR3args(fh, sattr, None))


def v3_commit(c, fh):
    return c.ok(NFSPROC3.COMMIT, nfs3.COMMIT3args(fh, 0, 0)).verf


def v2_create(c, root, name):
    res = c.call(NFSPROC.CREATE, nfs2.createargs(nfs2.diropargs(root, name),
                                                 nfs2.sattr_unset().replace(mode=0o644)))
    assert res.disc == nfs2.nfsstat.NFS_OK
    return res.body.file


def v2_write(c, fh, offset, data, chunk=8192):
    res = None
    for off in range(0, len(data), chunk):
        res = c.call(NFSPROC.WRITE, nfs2.writeargs(fh, 0, offset + off, 0,
                                                   data[off:off + chunk]))
        assert res.disc == nfs2.nfsstat.NFS_OK, res.disc
    return res and res.body


def v2_read(c, fh, offset, count, chunk=8192):
    out = bytearray()
    while len(out) < count:
        res = c.call(NFSPROC.READ, nfs2.readargs(fh, offset + len(out),
                                                 min(chunk, count - len(out)), 0))
        assert res.disc == nfs2.nfsstat.NFS_OK, res.disc
        if not res.body.data:
            break
        out += res.body.data
    return bytes(out)


def spoofed(c):
    return sum(c.iod_counters(i).get("spoofed_datagrams", 0) for i in range(len(c.iods)))


# --- byte-exact round trips -------------------------------------------------------

SIZES = [0, 1, U - 1, U, U + 1, 2 * U - 1, 3 * U + 5, 7 * U + 4097]


@pytest.mark.parametrize("vers, transport", [(3, "udp"), (3, "tcp"), (2, "udp")])
def test_files_around_stripe_boundaries_read_back_byte_exact(cluster, vers, transport):
    c = cluster(n_iods=3, stripe_unit=U)
    client, root = c.connect(vers, transport)
    if vers == 3:
        # Over UDP the transfer size divides the stripe unit: aligned reads and
        # writes stay on one iod. Over TCP the relay takes up to 1 MiB.
        info = client.ok(NFSPROC3.FSINFO, nfs3.FSINFO3args(root))
        io = U if transport == "udp" else 1 << 20
        assert (info.rtmax, info.rtpref, info.wtmax, info.wtpref) == (io, io, io, io)
    before = spoofed(c)
    files = {}
    for size in SIZES:
        name = f"f{size}".encode()
        data = patterned(size, name)
        if vers == 3:
            fh = client.create(root, name)
            # 12 KiB writes: aligned ones stay in a stripe (forwarded over UDP),
            # every fourth crosses a boundary (relayed).
            v3_write(client, fh, 0, data, 12288)
            assert client.getattr(fh).size == size
        else:
            fh = v2_create(client, root, name)
            v2_write(client, fh, 0, data, 8192 - 512)   # unaligned: some cross
        files[name] = (fh, data)
    for name, (fh, data) in files.items():
        if vers == 3:
            # Whole, in odd-sized pieces, and from odd offsets.
            assert v3_read(client, fh, 0, len(data) + 100, 32768) == data
            assert v3_read(client, fh, 3, len(data), 7000) == data[3:]
        else:
            assert v2_read(client, fh, 0, len(data) + 100) == data
            assert v2_read(client, fh, 5, len(data), 5000) == data[5:]
    if transport == "udp":
        # The iods answered the client themselves.
        assert spoofed(c) > before + 20
    else:
        assert spoofed(c) == before
    # The data is spread over every iod.
    stored = c.datafiles()
    assert all(stored[i] for i in range(3))


def test_same_bytes_whichever_transport_wrote_or_reads(cluster):
    c = cluster(n_iods=2, stripe_unit=U)
    udp, root = c.connect(3, "udp")
    tcp, _ = c.connect(3, "tcp")
    v2, root2 = c.connect(2, "udp")
    data = patterned(5 * U + 333)
    fh = udp.create(root, b"mixed")
    v3_write(udp, fh, 0, data[:2 * U], 8192)
    v3_write(tcp, fh, 2 * U, data[2 * U:4 * U], 1 << 20)
    fh2 = fh + bytes(32 - len(fh))  # an NFSv2 handle is the v3 one, zero-padded
    v2_write(v2, fh2, 4 * U, data[4 * U:])
    assert v3_read(udp, fh, 0, len(data), 32768) == data
    assert v3_read(tcp, fh, 0, len(data), 1 << 20) == data
    assert v2_read(v2, fh2, 0, len(data)) == data


def test_sparse_file_beyond_4_gib(cluster):
    c = cluster(n_iods=3, stripe_unit=65536)
    client, root = c.connect(3, "udp")
    tcp, _ = c.connect(3, "tcp")
    fh = client.create(root, b"big")
    far = (5 << 30) + 12345
    tail = patterned(70000, b"tail")
    v3_write(client, fh, 1000, b"head", 4)
    v3_write(tcp, fh, far, tail, 1 << 20)
    assert client.getattr(fh).size == far + len(tail)
    for c3, chunk in ((client, 32768), (tcp, 1 << 20)):
        assert v3_read(c3, fh, 0, 2000, chunk) == bytes(1000) + b"head" + bytes(996)
        assert v3_read(c3, fh, (3 << 30) - 10, 20000, chunk) == bytes(20000)  # a hole
        assert v3_read(c3, fh, far - 5, 70010, chunk) == bytes(5) + tail
        data, eof = c3.read(fh, far + len(tail), 100)
        assert data == b"" and eof
    # The datafiles are sparse: 5 GiB of holes take no space.
    for iod in c.iods:
        for top, _, names in os.walk(iod.data_dir):
            for name in names:
                assert os.stat(os.path.join(top, name)).st_blocks * 512 < 4 << 20


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_truncate_shrink_then_grow_reads_zeros(cluster, transport):
    c = cluster(n_iods=3, stripe_unit=U)
    client, root = c.connect(3, transport)
    data = patterned(6 * U)
    fh = client.create(root, b"t")
    v3_write(client, fh, 0, data, 8192)
    v3_setsize(client, fh, 100)
    assert client.getattr(fh).size == 100
    v3_setsize(client, fh, 6 * U)
    assert v3_read(client, fh, 0, 6 * U, 32768) == data[:100] + bytes(6 * U - 100)
    # Shrunk, then grown by a write far out: still zeros in between.
    v3_setsize(client, fh, 10)
    v3_write(client, fh, 5 * U, b"x" * 10, 10)
    assert v3_read(client, fh, 0, 5 * U + 10, 32768) == data[:10] + bytes(5 * U - 10) + b"x" * 10


def test_hard_links_share_the_data_and_overwrite_in_place(cluster):
    c = cluster(n_iods=2, stripe_unit=U)
    client, root = c.connect(3, "udp")
    data = bytearray(patterned(4 * U))
    fh = client.create(root, b"a")
    v3_write(client, fh, 0, bytes(data), 16384)
    client.ok(NFSPROC3.LINK, nfs3.LINK3args(fh, nfs3.diropargs3(root, b"b")))
    fh_b = client.lookup(root, b"b")
    # Overwrite a range across a stripe boundary through the other name.
    patch = b"P" * 5000
    v3_write(client, fh_b, U - 2000, patch, 5000)
    data[U - 2000:U + 3000] = patch
    assert v3_read(client, fh, 0, 4 * U, 32768) == bytes(data)
    assert client.getattr(fh).nlink == 2
    client.ok(NFSPROC3.REMOVE, nfs3.REMOVE3args(nfs3.diropargs3(root, b"a")))
    assert v3_read(client, fh_b, 0, 4 * U, 32768) == bytes(data)


def test_concurrent_writers_on_disjoint_ranges(cluster):
    c = cluster(n_iods=3, stripe_unit=U)
    first, root = c.connect(3, "udp")
    fh = first.create(root, b"shared")
    writers = [c.connect(3, "udp" if i % 2 else "tcp")[0] for i in range(4)]
    span = 5 * U + 1000  # not stripe-aligned: neighbours share stripes
    parts = [patterned(span, bytes([i])) for i in range(4)]
    errors = []

    def run(i):
        try:
            v3_write(writers[i], fh, i * span, parts[i], 6000, stable_how.UNSTABLE)
            v3_commit(writers[i], fh)
        except Exception as e:  # reported below
            errors.append(e)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert first.getattr(fh).size == 4 * span
    assert v3_read(first, fh, 0, 4 * span, 32768) == b"".join(parts)


# --- a client nobody here wrote ---------------------------------------------------

needs_libnfs = pytest.mark.skipif(not (shutil.which("nfs-cp") and shutil.which("nfs-cat")),
                                  reason="needs libnfs-utils (tools/install-deps --test)")


@needs_libnfs
def test_libnfs_copies_in_and_out_byte_exact(cluster, tmp_path):
    c = cluster(n_iods=4, stripe_unit=65536)
    for size in (0, 65535, 65537, 4 * 65536, 3 * 1024 * 1024 + 17):
        src = tmp_path / f"src{size}"
        src.write_bytes(os.urandom(size))
        url = f"nfs://127.0.0.1{c.export}/f{size}"
        c.ns.run(["nfs-cp", str(src), url], check=True)
        out = tmp_path / f"out{size}"
        c.ns.run(["nfs-cp", url, str(out)], check=True)
        assert out.read_bytes() == src.read_bytes()
        cat = c.ns.run(["nfs-cat", url], check=True, text=False)
        assert cat.stdout == src.read_bytes()
    # The metafile stays small (one block, a hole past its record, its length
    # telling the size); the data is on the iods.
    st = os.stat(os.path.join(c.export, "f3145745"))
    assert st.st_blocks * 512 <= 4096 and st.st_size == 64 + 3145745
    assert all(c.datafiles()[i] for i in range(4))


# --- failures ---------------------------------------------------------------------


def kill(iod):
    os.kill(iod.pid, signal.SIGKILL)
    iod.stop()


def test_iod_down_gets_jukebox_for_its_stripes_only_and_is_logged_once(cluster):
    c = cluster(n_iods=2, stripe_unit=U)
    udp, root = c.connect(3, "udp", timeout=3.0)
    tcp, _ = c.connect(3, "tcp", timeout=10.0)
    fh = udp.create(root, b"f")
    data = patterned(16 * U)
    v3_write(udp, fh, 0, data, 16384)
    verf = v3_commit(udp, fh)
    kill(c.iods[1])
    wait_until(lambda: "127.0.0.1:2051 (#1) is unavailable" in c.nfspd_log(), 10,
               what="nfspd noticing the iod is gone")
    for client in (udp, tcp):
        # iod 0's half of the stripes still reads right; iod 1's is JUKEBOX,
        # never data the iod did not send.
        served = [s for s in range(16) if _reads(client, fh, s * U, data)]
        assert len(served) == 8
        down = next(s for s in range(16) if s not in served)
        for call in (lambda: client.write(fh, down * U, b"z" * 100, stable_how.FILE_SYNC),
                     lambda: client.read(fh, down * U + 5, 10),
                     lambda: v3_commit(client, fh)):
            with pytest.raises(NfsError) as e:
                call()
            assert e.value.status == nfsstat3.NFS3ERR_JUKEBOX
    assert c.nfspd_log().count("(#1) is unavailable") == 1
    c.iods[1].start()
    wait_until(lambda: "(#1) is back" in c.nfspd_log(), 15, what="nfspd seeing the iod back")
    assert v3_read(udp, fh, 0, 16 * U, 32768) == data
    assert v3_commit(tcp, fh) != verf
    assert c.nfspd_log().count("(#1) is back") == 1


def test_iod_killed_and_restarted_during_a_write_stream(cluster):
    """A client streams UNSTABLE writes and retries what gets JUKEBOX or no
    answer, as a hard mount does; meanwhile an iod is killed and restarted.
    The COMMIT verifier tells the client to send everything again, and then
    the data is intact."""
    c = cluster(n_iods=2, stripe_unit=U)
    udp, root = c.connect(3, "udp", timeout=2.0)
    tcp, _ = c.connect(3, "tcp", timeout=10.0)
    fh = udp.create(root, b"stream")
    data = patterned(64 * U)
    first_verf = v3_commit(udp, fh)
    progress = threading.Event()
    result = {}

    def retrying(fn, *args):
        for _ in range(200):
            try:
                return fn(*args)
            except NfsError as e:
                if e.status != nfsstat3.NFS3ERR_JUKEBOX:
                    raise
            except RpcTimeout:
                pass
            threading.Event().wait(0.1)
        raise AssertionError("no progress after 200 tries")

    def stream():
        try:
            rounds = 0
            while True:
                rounds += 1
                verfs = set()
                for off in range(0, len(data), 8192):
                    verfs.add(retrying(udp.write, fh, off, data[off:off + 8192],
                                       stable_how.UNSTABLE).verf)
                    if off == 16 * U:
                        progress.set()
                final = retrying(v3_commit, udp, fh)
                if verfs == {final}:
                    break
                assert rounds < 5
            result["verf"], result["rounds"] = final, rounds
        except BaseException as e:  # reported by the main thread
            result["error"] = e
            progress.set()
    t = threading.Thread(target=stream)
    t.start()
    assert progress.wait(60)
    kill(c.iods[0])
    c.iods[0].start()
    t.join(180)
    assert not t.is_alive()
    assert "error" not in result, result.get("error")
    assert result["verf"] != first_verf
    assert v3_read(udp, fh, 0, len(data), 32768) == data
    assert v3_read(tcp, fh, 0, len(data), 1 << 20) == data


def _reads(client, fh, offset, data):
    try:
        got, _ = client.read(fh, offset, 100)
    except NfsError as e:
        assert e.status == nfsstat3.NFS3ERR_JUKEBOX
        return False
    assert got == data[offset:offset + 100]
    return True


def test_nfsv2_gets_no_reply_while_an_iod_is_down(cluster):
    c = cluster(n_iods=1, stripe_unit=U)
    v2, root = c.connect(2, "udp", timeout=1.5)
    fh = v2_create(v2, root, b"v2")
    v2_write(v2, fh, 0, b"hello" * 1000)
    kill(c.iods[0])
    wait_until(lambda: "(#0) is unavailable" in c.nfspd_log(), 10, what="nfspd noticing")
    with pytest.raises(RpcTimeout):
        v2.call(NFSPROC.READ, nfs2.readargs(fh, 0, 100, 0))
    c.iods[0].start()
    wait_until(lambda: "(#0) is back" in c.nfspd_log(), 15, what="nfspd seeing the iod back")
    assert v2_read(v2, fh, 0, 5000) == b"hello" * 1000


def move_to_a_small_disk(c, ns, index, size="1m"):
    """Restart iod ``index`` with its data on a tmpfs of ``size``."""
    iod = c.iods[index]
    iod.stop()
    small = os.path.join(c.workdir, f"small{index}")
    os.makedirs(small)
    # Mounted in the namespace's own mount namespace: copy in there too.
    ns.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", small], check=True)
    ns.run(["cp", "-a", iod.data_dir, os.path.join(small, "data")], check=True)
    iod.data_dir = os.path.join(small, "data")
    iod.start()
    wait_until(lambda: f"(#{index}) is back" in c.nfspd_log(), 15, what="iod back")


def test_full_iod_disk_is_nospc_and_damages_nothing(cluster, ns):
    c = cluster(n_iods=2, stripe_unit=U)
    client, root = c.connect(3, "udp")
    tcp, _ = c.connect(3, "tcp")
    kept = patterned(4 * U, b"kept")
    fh = client.create(root, b"kept")
    v3_write(client, fh, 0, kept, 16384)
    move_to_a_small_disk(c, ns, 1)
    big = client.create(root, b"big")
    statuses = set()
    for client3, chunk in ((client, 16384), (tcp, 1 << 20)):
        try:
            v3_write(client3, big, 0, patterned(4 << 20), chunk)
        except NfsError as e:
            statuses.add(e.status)
    assert statuses == {nfsstat3.NFS3ERR_NOSPC}
    # What was written before is intact, through both paths.
    assert v3_read(client, fh, 0, 4 * U, 32768) == kept
    assert v3_read(tcp, fh, 0, 4 * U, 1 << 20) == kept
    # nfs-cp sees the error too (ENOSPC) rather than a silent short file.
    if shutil.which("nfs-cp"):
        src = os.path.join(c.workdir, "src")
        with open(src, "wb") as f:
            f.write(os.urandom(4 << 20))
        r = ns.run(["nfs-cp", src, f"nfs://127.0.0.1{c.export}/cp"])
        assert r.returncode != 0


def test_an_extending_write_refused_for_a_full_disk_leaves_the_size(cluster, ns):
    """Issue 16, case 2: the size a WRITE would have made does not stay when its
    iod refuses the data, whether it was forwarded (UDP) or relayed (TCP)."""
    c = cluster(n_iods=2, stripe_unit=U)
    udp, root = c.connect(3, "udp")
    tcp, _ = c.connect(3, "tcp")
    move_to_a_small_disk(c, ns, 1, size="256k")
    for client, name in ((udp, b"grow-udp"), (tcp, b"grow-tcp")):
        fh = client.create(root, name)
        data = patterned(1 << 20, name)
        failed_at = None
        for off in range(0, len(data), U):       # one stripe a call, in order
            try:
                client.write(fh, off, data[off:off + U])
            except NfsError as e:
                assert e.status == nfsstat3.NFS3ERR_NOSPC
                failed_at = off
                break
        assert failed_at is not None, "the small disk never filled"
        assert client.getattr(fh).size == failed_at
        assert v3_read(client, fh, 0, failed_at, U) == data[:failed_at]


def test_appending_an_iod_makes_a_new_generation(cluster):
    c = cluster(n_iods=2, stripe_unit=U)
    client, root = c.connect(3, "udp")
    old = patterned(6 * U, b"old")
    fh = client.create(root, b"old")
    v3_write(client, fh, 0, old, 16384)
    verf = v3_commit(client, fh)
    c.nfspd.stop()
    c.add_iod()
    c.nfspd.start()
    assert "grew from 2 to 3 iods" in c.nfspd_log()
    client, root = c.connect(3, "udp")
    fh = client.lookup(root, b"old")
    assert v3_read(client, fh, 0, 6 * U, 32768) == old
    # A metaserver restart changes the write verifier too (unsynced sizes die with it).
    assert v3_commit(client, fh) != verf
    new = patterned(6 * U, b"new")
    fh2 = client.create(root, b"new")
    v3_write(client, fh2, 0, new, 16384)
    assert v3_read(client, fh2, 0, 6 * U, 32768) == new
    ino_old = os.stat(os.path.join(c.export, "old")).st_ino
    ino_new = os.stat(os.path.join(c.export, "new")).st_ino
    stored = c.datafiles()
    assert not any(ino == ino_old for ino, _ in stored[2])
    assert any(ino == ino_new for ino, _ in stored[2])
    # Reordering is refused, with the reason.
    c.nfspd.stop()
    c.iods[0], c.iods[1] = c.iods[1], c.iods[0]
    c.write_conf()
    with pytest.raises(RuntimeError) as e:
        c.nfspd.start(timeout=10)
    assert "iods can only be appended" in str(e.value)


def test_nfspd_serves_while_an_iod_is_not_up_yet(cluster):
    c = cluster(n_iods=2, stripe_unit=U)
    client, root = c.connect(3, "tcp")
    data = patterned(4 * U)
    fh = client.create(root, b"f")
    v3_write(client, fh, 0, data, 1 << 20)
    c.nfspd.stop()
    c.iods[1].stop()
    ups = c.nfspd_log().count("127.0.0.1:2051 (#1) up")  # the log spans restarts
    c.nfspd.start()
    assert "127.0.0.1:2051 (#1) not reachable" in c.nfspd_log()
    client, root = c.connect(3, "tcp")
    with pytest.raises(NfsError) as e:
        client.read(fh, 0, 4 * U)
    assert e.value.status == nfsstat3.NFS3ERR_JUKEBOX
    c.iods[1].start()
    wait_until(lambda: c.nfspd_log().count("127.0.0.1:2051 (#1) up") > ups, 15,
               what="the iod up")
    assert v3_read(client, fh, 0, 4 * U, 1 << 20) == data


# --- a WRITE racing a truncation (issue 16, case 1) ---------------------------------


class HeldForwards:
    """Every datagram to the iods' UDP ports -- only forwarded READs and WRITEs
    go there -- held in an nfnetlink queue until ``release``: a forwarded
    WRITE made as late as the test wants, without timing."""

    QUEUE = 11

    def __init__(self, c):
        self.c = c
        self.queue = c.ns.inside(NfQueue, self.QUEUE)
        self.held = []
        self.rule = ["OUTPUT", "-o", "lo", "-p", "udp", "--dport",
                     f"{c.iods[0].port}:{c.iods[-1].port}", "-j", "NFQUEUE",
                     "--queue-num", str(self.QUEUE)]
        c.ns.run(["iptables", "-w", "5", "-A"] + self.rule, check=True)

    def wait_held(self, n=1):
        def held():
            self.held += self.queue.packets()
            return len(self.held) >= n
        wait_until(held, 30, what=f"{n} forwarded datagram(s) held")

    def release(self):
        for packet in self.held:
            self.queue.accept(packet)
        self.held = []

    def close(self):
        self.c.ns.run(["iptables", "-w", "5", "-D"] + self.rule)
        self.held += self.queue.packets()
        self.release()
        self.queue.close()


def data_counters(c):
    """nfspd's data path counters, from its admin socket (what `nfsp status` shows)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(admin.socket_path(c.nfspd.state))
        s.sendall(b'{"command": "status"}\n')
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            assert chunk, "nfspd closed the admin connection"
            answer += chunk
    return json.loads(answer)["status"]["counters"]["data"]


def in_thread(fn, *args):
    """Start fn(*args) in a thread: (thread, result dict with "value" or "error")."""
    result = {}

    def run():
        try:
            result["value"] = fn(*args)
        except BaseException as e:  # reported by the caller
            result["error"] = e
    t = threading.Thread(target=run)
    t.start()
    return t, result


@pytest.mark.skipif(shutil.which("iptables") is None, reason="needs iptables (NFQUEUE)")
@pytest.mark.parametrize("vers", [3, 2])
def test_a_write_planned_before_a_truncation_never_lands_after_it(cluster, vers):
    """Client A's WRITE is forwarded to an iod over UDP and held on its way;
    client B shrinks the file (answered), then moves data, which carries the
    truncation out on the iods; then A's WRITE is let through. The metaserver
    planned A's WRITE before B's SETATTR (the size B's GETATTR shows says so),
    so the WRITE lands before the truncation: once both are answered, the
    bytes A wrote are gone, and a file grown afterwards reads zeros there --
    round after round, whichever iod and whatever B does next."""
    c = cluster(n_iods=2, stripe_unit=U)
    a, root = c.connect(vers, "udp", timeout=60)      # forwarded: an iod answers A
    b, root3 = c.connect(3, "tcp", timeout=60)        # relayed
    fh = b.create(root3, b"raced")
    fh_a = fh if vers == 3 else fh + bytes(32 - len(fh))
    if vers == 3:
        def write_a(offset, data):
            return a.write(fh_a, offset, data).count
    else:
        def write_a(offset, data):
            v2_write(a, fh_a, offset, data, len(data))
            return len(data)
    held = HeldForwards(c)
    try:
        for rnd in range(8):
            offset = (rnd % 4) * U + 1000 * (rnd + 1)       # one stripe; each iod in turn
            data = patterned(3000, b"round %d" % rnd)
            a_thread, a_result = in_thread(write_a, offset, data)
            held.wait_held()
            # A's WRITE is planned (the file has its size) and on its way.
            assert b.getattr(fh).size >= offset + len(data)
            v3_setsize(b, fh, 0)
            b_moves_data = rnd % 2 == 0
            waits = data_counters(c).get("truncations_held", 0)
            if b_moves_data:
                b_thread, b_result = in_thread(b.write, fh, 0, b"B" * 10)
            else:
                b_thread, b_result = in_thread(b.read, fh, 0, 10)
            # B's call carries the truncation out, or waits for A's WRITE to be in.
            wait_until(lambda: not b_thread.is_alive()
                       or data_counters(c).get("truncations_held", 0) > waits,
                       30, what="B's call answered or its truncation waiting")
            held.release()
            a_thread.join(60)
            b_thread.join(60)
            assert a_result == {"value": len(data)}
            assert "error" not in b_result, b_result["error"]
            # Both answered: what B sees is the truncation after A's WRITE.
            end = 10 if b_moves_data else 0
            assert b.getattr(fh).size == end
            if not b_moves_data:
                assert b_result["value"] == (b"", True)
            v3_setsize(b, fh, 4 * U)
            expect = (b"B" * 10 if b_moves_data else b"") + bytes(4 * U - end)
            got = v3_read(b, fh, 0, 4 * U, 1 << 20)
            assert got == expect, (f"round {rnd}: A's bytes at {offset} came back after the "
                                   f"truncation: {got[offset:offset + 16]!r}")
        # Every round's truncation waited, and for the iod's word that A's
        # WRITE was in, not for the forward to be given up.
        counters = data_counters(c)
        assert counters.get("truncations_held") == 8
        assert counters.get("writes_given_up", 0) == 0
    finally:
        held.close()


@pytest.mark.skipif(shutil.which("iptables") is None, reason="needs iptables (NFQUEUE)")
def test_a_forward_never_answered_is_given_up_and_refused_if_it_comes_late(cluster):
    """The iod never answers A's forwarded WRITE (it is held on its way past
    the metaserver's forward TTL): B's truncation stops waiting for it, and
    when the WRITE does reach the iod, too old, the iod refuses it rather
    than write bytes the truncation cut. A gets no OK for it."""
    c = cluster(n_iods=2, stripe_unit=U)
    a, root = c.connect(3, "udp", timeout=3)
    # Sent once: a retransmission would be a WRITE planned after the
    # truncation, which may well land after it.
    a.rpc.retries = 0
    b, _ = c.connect(3, "tcp", timeout=60)
    fh = b.create(root, b"late")
    held = HeldForwards(c)
    try:
        a_thread, a_result = in_thread(a.write, fh, 5000, b"A" * 3000)
        held.wait_held()
        v3_setsize(b, fh, 0)
        b_thread, b_result = in_thread(b.read, fh, 0, 10)
        b_thread.join(60)                # the forward TTL (10 s) passes meanwhile
        assert b_result == {"value": (b"", True)}
        assert data_counters(c).get("writes_given_up") == 1
        a_thread.join(60)
        assert isinstance(a_result.get("error"), RpcTimeout)
        held.wait_held(1)                # (collects any other datagram held meanwhile)
        assert len(held.held) == 1 and data_counters(c)["forwarded_writes"] == 1
        held.release()
        wait_until(lambda: sum(c.iod_counters(i).get("error_etimedout", 0)
                               for i in range(2)) == 1, 30, what="the iod refusing the WRITE")
    finally:
        held.close()
    v3_setsize(b, fh, 4 * U)
    assert v3_read(b, fh, 0, 4 * U, 1 << 20) == bytes(4 * U)
