"""The NFSv2 service: encoded RPC calls through the Dispatcher, against a real
MetaFS on a temporary directory, and the v2-specific conversions on their own."""

import os
import stat
import time

import pytest
import trio

from common import nfs2, rpc
from common.nfs2 import NFSPROC, ftype, nfsstat, sattr_unset, timeval
from common.nfs3 import nfsstat3
from common.xdr import decode, encode
from nfspd import nfs2attrs, nfs2proc
from nfspd.datapath import DataPath
from nfspd.dispatch import CallContext, Dispatcher, Program
from nfspd.fs.types import SET_TO_SERVER_TIME, Attr, FileType, FsError, FsStat
from nfspd.nfsservice import NfsService

ROOT_CRED = rpc.AuthSys(1, b"client", 0, 0, [])
U32 = 0xFFFFFFFF


def make_attr(**kw):
    values = dict(type=FileType.REG, mode=0o644, nlink=1, uid=1, gid=2, size=10, used=4096,
                  rdev_major=0, rdev_minor=0, fsid=5, fileid=6,
                  atime_ns=1_500_000_000_123_456_789, mtime_ns=2_000_000_000, ctime_ns=0)
    values.update(kw)
    return Attr(**values)


# --- conversions (no file system needed) -------------------------------------


class TestStatusMapping:
    def test_shared_statuses_keep_their_value(self):
        for s3 in (nfsstat3.NFS3ERR_PERM, nfsstat3.NFS3ERR_NOENT, nfsstat3.NFS3ERR_ACCES,
                   nfsstat3.NFS3ERR_EXIST, nfsstat3.NFS3ERR_NOTDIR, nfsstat3.NFS3ERR_ISDIR,
                   nfsstat3.NFS3ERR_FBIG, nfsstat3.NFS3ERR_NOSPC, nfsstat3.NFS3ERR_ROFS,
                   nfsstat3.NFS3ERR_NAMETOOLONG, nfsstat3.NFS3ERR_NOTEMPTY,
                   nfsstat3.NFS3ERR_DQUOT, nfsstat3.NFS3ERR_STALE):
            assert nfs2attrs.status2(s3) == s3.value

    def test_v3_only_statuses_are_folded_as_linux_does(self):
        assert nfs2attrs.status2(nfsstat3.NFS3ERR_BADHANDLE) == nfsstat.NFSERR_STALE
        assert nfs2attrs.status2(nfsstat3.NFS3ERR_XDEV) == nfsstat.NFSERR_ACCES
        for s3 in (nfsstat3.NFS3ERR_INVAL, nfsstat3.NFS3ERR_SERVERFAULT, nfsstat3.NFS3ERR_NOTSUPP,
                   nfsstat3.NFS3ERR_BADTYPE, nfsstat3.NFS3ERR_TOOSMALL, nfsstat3.NFS3ERR_MLINK):
            assert nfs2attrs.status2(s3) == nfsstat.NFSERR_IO

    def test_every_status_sent_is_an_rfc_1094_status(self):
        rfc1094 = {s for s in nfsstat if s != nfsstat.NFSERR_INVAL}
        for s3 in nfsstat3:
            if s3 != nfsstat3.NFS3ERR_JUKEBOX:
                assert nfs2attrs.status2(s3) in rfc1094

    def test_jukebox_drops_the_request(self):
        assert nfs2attrs.status2(nfsstat3.NFS3ERR_JUKEBOX) is nfs2attrs.NO_REPLY


class TestFattr:
    def test_regular_file(self):
        f = nfs2attrs.fattr(make_attr())
        assert f.type == ftype.NFREG
        assert f.mode == stat.S_IFREG | 0o644
        assert (f.size, f.blocks, f.rdev, f.fsid, f.fileid) == (10, 8, U32, 5, 6)
        assert f.atime == timeval(1_500_000_000, 123_456)
        assert f.mtime == timeval(2, 0)

    def test_size_beyond_4gib_is_clamped_not_wrapped(self):
        assert nfs2attrs.fattr(make_attr(size=5 << 30)).size == U32
        assert nfs2attrs.fattr(make_attr(size=U32)).size == U32

    def test_symlink_size_is_capped_at_maxpathlen(self):
        assert nfs2attrs.fattr(make_attr(type=FileType.LNK, size=4000)).size == 1024

    def test_fifo_is_nfchr_with_the_fifo_rdev(self):
        f = nfs2attrs.fattr(make_attr(type=FileType.FIFO, mode=0o600))
        assert f.type == ftype.NFCHR
        assert f.rdev == nfs2.NFS2_FIFO_DEV
        assert stat.S_ISFIFO(f.mode)

    def test_device_rdev_is_new_encode_dev(self):
        f = nfs2attrs.fattr(make_attr(type=FileType.CHR, rdev_major=1, rdev_minor=3))
        assert (f.type, f.rdev) == (ftype.NFCHR, 0x103)
        f = nfs2attrs.fattr(make_attr(type=FileType.BLK, rdev_major=259, rdev_minor=0x12345))
        assert f.rdev == 0x12345 & 0xFF | 259 << 8 | (0x12345 & ~0xFF) << 12
        assert nfs2attrs.new_decode_dev(f.rdev) == (259, 0x12345)

    def test_64_bit_ids_fold_to_32_bits(self):
        f = nfs2attrs.fattr(make_attr(fsid=0x1_0000_0002, fileid=0xABCD_0000_0000_0001))
        assert (f.fsid, f.fileid) == (3, 0xABCD_0001)

    def test_times_before_1970(self):
        assert nfs2attrs.fattr(make_attr(ctime_ns=-1)).ctime == timeval(U32, 999_999)

    def test_fattr_encodes(self):
        encode(nfs2.fattr, nfs2attrs.fattr(make_attr(size=1 << 40, nlink=1 << 33, used=1 << 50)))


class TestSattr:
    def test_all_ones_changes_nothing(self):
        sa = nfs2attrs.setattr_from_sattr(sattr_unset())
        assert [sa.mode, sa.uid, sa.gid, sa.size, sa.atime, sa.mtime] == [None] * 6

    def test_sun_mode_0xffff_changes_nothing(self):
        assert nfs2attrs.setattr_from_sattr(sattr_unset().replace(mode=0xFFFF)).mode is None

    def test_values(self):
        s = nfs2.sattr(0o100640, 7, 8, 0, timeval(10, 5), timeval(20, 0))
        sa = nfs2attrs.setattr_from_sattr(s)
        assert (sa.mode, sa.uid, sa.gid, sa.size) == (0o640, 7, 8, 0)
        assert (sa.atime, sa.mtime) == (10_000_005_000, 20_000_000_000)

    def test_useconds_million_in_mtime_means_both_to_server_time(self):
        s = sattr_unset().replace(atime=timeval(10, 0), mtime=timeval(10, 1000000))
        sa = nfs2attrs.setattr_from_sattr(s)
        assert sa.atime is SET_TO_SERVER_TIME and sa.mtime is SET_TO_SERVER_TIME

    def test_a_time_with_one_half_unset_is_not_set(self):
        sa = nfs2attrs.setattr_from_sattr(sattr_unset().replace(atime=timeval(10, U32)))
        assert sa.atime is None

    def test_size_can_be_left_out(self):
        sa = nfs2attrs.setattr_from_sattr(sattr_unset().replace(size=0), with_size=False)
        assert sa.size is None


def test_statfs_block_size_grows_to_keep_counts_in_32_bits():
    small = nfs2attrs.statfs_reply(FsStat(4096 * 1000, 4096 * 500, 4096 * 400, 0, 0, 0))
    assert (small.tsize, small.bsize, small.blocks, small.bfree, small.bavail) == \
        (8192, 4096, 1000, 500, 400)
    huge = nfs2attrs.statfs_reply(FsStat(100 << 40, 50 << 40, 40 << 40, 0, 0, 0))
    assert huge.blocks <= U32 and huge.blocks * huge.bsize == 100 << 40


# --- through the dispatcher --------------------------------------------------


class Resolver:
    def __init__(self, fs, caller):
        self.fs, self.caller = fs, caller

    def resolve(self, ctx, fh):
        if isinstance(self.fs, Exception):
            raise self.fs
        return self.fs, self.caller


class Client:
    """Encodes calls, runs them through a Dispatcher, decodes the replies."""

    def __init__(self, resolver):
        # MetaFS does its I/O through its own data path; the service only asks
        # this one whether to forward to an iod (no).
        service = NfsService(resolver, DataPath())
        program = Program(nfs2.NFS_PROGRAM, "nfs", {2: nfs2proc.PROCEDURES}, service)
        self.dispatcher = Dispatcher([program])
        self.xid = 0

    def raw(self, proc, args_bytes):
        self.xid += 1
        msg = rpc.encode_call(self.xid, nfs2.NFS_PROGRAM, 2, proc, args_bytes, cred=ROOT_CRED)
        ctx = CallContext(("127.0.0.1", 800), ("127.0.0.1", 2049), "udp")
        return trio.run(self.dispatcher.handle, msg, ctx)

    def call(self, proc, args):
        args_type, res_type = nfs2.PROCEDURE_TYPES[proc]
        reply = self.raw(proc, encode(args_type, args))
        assert reply is not None, "no reply"
        r = rpc.decode_reply(reply)
        assert r.accepted and r.stat == rpc.accept_stat.SUCCESS, r
        return decode(res_type, r.body)


def test_jukebox_is_answered_by_silence():
    c = Client(Resolver(FsError(nfsstat3.NFS3ERR_JUKEBOX), None))
    assert c.raw(NFSPROC.GETATTR, bytes(32)) is None


def test_resolver_refusal_is_the_reply_status():
    c = Client(Resolver(FsError(nfsstat3.NFS3ERR_BADHANDLE), None))
    assert c.call(NFSPROC.GETATTR, bytes(32)).disc == nfsstat.NFSERR_STALE
    assert c.call(NFSPROC.REMOVE, nfs2.diropargs(bytes(32), b"x")) == nfsstat.NFSERR_STALE
    c = Client(Resolver(FsError(nfsstat3.NFS3ERR_ACCES), None))
    assert c.call(NFSPROC.READDIR, nfs2.readdirargs(bytes(32), bytes(4), 4096)).disc == \
        nfsstat.NFSERR_ACCES


def test_garbage_arguments():
    c = Client(Resolver(None, None))
    r = rpc.decode_reply(c.raw(NFSPROC.LOOKUP, bytes(32) + b"\0\0\1\0"))  # 256-byte name
    assert r.stat == rpc.accept_stat.GARBAGE_ARGS


def test_obsolete_and_null_procedures_answer_void():
    c = Client(Resolver(None, None))
    for proc in (NFSPROC.NULL, NFSPROC.ROOT, NFSPROC.WRITECACHE):
        assert c.call(proc, None) is None


# --- against a real MetaFS ---------------------------------------------------


@pytest.fixture
def export(tmp_path):
    from nfspd.datapath import LocalDataPath
    from nfspd.fs.metafs import MetaFS
    root = tmp_path / "export"
    data = tmp_path / "data"
    root.mkdir()
    data.mkdir()
    fs = MetaFS(str(root), 1234, b"k" * 32, LocalDataPath(str(data)))
    yield fs, root
    close = getattr(fs, "close", None)
    if close:
        close()


@pytest.fixture
def client(export):
    from nfspd.fs.types import Caller
    fs, _ = export
    return Client(Resolver(fs, Caller(0, 0)))


@pytest.fixture
def root_fh(export):
    return nfs2attrs.fh_out(export[0].root_fh)


def ok(res):
    assert res.disc == nfsstat.NFS_OK, res
    return res.body


def create(client, dir_fh, name, mode=0o644, **kw):
    s = sattr_unset().replace(mode=mode, **kw)
    return client.call(NFSPROC.CREATE, nfs2.createargs(nfs2.diropargs(dir_fh, name), s))


def set_times(client, fh, atime, mtime):
    s = sattr_unset().replace(atime=atime, mtime=mtime)
    return client.call(NFSPROC.SETATTR, nfs2.sattrargs(fh, s))


def write(client, fh, offset, data):
    return client.call(NFSPROC.WRITE, nfs2.writeargs(fh, 0, offset, 0, data))


def read(client, fh, offset, count):
    return client.call(NFSPROC.READ, nfs2.readargs(fh, offset, count, 0))


def test_getattr_of_the_root(client, root_fh, export):
    assert len(root_fh) == 32
    a = ok(client.call(NFSPROC.GETATTR, root_fh))
    assert a.type == ftype.NFDIR and stat.S_ISDIR(a.mode)
    assert a.fileid == os.stat(export[1]).st_ino & U32


def test_create_lookup_write_read(client, root_fh):
    made = ok(create(client, root_fh, b"f", 0o640))
    assert made.attributes.type == ftype.NFREG
    assert made.attributes.mode == stat.S_IFREG | 0o640
    found = ok(client.call(NFSPROC.LOOKUP, nfs2.diropargs(root_fh, b"f")))
    assert found.attributes.fileid == made.attributes.fileid
    fh = found.file
    after = ok(write(client, fh, 100, b"hello"))
    assert after.size == 105
    got = ok(read(client, fh, 98, 10))
    assert got.data == b"\0\0hello" and got.attributes.size == 105


def test_read_is_capped_at_maxdata(client, root_fh):
    fh = ok(create(client, root_fh, b"big")).file
    for off in range(0, 3 * 8192, 8192):
        ok(write(client, fh, off, bytes([off // 8192 + 1]) * 8192))
    got = ok(read(client, fh, 0, 100000))
    assert len(got.data) == 8192


def test_write_past_4gib_is_fbig(client, root_fh):
    fh = ok(create(client, root_fh, b"f")).file
    assert write(client, fh, U32 - 10, b"x" * 11).disc == nfsstat.NFSERR_FBIG
    assert ok(write(client, fh, U32 - 10, b"x" * 10)).size == U32


def test_setattr(client, root_fh):
    fh = ok(create(client, root_fh, b"f")).file
    ok(write(client, fh, 0, b"0123456789"))
    s = sattr_unset().replace(mode=0o600, size=4, mtime=timeval(1_000_000_000, 250))
    a = ok(client.call(NFSPROC.SETATTR, nfs2.sattrargs(fh, s)))
    assert (a.mode & 0o7777, a.size, a.mtime) == (0o600, 4, timeval(1_000_000_000, 250))
    assert ok(read(client, fh, 0, 100)).data == b"0123"


def test_setattr_server_time(client, root_fh):
    fh = ok(create(client, root_fh, b"f")).file
    old = timeval(100, 0)
    ok(set_times(client, fh, old, old))
    s = sattr_unset().replace(atime=timeval(5, 1000000), mtime=timeval(5, 1000000))
    a = ok(client.call(NFSPROC.SETATTR, nfs2.sattrargs(fh, s)))
    assert abs(a.mtime.seconds - time.time()) < 60 and abs(a.atime.seconds - time.time()) < 60


def test_create_on_an_existing_file_truncates_and_keeps_the_rest(client, root_fh):
    fh = ok(create(client, root_fh, b"f", 0o640)).file
    ok(write(client, fh, 0, b"data"))
    again = ok(create(client, root_fh, b"f", 0o777, size=0))
    assert again.file == fh
    assert again.attributes.size == 0 and again.attributes.mode & 0o7777 == 0o640


def test_create_of_a_fifo_the_sun_way(client, root_fh):
    # NFCHR type bits with no size (rdev) ask for a FIFO.
    made = ok(create(client, root_fh, b"p", stat.S_IFCHR | 0o600))
    assert made.attributes.type == ftype.NFCHR and stat.S_ISFIFO(made.attributes.mode)
    assert made.attributes.rdev == nfs2.NFS2_FIFO_DEV


def test_create_of_a_character_device(client, root_fh, export):
    made = create(client, root_fh, b"null", stat.S_IFCHR | 0o666, size=0x103)
    if made.disc == nfsstat.NFSERR_PERM:
        pytest.skip("no CAP_MKNOD here")
    a = ok(made).attributes
    assert a.type == ftype.NFCHR and a.rdev == 0x103
    assert os.stat(export[1] / "null").st_rdev == os.makedev(1, 3)


def test_create_with_directory_type_makes_a_directory(client, root_fh):
    made = ok(create(client, root_fh, b"d", stat.S_IFDIR | 0o755))
    assert made.attributes.type == ftype.NFDIR


def test_namespace_operations(client, root_fh, export):
    root = export[1]
    d = ok(client.call(NFSPROC.MKDIR, nfs2.createargs(nfs2.diropargs(root_fh, b"d"),
                                                       sattr_unset().replace(mode=0o750))))
    assert d.attributes.type == ftype.NFDIR and d.attributes.mode & 0o7777 == 0o750
    f = ok(create(client, d.file, b"f")).file

    assert client.call(NFSPROC.LINK, nfs2.linkargs(f, nfs2.diropargs(root_fh, b"hard"))) == \
        nfsstat.NFS_OK
    assert ok(client.call(NFSPROC.GETATTR, f)).nlink == 2
    assert client.call(NFSPROC.RENAME, nfs2.renameargs(
        nfs2.diropargs(root_fh, b"hard"), nfs2.diropargs(d.file, b"moved"))) == nfsstat.NFS_OK
    assert sorted(os.listdir(root / "d")) == ["f", "moved"]

    assert client.call(NFSPROC.SYMLINK, nfs2.symlinkargs(
        nfs2.diropargs(root_fh, b"s"), b"d/f", sattr_unset())) == nfsstat.NFS_OK
    s = ok(client.call(NFSPROC.LOOKUP, nfs2.diropargs(root_fh, b"s")))
    assert s.attributes.type == ftype.NFLNK
    assert ok(client.call(NFSPROC.READLINK, s.file)) == b"d/f"

    assert client.call(NFSPROC.RMDIR, nfs2.diropargs(root_fh, b"d")) == nfsstat.NFSERR_NOTEMPTY
    for name in (b"f", b"moved"):
        assert client.call(NFSPROC.REMOVE, nfs2.diropargs(d.file, name)) == nfsstat.NFS_OK
    assert client.call(NFSPROC.RMDIR, nfs2.diropargs(root_fh, b"d")) == nfsstat.NFS_OK
    assert sorted(os.listdir(root)) == ["s"]


def test_errors(client, root_fh):
    assert client.call(NFSPROC.LOOKUP, nfs2.diropargs(root_fh, b"nope")).disc == \
        nfsstat.NFSERR_NOENT
    assert client.call(NFSPROC.REMOVE, nfs2.diropargs(root_fh, b"a/b")) == nfsstat.NFSERR_ACCES
    ok(create(client, root_fh, b"f"))
    assert client.call(NFSPROC.MKDIR, nfs2.createargs(
        nfs2.diropargs(root_fh, b"f"), sattr_unset())).disc == nfsstat.NFSERR_EXIST
    forged = bytearray(root_fh)
    forged[10] ^= 0xFF
    assert client.call(NFSPROC.GETATTR, bytes(forged)).disc == nfsstat.NFSERR_STALE


def test_readonly_caller_gets_rofs(export, root_fh):
    from nfspd.fs.types import Caller
    c = Client(Resolver(export[0], Caller(0, 0, readonly=True)))
    assert create(c, root_fh, b"f").disc == nfsstat.NFSERR_ROFS


def test_readdir_pages_through_everything_once(client, root_fh):
    names = {b"file-%03d-" % i + b"x" * (i % 40) for i in range(150)}
    for n in names:
        ok(create(client, root_fh, n))
    seen, cookie, calls = [], bytes(4), 0
    while True:
        calls += 1
        assert calls < 100
        args = nfs2.readdirargs(root_fh, cookie, 1024)
        res = client.call(NFSPROC.READDIR, args)
        body = ok(res)
        assert len(encode(nfs2.readdirok, body)) <= 1024
        seen += [e.name for e in body.entries]
        if body.eof:
            break
        assert body.entries, "no progress"
        cookie = body.entries[-1].cookie
    assert calls > 3
    assert sorted(n for n in seen if n not in (b".", b"..")) == sorted(names)
    assert len(seen) == len(set(seen))


def test_readdir_fileids_match_getattr(client, root_fh):
    f = ok(create(client, root_fh, b"one"))
    body = ok(client.call(NFSPROC.READDIR, nfs2.readdirargs(root_fh, bytes(4), 8192)))
    assert body.eof
    assert {e.name: e.fileid for e in body.entries}[b"one"] == f.attributes.fileid


def test_statfs(client, root_fh, export):
    info = ok(client.call(NFSPROC.STATFS, root_fh))
    assert info.tsize == 8192 and info.bsize >= 4096
    assert 0 < info.blocks and info.bavail <= info.bfree <= info.blocks


def test_touch_by_a_non_owner_becomes_set_to_server_time(export, root_fh, client):
    from nfspd.fs.types import Caller
    fh = ok(create(client, root_fh, b"shared", 0o666)).file
    old = timeval(100, 0)
    ok(set_times(client, fh, old, old))
    other = Client(Resolver(export[0], Caller(1000, 1000)))
    # Old clients say "touch" as "both times = my clock": allowed to anyone who may write.
    now = timeval(int(time.time()), 0)
    a = ok(set_times(other, fh, now, now))
    assert abs(a.mtime.seconds - time.time()) < 60
    # An explicit time far from now is a real utimes(), which only the owner may do.
    then = timeval(int(time.time()) - 7200, 0)
    res = set_times(other, fh, then, then)
    assert res.disc == nfsstat.NFSERR_PERM


def test_only_modifying_procedures_use_the_duplicate_request_cache():
    procs = nfs2proc.PROCEDURES
    assert sorted(p for p, proc in procs.items() if not proc.idempotent) == sorted([
        NFSPROC.SETATTR, NFSPROC.WRITE, NFSPROC.CREATE, NFSPROC.REMOVE, NFSPROC.RENAME,
        NFSPROC.LINK, NFSPROC.SYMLINK, NFSPROC.MKDIR, NFSPROC.RMDIR])
    assert len(procs) == 18


def test_each_handler_is_named_as_rfc_1094_names_its_procedure():
    for num, proc in nfs2proc.PROCEDURES.items():
        assert proc.handler.__name__ == proc.name == NFSPROC(num).name
        assert getattr(nfs2proc, proc.name) is proc.handler  # module-level
        assert (proc.args_type, proc.res_type) == nfs2.PROCEDURE_TYPES[num]


def test_readdir_count_too_small_for_one_entry(client, root_fh):
    assert client.call(NFSPROC.READDIR, nfs2.readdirargs(root_fh, bytes(4), 16)).disc == \
        nfsstat.NFSERR_IO


def test_readdir_reply_never_exceeds_count(client, root_fh):
    for i in range(30):
        ok(create(client, root_fh, b"n%d" % i + b"y" * (i % 7)))
    for count in range(40, 400, 3):
        body = ok(client.call(NFSPROC.READDIR, nfs2.readdirargs(root_fh, bytes(4), count)))
        assert len(encode(nfs2.readdirok, body)) <= count
        assert body.entries
