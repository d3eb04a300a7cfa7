"""The NFSv3 service as a client sees it: encoded RPC calls through the
Dispatcher against a real MetaFS on a temporary directory, replies decoded.
A few conversions and the paging rule are also checked on their own."""

import os
import stat

import pytest
import trio

from common import nfs3, rpc
from common.nfs3 import (
    ACCESS3_DELETE, ACCESS3_EXECUTE, ACCESS3_EXTEND, ACCESS3_LOOKUP, ACCESS3_MODIFY, ACCESS3_READ,
    NFSPROC3, PROCEDURES, createhow3, createmode3, diropargs3, ftype3, mknoddata3, nfsstat3,
    nfstime3, sattr3, set_atime, set_mtime, specdata3, stable_how, time_how,
)
from common.xdr import decode, encode
from nfspd import nfs3attrs, nfs3proc
from nfspd.datapath import DataPath
from nfspd.dispatch import CallContext, Dispatcher, Program
from nfspd.fs.metafs import MetaFS
from nfspd.fs.types import (SET_TO_SERVER_TIME, Attr, Caller, DirEntry, FileType, FsError, Wcc,
                            WccAttr)
from nfspd.nfsservice import NfsService

ROOT = rpc.AuthSys(1, b"client", 0, 0, [])
USER = rpc.AuthSys(1, b"client", 1000, 1000, [1000])
OTHER = rpc.AuthSys(1, b"client", 2000, 2000, [])
OK = nfsstat3.NFS3_OK
S = sattr3.unchanged()
GARBAGE_FH = b"\x01" * 32


# --- conversions (no file system needed) ---------------------------------------


def make_attr(**kw):
    values = dict(type=FileType.REG, mode=0o4755, nlink=2, uid=1, gid=2, size=10, used=4096,
                  rdev_major=8, rdev_minor=1, fsid=5, fileid=6,
                  atime_ns=1_500_000_000_123_456_789, mtime_ns=2_000_000_000, ctime_ns=7)
    values.update(kw)
    return Attr(**values)


def test_fattr_from_attr():
    f = nfs3attrs.fattr(make_attr(mode=stat.S_IFREG | 0o4755))
    assert f.type == ftype3.NF3REG and f.mode == 0o4755  # no file type bits in mode3
    assert (f.nlink, f.uid, f.gid, f.size, f.used, f.fsid, f.fileid) == (2, 1, 2, 10, 4096, 5, 6)
    assert f.rdev == specdata3(8, 1)
    assert f.atime == nfstime3(1_500_000_000, 123_456_789)
    assert f.mtime == nfstime3(2, 0) and f.ctime == nfstime3(0, 7)
    assert encode(nfs3.fattr3, f) == encode(nfs3.fattr3, nfs3.fattr3(
        ftype3.NF3REG, 0o4755, 2, 1, 2, 10, 4096, specdata3(8, 1), 5, 6,
        nfstime3(1_500_000_000, 123_456_789), nfstime3(2, 0), nfstime3(0, 7)))


def test_times_outside_the_32_bit_range_wrap_like_linux():
    assert nfs3attrs.time3(-1) == nfstime3(0xFFFFFFFF, 999_999_999)
    assert nfs3attrs.time3((1 << 32) * 10**9 + 5) == nfstime3(0, 5)


def test_sattr3_to_setattr():
    s = sattr3(stat.S_IFREG | 0o640, 7, None, 0, set_atime(time_how.SET_TO_SERVER_TIME),
               set_mtime(time_how.SET_TO_CLIENT_TIME, nfstime3(3, 4)))
    sa = nfs3attrs.to_setattr(s)
    assert (sa.mode, sa.uid, sa.gid, sa.size) == (0o640, 7, None, 0)
    assert sa.atime is SET_TO_SERVER_TIME and sa.mtime == 3_000_000_004
    sa = nfs3attrs.to_setattr(S)
    assert [sa.mode, sa.uid, sa.gid, sa.size, sa.atime, sa.mtime] == [None] * 6
    with pytest.raises(FsError) as e:
        nfs3attrs.to_setattr(S.replace(
            atime=set_atime(time_how.SET_TO_CLIENT_TIME, nfstime3(1, 10**9))))
    assert e.value.status == nfsstat3.NFS3ERR_INVAL


def test_wcc_data_from_wcc():
    w = nfs3attrs.wcc(Wcc(WccAttr(3, 4_000_000_001, 5), make_attr()))
    assert w.before == nfs3.wcc_attr(3, nfstime3(4, 1), nfstime3(0, 5))
    assert w.after.fileid == 6
    assert nfs3attrs.wcc(Wcc()) == nfs3.wcc_data(None, None)


WCCS = [Wcc(), Wcc(WccAttr(3, 4_000_000_001, 5), None), Wcc(None, make_attr()),
        Wcc(WccAttr((1 << 64) - 1, -1, (1 << 32) * 10**9 + 5), make_attr(size=0, nlink=0))]


@pytest.mark.parametrize("w", WCCS)
def test_wcc_bytes_is_what_packing_wcc_gives(w):
    assert nfs3attrs.wcc_bytes(w) == encode(nfs3.wcc_data, nfs3attrs.wcc(w))


@pytest.mark.parametrize("w", WCCS)
@pytest.mark.parametrize("fh", [b"", b"\x01" * 5, b"\x02" * 32])
def test_the_packed_replies_of_namespace_changes_are_the_codecs(fh, w):
    attr = make_attr(type=FileType.DIR)
    made = nfs3.CREATE3res(OK, nfs3.CREATE3resok(fh, nfs3attrs.fattr(attr), nfs3attrs.wcc(w)))
    for res_type in (nfs3.CREATE3res, nfs3.MKDIR3res, nfs3.SYMLINK3res, nfs3.MKNOD3res):
        assert nfs3proc._made(fh, attr, w) == encode(res_type, made)
    assert encode(nfs3.REMOVE3res, nfs3.REMOVE3res(OK, nfs3.REMOVE3resok(nfs3attrs.wcc(w)))) == \
        nfs3proc._OK_WORD + nfs3attrs.wcc_bytes(w)
    assert encode(nfs3.RENAME3res, nfs3.RENAME3res(OK, nfs3.RENAME3resok(
        nfs3attrs.wcc(w), nfs3attrs.wcc(WCCS[1])))) == \
        nfs3proc._OK_WORD + nfs3attrs.wcc_bytes(w) + nfs3attrs.wcc_bytes(WCCS[1])
    assert encode(nfs3.LINK3res, nfs3.LINK3res(OK, nfs3.LINK3resok(
        nfs3attrs.fattr(attr), nfs3attrs.wcc(w)))) == \
        nfs3proc._OK_WORD + nfs3proc._TRUE_WORD + nfs3.fattr3_bytes(attr) + nfs3attrs.wcc_bytes(w)


@pytest.mark.parametrize("kw", [
    {},
    dict(type=FileType.CHR, rdev_major=0xFFFFFFFF, rdev_minor=7, size=0, used=0),
    dict(atime_ns=-1, mtime_ns=(1 << 32) * 10**9 + 5, ctime_ns=(1 << 40) * 10**9 - 1),
    dict(size=(1 << 64) - 1, used=(1 << 64) - 1, fileid=(1 << 64) - 1, fsid=(1 << 64) - 1,
         nlink=0xFFFFFFFF, uid=0xFFFFFFFF, gid=0xFFFFFFFF, mode=0o177777),
])
def test_fattr3_bytes_is_what_packing_fattr_gives(kw):
    a = make_attr(**kw)
    assert nfs3.fattr3_bytes(a) == encode(nfs3.fattr3, nfs3attrs.fattr(a))


def test_a_page_never_splits_entries_that_share_a_cookie():
    E = DirEntry
    entries = [E(1, b"a", 5), E(2, b"b", 7), E(3, b"c", 7), E(4, b"d", 9)]
    assert nfs3proc._cut(entries, 4) == 4
    assert nfs3proc._cut(entries, 3) == 3
    assert nfs3proc._cut(entries, 2) == 1  # b and c go together or not at all
    assert nfs3proc._cut([E(2, b"b", 7), E(3, b"c", 7)], 1) == 0


def test_access_never_grants_more_than_was_asked():
    class GenerousFs:
        def access(self, fh, caller, mask):
            return 0x3F, make_attr()

    class StubResolver:
        def resolve(self, ctx, fh):
            return GenerousFs(), Caller(0, 0)
    c = Client(StubResolver())
    r = c.ok(NFSPROC3.ACCESS, nfs3.ACCESS3args(b"fh", ACCESS3_READ | ACCESS3_LOOKUP))
    assert r.access == ACCESS3_READ | ACCESS3_LOOKUP


def test_non_idempotent_procedures_are_marked():
    procs = nfs3proc.PROCEDURES
    assert set(procs) == set(range(22))
    changing = {p for p, proc in procs.items() if not proc.idempotent}
    assert changing == {NFSPROC3.SETATTR, NFSPROC3.WRITE, NFSPROC3.CREATE, NFSPROC3.MKDIR,
                        NFSPROC3.SYMLINK, NFSPROC3.MKNOD, NFSPROC3.REMOVE, NFSPROC3.RMDIR,
                        NFSPROC3.RENAME, NFSPROC3.LINK}
    for num, proc in procs.items():
        assert (proc.name, proc.args_type, proc.res_type) == PROCEDURES[num]


def test_each_handler_is_named_as_rfc_1813_names_its_procedure():
    for num, proc in nfs3proc.PROCEDURES.items():
        assert proc.handler.__name__ == NFSPROC3(num).name
        assert getattr(nfs3proc, proc.handler.__name__) is proc.handler  # module-level
    # Only COMMIT waits (for the data path) in a task of its own; READ and
    # WRITE are answered at once when they can be forwarded.
    assert [p.name for p in nfs3proc.PROCEDURES.values() if not p.inline] == ["COMMIT"]


# --- a client speaking bytes -------------------------------------------------------


# Each export's MetaFS does its I/O through its own data path; the service only
# asks the data path whether to forward to an iod (not here) and its sizes.
NO_FORWARDING = DataPath()


class Resolver:
    """What nfspd/exports.py does, minus the exports table: the export the
    handle names, the AUTH_SYS identity unsquashed as the caller."""

    def __init__(self, *filesystems, readonly=False, refuse=None):
        self.by_id = {fs.export_id: fs for fs in filesystems}
        self.readonly, self.refuse = readonly, refuse

    def resolve(self, ctx, fh):
        from nfspd.fs.handles import export_id_of
        if self.refuse is not None:
            raise self.refuse
        fs = self.by_id.get(export_id_of(fh))
        if fs is None:
            raise FsError(nfsstat3.NFS3ERR_BADHANDLE)
        cred = ctx.cred
        return fs, Caller(cred.uid, cred.gid, cred.gids, readonly=self.readonly)


class Client:
    def __init__(self, resolver, transport="tcp"):
        service = NfsService(resolver, NO_FORWARDING)
        program = Program(nfs3.NFS_PROGRAM, "nfs", {3: nfs3proc.PROCEDURES}, service)
        self.dispatcher = Dispatcher([program])
        self.transport = transport
        self.xid = 0

    def raw(self, proc, args_bytes, cred=ROOT):
        self.xid += 1
        msg = rpc.encode_call(self.xid, nfs3.NFS_PROGRAM, 3, proc, args_bytes, cred=cred)
        ctx = CallContext(("127.0.0.1", 800), ("127.0.0.1", 2049), self.transport)
        reply = trio.run(self.dispatcher.handle, msg, ctx)
        assert reply is not None, "no reply"
        r = rpc.decode_reply(reply)
        assert r.xid == self.xid and r.accepted
        return r

    def body(self, proc, args, cred=ROOT):
        _, args_type, _ = PROCEDURES[proc]
        r = self.raw(proc, encode(args_type, args), cred)
        assert r.stat == rpc.accept_stat.SUCCESS, r
        return r.body

    def call(self, proc, args, cred=ROOT):
        return decode(PROCEDURES[proc][2], self.body(proc, args, cred))

    # Shorthands for the common calls.
    def ok(self, proc, args, cred=ROOT):
        res = self.call(proc, args, cred)
        assert res.disc == OK, res
        return res.body

    def create(self, d, name, mode=0o644, cred=ROOT, how=createmode3.UNCHECKED):
        return self.call(NFSPROC3.CREATE, nfs3.CREATE3args(
            diropargs3(d, name), createhow3(how, S.replace(mode=mode))), cred)

    def mkdir(self, d, name, mode=0o755, cred=ROOT):
        args = nfs3.MKDIR3args(diropargs3(d, name), S.replace(mode=mode))
        return self.call(NFSPROC3.MKDIR, args, cred)

    def lookup(self, d, name, cred=ROOT):
        return self.call(NFSPROC3.LOOKUP, nfs3.LOOKUP3args(diropargs3(d, name)), cred)

    def getattr(self, fh):
        return self.ok(NFSPROC3.GETATTR, nfs3.GETATTR3args(fh)).obj_attributes

    def write(self, fh, offset, data, stable=stable_how.FILE_SYNC, cred=ROOT):
        return self.call(NFSPROC3.WRITE, nfs3.WRITE3args(fh, offset, len(data), stable, data), cred)

    def read(self, fh, offset, count, cred=ROOT):
        return self.call(NFSPROC3.READ, nfs3.READ3args(fh, offset, count), cred)


def new_export(tmp_path, name, export_id):
    from nfspd.datapath import LocalDataPath
    root, data = tmp_path / name, tmp_path / f"{name}-data"
    root.mkdir()
    data.mkdir()
    os.chmod(root, 0o755)
    return MetaFS(str(root), export_id, b"k" * 32, LocalDataPath(str(data))), root


@pytest.fixture
def export(tmp_path):
    fs, root = new_export(tmp_path, "export", 1234)
    yield fs, root
    fs.close()


@pytest.fixture
def client(export):
    return Client(Resolver(export[0]))


@pytest.fixture
def root_fh(export):
    return export[0].root_fh


def made(res):
    """The new object's handle from a CREATE/MKDIR/SYMLINK/MKNOD result."""
    assert res.disc == OK, res
    assert res.body.obj is not None and res.body.obj_attributes is not None
    assert res.body.dir_wcc.before is not None and res.body.dir_wcc.after is not None
    return res.body.obj


# --- the basics -------------------------------------------------------------------


def test_null_answers_with_an_empty_body(client):
    assert client.raw(NFSPROC3.NULL, b"").body == b""


def test_getattr_of_the_root(client, root_fh, export):
    a = client.getattr(root_fh)
    st = os.stat(export[1])
    assert a.type == ftype3.NF3DIR and a.mode == 0o755
    assert (a.fileid, a.fsid, a.nlink) == (st.st_ino, export[0].fsid, st.st_nlink)
    assert a.mtime == nfs3attrs.time3(st.st_mtime_ns)


def test_hand_encoded_replies_are_the_codecs_encoding(client, root_fh, export):
    # GETATTR, LOOKUP and ACCESS build their replies with struct.pack; each
    # must be exactly the XDR of what it decodes to.
    fh = made(client.create(root_fh, b"f"))
    d = made(client.mkdir(root_fh, b"d"))
    calls = [(NFSPROC3.GETATTR, nfs3.GETATTR3args(fh)), (NFSPROC3.GETATTR, nfs3.GETATTR3args(d)),
             (NFSPROC3.LOOKUP, nfs3.LOOKUP3args(diropargs3(root_fh, b"f"))),
             (NFSPROC3.LOOKUP, nfs3.LOOKUP3args(diropargs3(d, b"."))),
             (NFSPROC3.LOOKUP, nfs3.LOOKUP3args(diropargs3(d, b".."))),
             (NFSPROC3.ACCESS, nfs3.ACCESS3args(fh, 0x3F)),
             (NFSPROC3.ACCESS, nfs3.ACCESS3args(d, ACCESS3_LOOKUP | 0x8000))]
    for proc, args in calls:
        res_type = PROCEDURES[proc][2]
        body = client.body(proc, args)
        res = decode(res_type, body)
        assert res.disc == OK and encode(res_type, res) == body, (proc, args)
    assert client.ok(NFSPROC3.LOOKUP, calls[2][1]).object == fh
    assert client.ok(NFSPROC3.ACCESS, calls[6][1]).access == ACCESS3_LOOKUP


def test_bad_handles(client):
    res = client.call(NFSPROC3.GETATTR, nfs3.GETATTR3args(GARBAGE_FH))
    assert res.disc in (nfsstat3.NFS3ERR_BADHANDLE, nfsstat3.NFS3ERR_STALE) and res.body is None
    res = client.lookup(GARBAGE_FH, b"x")
    assert res.disc in (nfsstat3.NFS3ERR_BADHANDLE, nfsstat3.NFS3ERR_STALE)
    assert res.body.dir_attributes is None


def test_undecodable_arguments_are_garbage_args(client):
    r = client.raw(NFSPROC3.LOOKUP, encode(nfs3.nfs_fh3, b"h" * 32) + b"\0\0\0\x08abc")
    assert r.stat == rpc.accept_stat.GARBAGE_ARGS
    r = client.raw(NFSPROC3.GETATTR, b"\0\0\0\x41" + b"h" * 68)  # a 65-byte handle
    assert r.stat == rpc.accept_stat.GARBAGE_ARGS


def test_refused_client_learns_nothing(export, root_fh):
    c = Client(Resolver(export[0], refuse=FsError(nfsstat3.NFS3ERR_ACCES)))
    res = c.lookup(root_fh, b"x")
    assert res.disc == nfsstat3.NFS3ERR_ACCES and res.body.dir_attributes is None
    res = c.call(NFSPROC3.REMOVE, nfs3.REMOVE3args(diropargs3(root_fh, b"x")))
    assert res.disc == nfsstat3.NFS3ERR_ACCES and res.body.dir_wcc == nfs3.wcc_data(None, None)


def test_unexpected_exceptions_become_system_err(export, root_fh):
    c = Client(Resolver(export[0], refuse=RuntimeError("bug")))
    r = c.raw(NFSPROC3.GETATTR, encode(nfs3.GETATTR3args, nfs3.GETATTR3args(root_fh)))
    assert r.stat == rpc.accept_stat.SYSTEM_ERR


# --- files and data -----------------------------------------------------------------


def test_create_write_read_commit(client, root_fh, export):
    fh = made(client.create(root_fh, b"f", 0o640))
    assert client.getattr(fh).type == ftype3.NF3REG and client.getattr(fh).mode == 0o640
    looked = client.ok(NFSPROC3.LOOKUP, nfs3.LOOKUP3args(diropargs3(root_fh, b"f")))
    assert looked.object == fh and looked.obj_attributes.size == 0
    assert looked.dir_attributes.type == ftype3.NF3DIR

    res = client.write(fh, 5, b"hello", stable_how.UNSTABLE)
    assert res.disc == OK
    w = res.body
    assert w.count == 5 and w.file_wcc.before.size == 0 and w.file_wcc.after.size == 10
    assert w.committed in (stable_how.UNSTABLE, stable_how.DATA_SYNC, stable_how.FILE_SYNC)

    r = client.read(fh, 0, 100).body
    assert (r.data, r.count, r.eof) == (b"\0\0\0\0\0hello", 10, True)
    r = client.read(fh, 0, 4).body
    assert (r.data, r.count, r.eof) == (b"\0\0\0\0", 4, False)
    assert r.file_attributes.size == 10
    assert client.read(fh, 50, 4).body.eof is True

    c = client.ok(NFSPROC3.COMMIT, nfs3.COMMIT3args(fh, 0, 0))
    assert c.verf == w.verf and c.file_wcc.after.size == 10
    # The export holds a metafile; the data lives in the data path.
    assert b"hello" not in (export[1] / "f").read_bytes()


def test_write_whose_count_disagrees_with_its_data_is_inval(client, root_fh):
    fh = made(client.create(root_fh, b"f"))
    res = client.call(NFSPROC3.WRITE, nfs3.WRITE3args(fh, 0, 4, stable_how.FILE_SYNC, b"abc"))
    assert res.disc == nfsstat3.NFS3ERR_INVAL
    assert res.body.file_wcc.after.size == 0  # resfail still carries what it can


def test_read_and_write_of_a_directory(client, root_fh):
    assert client.read(root_fh, 0, 10).disc == nfsstat3.NFS3ERR_ISDIR
    res = client.write(root_fh, 0, b"x")
    assert res.disc == nfsstat3.NFS3ERR_ISDIR and res.body.file_wcc.after.type == ftype3.NF3DIR


def test_read_is_limited_to_rtmax(export, root_fh):
    c = Client(Resolver(export[0]), transport="udp")
    fh = made(c.create(root_fh, b"big"))
    assert c.write(fh, 0, b"z" * 40000).disc == OK
    r = c.read(fh, 0, 40000).body
    assert r.count == nfs3proc.MAX_IO_UDP == len(r.data) and r.eof is False


def test_guarded_and_exclusive_create(client, root_fh):
    fh = made(client.create(root_fh, b"g", how=createmode3.GUARDED))
    res = client.create(root_fh, b"g", how=createmode3.GUARDED)
    assert res.disc == nfsstat3.NFS3ERR_EXIST and res.body.dir_wcc.after.type == ftype3.NF3DIR
    assert made(client.create(root_fh, b"g")) == fh  # UNCHECKED: the existing file

    def exclusive(verf):
        return client.call(NFSPROC3.CREATE, nfs3.CREATE3args(
            diropargs3(root_fh, b"x"), createhow3(createmode3.EXCLUSIVE, verf)))
    fh = made(exclusive(b"12345678"))
    assert made(exclusive(b"12345678")) == fh  # a retransmission succeeds again
    assert exclusive(b"87654321").disc == nfsstat3.NFS3ERR_EXIST


def test_setattr(client, root_fh):
    fh = made(client.create(root_fh, b"f"))
    assert client.write(fh, 0, b"0123456789").disc == OK
    new = S.replace(mode=0o600, size=4,
                    mtime=set_mtime(time_how.SET_TO_CLIENT_TIME, nfstime3(1000, 5)))
    w = client.ok(NFSPROC3.SETATTR, nfs3.SETATTR3args(fh, new, None)).obj_wcc
    assert w.before.size == 10
    assert (w.after.mode, w.after.size, w.after.mtime) == (0o600, 4, nfstime3(1000, 5))
    assert client.read(fh, 0, 100).body.data == b"0123"


def test_setattr_guard(client, root_fh):
    fh = made(client.create(root_fh, b"f"))
    ctime = client.getattr(fh).ctime
    stale = nfstime3(ctime.seconds - 1, ctime.nseconds)
    res = client.call(NFSPROC3.SETATTR, nfs3.SETATTR3args(fh, S.replace(mode=0o700), stale))
    assert res.disc == nfsstat3.NFS3ERR_NOT_SYNC and res.body.obj_wcc.after.mode == 0o644
    res = client.call(NFSPROC3.SETATTR, nfs3.SETATTR3args(fh, S.replace(mode=0o700), ctime))
    assert res.disc == OK
    assert client.getattr(fh).mode == 0o700


def test_setattr_with_invalid_nseconds_is_inval(client, root_fh):
    new = S.replace(atime=set_atime(time_how.SET_TO_CLIENT_TIME, nfstime3(1, 10**9)))
    res = client.call(NFSPROC3.SETATTR, nfs3.SETATTR3args(root_fh, new, None))
    assert res.disc == nfsstat3.NFS3ERR_INVAL


# --- the namespace -------------------------------------------------------------------


def test_lookup_errors(client, root_fh):
    res = client.lookup(root_fh, b"missing")
    assert res.disc == nfsstat3.NFS3ERR_NOENT and res.body.dir_attributes.type == ftype3.NF3DIR
    assert client.lookup(root_fh, b"n" * 256).disc == nfsstat3.NFS3ERR_NAMETOOLONG
    assert client.lookup(root_fh, b"a/b").disc == nfsstat3.NFS3ERR_INVAL
    fh = made(client.create(root_fh, b"f"))
    assert client.lookup(fh, b"x").disc == nfsstat3.NFS3ERR_NOTDIR


def test_dotdot_of_the_root_is_the_root(client, root_fh):
    up = client.ok(NFSPROC3.LOOKUP, nfs3.LOOKUP3args(diropargs3(root_fh, b"..")))
    assert up.object == root_fh
    d = made(client.mkdir(root_fh, b"d"))
    assert client.ok(NFSPROC3.LOOKUP, nfs3.LOOKUP3args(diropargs3(d, b".."))).object == root_fh


def test_mkdir_rmdir_remove(client, root_fh, export):
    d = made(client.mkdir(root_fh, b"d", 0o750))
    assert client.getattr(d).type == ftype3.NF3DIR and client.getattr(d).mode == 0o750
    made(client.create(d, b"f"))
    res = client.call(NFSPROC3.RMDIR, nfs3.RMDIR3args(diropargs3(root_fh, b"d")))
    assert res.disc == nfsstat3.NFS3ERR_NOTEMPTY and res.body.dir_wcc.after is not None
    w = client.ok(NFSPROC3.REMOVE, nfs3.REMOVE3args(diropargs3(d, b"f"))).dir_wcc
    assert w.after.nlink == 2
    res = client.call(NFSPROC3.REMOVE, nfs3.REMOVE3args(diropargs3(d, b"f")))
    assert res.disc == nfsstat3.NFS3ERR_NOENT and res.body.dir_wcc.after.type == ftype3.NF3DIR
    client.ok(NFSPROC3.RMDIR, nfs3.RMDIR3args(diropargs3(root_fh, b"d")))
    assert not (export[1] / "d").exists()
    assert client.call(NFSPROC3.GETATTR, nfs3.GETATTR3args(d)).disc == nfsstat3.NFS3ERR_STALE


def test_symlink_and_readlink(client, root_fh, export):
    args = nfs3.SYMLINK3args(diropargs3(root_fh, b"l"), nfs3.symlinkdata3(S, b"../somewhere/else"))
    fh = made(client.call(NFSPROC3.SYMLINK, args))
    assert client.getattr(fh).type == ftype3.NF3LNK
    r = client.ok(NFSPROC3.READLINK, nfs3.READLINK3args(fh))
    assert r.data == b"../somewhere/else" and r.symlink_attributes.type == ftype3.NF3LNK
    assert os.readlink(export[1] / "l") == "../somewhere/else"
    res = client.call(NFSPROC3.READLINK, nfs3.READLINK3args(root_fh))
    assert res.disc == nfsstat3.NFS3ERR_INVAL and res.body.symlink_attributes is not None


def test_mknod(client, root_fh, export):
    def mknod(name, what):
        return client.call(NFSPROC3.MKNOD, nfs3.MKNOD3args(diropargs3(root_fh, name), what))
    fifo = made(mknod(b"fifo", mknoddata3(ftype3.NF3FIFO, S.replace(mode=0o600))))
    a = client.getattr(fifo)
    assert a.type == ftype3.NF3FIFO and a.mode == 0o600
    assert stat.S_ISFIFO(os.lstat(export[1] / "fifo").st_mode)
    made(mknod(b"sock", mknoddata3(ftype3.NF3SOCK, S)))
    assert stat.S_ISSOCK(os.lstat(export[1] / "sock").st_mode)
    if os.geteuid() == 0:
        chr_ = made(mknod(b"null", mknoddata3(ftype3.NF3CHR, nfs3.devicedata3(S, specdata3(1, 3)))))
        a = client.getattr(chr_)
        assert a.type == ftype3.NF3CHR and a.rdev == specdata3(1, 3)
    for bad in (ftype3.NF3REG, ftype3.NF3DIR, ftype3.NF3LNK):
        res = mknod(b"bad", mknoddata3(bad))
        assert res.disc == nfsstat3.NFS3ERR_BADTYPE and res.body.dir_wcc.after is not None
    assert not (export[1] / "bad").exists()


def test_rename(client, root_fh, export):
    fh = made(client.create(root_fh, b"a"))
    d = made(client.mkdir(root_fh, b"d"))
    r = client.ok(NFSPROC3.RENAME, nfs3.RENAME3args(diropargs3(root_fh, b"a"), diropargs3(d, b"b")))
    assert r.fromdir_wcc.after.type == ftype3.NF3DIR and r.todir_wcc.after is not None
    assert client.lookup(root_fh, b"a").disc == nfsstat3.NFS3ERR_NOENT
    assert client.ok(NFSPROC3.LOOKUP, nfs3.LOOKUP3args(diropargs3(d, b"b"))).object == fh
    res = client.call(NFSPROC3.RENAME, nfs3.RENAME3args(
        diropargs3(root_fh, b"zz"), diropargs3(d, b"c")))
    assert res.disc == nfsstat3.NFS3ERR_NOENT
    assert res.body.fromdir_wcc.after is not None and res.body.todir_wcc.after is not None


def test_link(client, root_fh):
    fh = made(client.create(root_fh, b"a"))
    r = client.ok(NFSPROC3.LINK, nfs3.LINK3args(fh, diropargs3(root_fh, b"b")))
    assert r.file_attributes.nlink == 2 and r.linkdir_wcc.after.type == ftype3.NF3DIR
    assert client.ok(NFSPROC3.LOOKUP, nfs3.LOOKUP3args(diropargs3(root_fh, b"b"))).object == fh
    res = client.call(NFSPROC3.LINK, nfs3.LINK3args(fh, diropargs3(root_fh, b"b")))
    assert res.disc == nfsstat3.NFS3ERR_EXIST and res.body.file_attributes.nlink == 2


def test_rename_and_link_across_exports_are_xdev(tmp_path, export, root_fh):
    other, _ = new_export(tmp_path, "other", 5678)
    try:
        c = Client(Resolver(export[0], other))
        fh = made(c.create(root_fh, b"a"))
        res = c.call(NFSPROC3.RENAME, nfs3.RENAME3args(
            diropargs3(root_fh, b"a"), diropargs3(other.root_fh, b"a")))
        assert res.disc == nfsstat3.NFS3ERR_XDEV
        assert res.body.fromdir_wcc.after.fileid != res.body.todir_wcc.after.fileid
        res = c.call(NFSPROC3.LINK, nfs3.LINK3args(fh, diropargs3(other.root_fh, b"a")))
        assert res.disc == nfsstat3.NFS3ERR_XDEV and res.body.file_attributes.nlink == 1
        assert c.lookup(other.root_fh, b"a").disc == nfsstat3.NFS3ERR_NOENT
    finally:
        other.close()


# --- permissions -------------------------------------------------------------------


def test_access(client, root_fh, export):
    fh = made(client.create(root_fh, b"secret", 0o600))
    all_bits = (ACCESS3_READ | ACCESS3_LOOKUP | ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_DELETE
                | ACCESS3_EXECUTE)
    r = client.ok(NFSPROC3.ACCESS, nfs3.ACCESS3args(fh, ACCESS3_READ | ACCESS3_MODIFY))
    assert r.access == ACCESS3_READ | ACCESS3_MODIFY and r.obj_attributes.mode == 0o600
    r = client.ok(NFSPROC3.ACCESS, nfs3.ACCESS3args(fh, all_bits), cred=USER)
    assert r.access == 0
    r = client.ok(NFSPROC3.ACCESS, nfs3.ACCESS3args(root_fh, ACCESS3_LOOKUP | ACCESS3_MODIFY),
                  cred=USER)
    assert r.access == ACCESS3_LOOKUP  # 0755 root-owned directory


def test_unprivileged_callers(client, root_fh, export):
    res = client.create(root_fh, b"nope", cred=USER)
    assert res.disc == nfsstat3.NFS3ERR_ACCES and res.body.dir_wcc.after is not None
    d = made(client.mkdir(root_fh, b"home", 0o755))
    client.ok(NFSPROC3.SETATTR, nfs3.SETATTR3args(d, S.replace(uid=1000, gid=1000), None))
    fh = made(client.create(d, b"mine", 0o600, cred=USER))
    assert client.getattr(fh).uid == 1000
    assert client.write(fh, 0, b"data", cred=USER).disc == OK
    assert client.read(fh, 0, 4, cred=OTHER).disc == nfsstat3.NFS3ERR_ACCES
    assert client.write(fh, 0, b"x", cred=OTHER).disc == nfsstat3.NFS3ERR_ACCES


def test_read_only_callers_get_rofs(export, root_fh):
    rw = Client(Resolver(export[0]))
    fh = made(rw.create(root_fh, b"f"))
    ro = Client(Resolver(export[0], readonly=True))
    assert ro.create(root_fh, b"g").disc == nfsstat3.NFS3ERR_ROFS
    assert ro.write(fh, 0, b"x").disc == nfsstat3.NFS3ERR_ROFS
    assert ro.call(NFSPROC3.REMOVE, nfs3.REMOVE3args(diropargs3(root_fh, b"f"))).disc == \
        nfsstat3.NFS3ERR_ROFS
    assert ro.call(NFSPROC3.SETATTR, nfs3.SETATTR3args(fh, S.replace(mode=0), None)).disc == \
        nfsstat3.NFS3ERR_ROFS
    r = ro.ok(NFSPROC3.ACCESS, nfs3.ACCESS3args(fh, ACCESS3_READ | ACCESS3_MODIFY | ACCESS3_EXTEND))
    assert r.access == ACCESS3_READ
    assert ro.read(fh, 0, 1).disc == OK


# --- directories -----------------------------------------------------------------------


def readdir_all(client, d, count):
    names, cookie, verf, pages = [], 0, bytes(8), 0
    while True:
        body = client.body(NFSPROC3.READDIR, nfs3.READDIR3args(d, cookie, verf, count))
        assert len(body) - 4 <= count  # the READDIR3resok part, as RFC 1813 counts it
        res = decode(nfs3.READDIR3res, body)
        assert res.disc == OK, res
        page = res.body.reply
        pages += 1
        names += [e.name for e in page.entries]
        if page.eof:
            return names, pages
        assert page.entries, "a page that is not the last must make progress"
        cookie, verf = page.entries[-1].cookie, res.body.cookieverf


def populate(export, n):
    names = {f"file-{i:03d}".encode() for i in range(n)}
    for name in names:
        (export[1] / name.decode()).mkdir()  # directories need no metafile
    return names | {b".", b".."}


def test_readdir_pages_through_everything_within_count(client, root_fh, export):
    expected = populate(export, 60)
    names, pages = readdir_all(client, root_fh, 512)
    assert sorted(names) == sorted(expected) and pages > 3
    names, pages = readdir_all(client, root_fh, 65536)
    assert sorted(names) == sorted(expected) and pages == 1


def test_readdir_too_small(client, root_fh):
    for count in (0, 100, 120):
        res = client.call(NFSPROC3.READDIR, nfs3.READDIR3args(root_fh, 0, bytes(8), count))
        assert res.disc == nfsstat3.NFS3ERR_TOOSMALL and res.body.dir_attributes is not None


def test_readdir_of_a_file_is_notdir(client, root_fh):
    fh = made(client.create(root_fh, b"f"))
    res = client.call(NFSPROC3.READDIR, nfs3.READDIR3args(fh, 0, bytes(8), 4096))
    assert res.disc == nfsstat3.NFS3ERR_NOTDIR and res.body.dir_attributes.type == ftype3.NF3REG


def readdirplus_all(client, d, dircount, maxcount):
    entries, cookie, verf = [], 0, bytes(8)
    while True:
        args = nfs3.READDIRPLUS3args(d, cookie, verf, dircount, maxcount)
        body = client.body(NFSPROC3.READDIRPLUS, args)
        assert len(body) - 4 <= maxcount
        res = decode(nfs3.READDIRPLUS3res, body)
        assert res.disc == OK, res
        page = res.body.reply
        entries += page.entries
        if page.eof:
            return entries
        assert page.entries
        cookie, verf = page.entries[-1].cookie, res.body.cookieverf


def test_readdirplus_gives_handles_and_attributes(client, root_fh, export):
    expected = populate(export, 30)
    fh = made(client.create(root_fh, b"regular"))
    expected.add(b"regular")
    for dircount, maxcount in ((65536, 65536), (200, 4096), (0, 1024)):
        entries = readdirplus_all(client, root_fh, dircount, maxcount)
        assert sorted(e.name for e in entries) == sorted(expected)
        by_name = {e.name: e for e in entries}
        assert by_name[b"regular"].name_handle == fh
        assert by_name[b"regular"].name_attributes == client.getattr(fh)
        assert by_name[b"."].name_handle == root_fh
        for e in entries:
            assert e.name_attributes.fileid == e.fileid
            assert client.getattr(e.name_handle).fileid == e.fileid


def entry3_size(name):
    return 4 + 8 + 4 + (len(name) + 3) // 4 * 4 + 8


def mixed_tree(client, root_fh, export):
    """A directory with an object of every kind, some made through the server
    (in its handle cache), some behind its back (not)."""
    d = made(client.mkdir(root_fh, b"mixed"))
    made(client.create(d, b"regular"))
    path = export[1] / "mixed"
    for i in range(40):
        (path / f"dir-{i:02d}").mkdir()
    os.symlink("regular", path / "link")
    os.mkfifo(path / "fifo")
    return d


def test_readdir_reply_is_the_codecs_encoding(client, root_fh, export):
    d = mixed_tree(client, root_fh, export)
    cookie, verf, pages = 0, bytes(8), 0
    while True:
        body = client.body(NFSPROC3.READDIR, nfs3.READDIR3args(d, cookie, verf, 300))
        res = decode(nfs3.READDIR3res, body)
        assert res.disc == OK and encode(nfs3.READDIR3res, res) == body
        pages += 1
        if res.body.reply.eof:
            break
        cookie, verf = res.body.reply.entries[-1].cookie, res.body.cookieverf
    assert pages > 2


def test_readdirplus_reply_is_the_codecs_encoding(client, root_fh, export):
    d = mixed_tree(client, root_fh, export)
    for cookie, verf in ((0, bytes(8)), (None, None)):
        if cookie is None:  # a page that starts after the dot entries
            first = client.ok(NFSPROC3.READDIRPLUS, nfs3.READDIRPLUS3args(d, 0, bytes(8), 300, 4096))
            cookie, verf = first.reply.entries[-1].cookie, first.cookieverf
        body = client.body(NFSPROC3.READDIRPLUS, nfs3.READDIRPLUS3args(d, cookie, verf, 4096, 8192))
        res = decode(nfs3.READDIRPLUS3res, body)
        assert res.disc == OK and res.body.reply.entries
        assert encode(nfs3.READDIRPLUS3res, res) == body


def test_readdirplus_entries_are_what_lookup_gives(client, root_fh, export, tmp_path):
    d = mixed_tree(client, root_fh, export)
    first = readdirplus_all(client, d, 65536, 65536)
    again = readdirplus_all(client, d, 65536, 65536)  # handles remembered by now
    # A server started afresh (nothing cached) makes the same handles.
    fresh = MetaFS(str(export[1]), export[0].export_id, b"k" * 32, NO_FORWARDING)
    try:
        restarted = readdirplus_all(Client(Resolver(fresh)), d, 65536, 65536)
    finally:
        fresh.close()
    assert len(first) == 45
    for listing in (again, restarted):
        assert [(e.name, e.fileid, e.cookie, e.name_handle) for e in listing] == \
            [(e.name, e.fileid, e.cookie, e.name_handle) for e in first]
    for e in again:
        looked_up = client.ok(NFSPROC3.LOOKUP, nfs3.LOOKUP3args(diropargs3(d, e.name)))
        assert e.name_handle == looked_up.object, e.name
        assert e.name_attributes == looked_up.obj_attributes, e.name
        assert e.name_attributes.fileid == e.fileid


def test_readdirplus_gives_a_name_replaced_behind_its_back_its_new_handle(client, root_fh,
                                                                          export):
    d = mixed_tree(client, root_fh, export)
    path = export[1] / "mixed"
    before = {e.name: e for e in readdirplus_all(client, d, 65536, 65536)}
    os.rmdir(path / "dir-07")
    (path / "dir-07").mkdir()  # (the inode number may well come back)
    os.chmod(path / "dir-08", 0o700)  # same object, new ctime
    after = {e.name: e for e in readdirplus_all(client, d, 65536, 65536)}
    assert after[b"dir-07"].name_handle != before[b"dir-07"].name_handle
    assert client.getattr(after[b"dir-07"].name_handle).fileid == \
        os.stat(path / "dir-07").st_ino
    res = client.call(NFSPROC3.GETATTR, nfs3.GETATTR3args(before[b"dir-07"].name_handle))
    assert res.disc == nfsstat3.NFS3ERR_STALE
    assert after[b"dir-08"].name_handle == before[b"dir-08"].name_handle
    assert after[b"dir-08"].name_attributes.mode == 0o700


def test_readdirplus_forgets_the_handle_of_a_file_removed_through_the_server(client, root_fh,
                                                                            export):
    # A new file may get the removed one's inode number, and (on kernels
    # before 6.13, within one clock tick) its ctime too: what READDIRPLUS
    # remembered of the old one must not be given out for it.
    d = mixed_tree(client, root_fh, export)
    before = {e.name: e for e in readdirplus_all(client, d, 65536, 65536)}
    old = before[b"dir-05"]
    codec = export[0]._codec
    assert old.fileid in codec._minted  # remembered by the listing
    res = client.call(NFSPROC3.RMDIR, nfs3.RMDIR3args(diropargs3(d, b"dir-05")))
    assert res.disc == OK
    assert old.fileid not in codec._minted
    made(client.mkdir(d, b"dir-05"))
    after = {e.name: e for e in readdirplus_all(client, d, 65536, 65536)}
    assert client.getattr(after[b"dir-05"].name_handle).fileid == \
        os.stat(export[1] / "mixed" / "dir-05").st_ino


@pytest.mark.parametrize("dircount", [0, 60, 200, 1000])
def test_readdirplus_ignores_dircount(client, root_fh, export, dircount):
    # As with Linux's nfsd: maxcount alone sizes the reply, dircount is not used.
    d = mixed_tree(client, root_fh, export)
    page = client.ok(NFSPROC3.READDIRPLUS, nfs3.READDIRPLUS3args(d, 0, bytes(8), dircount, 65536))
    assert page.reply.eof
    assert len({e.name for e in page.reply.entries}) == 45


def test_readdirplus_fills_a_linux_sized_reply_up_to_maxcount(client, root_fh):
    # The Linux client asks for dircount = maxcount / 8: honoured, that would
    # cut a page of names like these at 128 entries.
    d = made(client.mkdir(root_fh, b"many"))
    for i in range(400):
        made(client.create(d, f"f{i:05d}".encode()))
    seen, cookie, verf = [], 0, bytes(8)
    while True:
        body = client.body(NFSPROC3.READDIRPLUS,
                           nfs3.READDIRPLUS3args(d, cookie, verf, 4096, 32768))
        res = decode(nfs3.READDIRPLUS3res, body)
        assert res.disc == OK
        entries = res.body.reply.entries
        assert len(body) - 4 <= 32768  # (the status word is not part of the resok)
        seen += [e.name for e in entries]
        if res.body.reply.eof:
            break
        assert len(entries) > 180 and len(body) > 32768 - 2 * 160
        cookie, verf = entries[-1].cookie, res.body.cookieverf
    assert sorted(seen) == sorted([b".", b".."] + [f"f{i:05d}".encode() for i in range(400)])


def test_readdirplus_too_small(client, root_fh):
    res = client.call(NFSPROC3.READDIRPLUS, nfs3.READDIRPLUS3args(root_fh, 0, bytes(8), 4096, 150))
    assert res.disc == nfsstat3.NFS3ERR_TOOSMALL


def test_readdir_with_a_foreign_verifier_is_bad_cookie(client, root_fh, export):
    populate(export, 3)
    res = client.call(NFSPROC3.READDIR, nfs3.READDIR3args(root_fh, 12345, b"notours!", 4096))
    assert res.disc == nfsstat3.NFS3ERR_BAD_COOKIE


# --- file system information ----------------------------------------------------------


@pytest.mark.parametrize("transport,size", [("tcp", 1 << 20), ("udp", 32 << 10)])
def test_fsinfo(export, root_fh, transport, size):
    c = Client(Resolver(export[0]), transport=transport)
    i = c.ok(NFSPROC3.FSINFO, nfs3.FSINFO3args(root_fh))
    assert (i.rtmax, i.rtpref, i.wtmax, i.wtpref) == (size,) * 4
    assert (i.rtmult, i.wtmult) == (4096, 4096)
    assert i.dtpref == min(64 << 10, size)
    assert i.maxfilesize == 2**63 - 1 and i.time_delta == nfstime3(0, 1)
    assert i.properties == nfs3.FSF3_LINK | nfs3.FSF3_SYMLINK | nfs3.FSF3_HOMOGENEOUS | \
        nfs3.FSF3_CANSETTIME
    assert i.obj_attributes.type == ftype3.NF3DIR


def test_pathconf(client, root_fh, export):
    p = client.ok(NFSPROC3.PATHCONF, nfs3.PATHCONF3args(root_fh))
    assert p.linkmax == os.pathconf(export[1], "PC_LINK_MAX")
    assert p.name_max == 255
    assert (p.no_trunc, p.chown_restricted, p.case_insensitive, p.case_preserving) == \
        (True, True, False, True)


def test_fsstat(client, root_fh):
    s = client.ok(NFSPROC3.FSSTAT, nfs3.FSSTAT3args(root_fh))
    assert s.tbytes >= s.fbytes >= s.abytes and s.tbytes > 0
    assert s.tfiles >= s.ffiles >= s.afiles
    assert s.invarsec == 0 and s.obj_attributes.type == ftype3.NF3DIR
    res = client.call(NFSPROC3.FSSTAT, nfs3.FSSTAT3args(GARBAGE_FH))
    assert res.disc != OK and res.body.obj_attributes is None


def test_a_readdirplus_page_holds_at_most_dtpref_whatever_maxcount_asks(client, root_fh):
    # Its lookups run on the event loop: a page of 1 MiB would stall it.
    d = made(client.mkdir(root_fh, b"huge"))
    for i in range(700):
        made(client.create(d, f"f{i:05d}".encode()))
    body = client.body(NFSPROC3.READDIRPLUS,
                       nfs3.READDIRPLUS3args(d, 0, bytes(8), 1 << 20, 1 << 20))
    res = decode(nfs3.READDIRPLUS3res, body)
    assert res.disc == OK and not res.body.reply.eof
    assert nfs3proc.DTPREF - 2 * 160 < len(body) - 4 <= nfs3proc.DTPREF
