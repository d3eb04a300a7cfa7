"""The iod's protocol engine (iod/engine.py) as a specification: frames and
times in, answers out, compared byte for byte with the frame the iod must
send. No processes, sockets or clocks: the data store is a real one in a
temporary directory, the spoofing sender a recorder, and the time whatever
each test says."""

import errno
import ipaddress
import itertools
import os

import pytest

from common import dsfh, iodproto
from common.iodproto import FORWARD_MAX_AGE, Message, Op
from common.runtime.datastore import MARKER, open_store
from common.runtime.version import VERSION
from iod.dsrevoked import Revoked
from iod.engine import STORE_CHECK_INTERVAL, Engine
from iod.nfs4ds import FileRange, Reply
from iod.ipv4 import MAX_UDP_PAYLOAD

KEYS = iodproto.Keys.single(b"cluster key for the engine tests")
OTHER_KEYS = iodproto.Keys.single(b"some other cluster's key.......")
VERIFIER = bytes.fromhex("0123456789abcdef")
START = 1_800_000_000.0     # the wall clock when the engine starts
BOOT = 500.0                # the monotonic clock then
METASERVER = ("10.0.0.1", 800)
CLIENT = ("10.0.0.9", 1023)
NFS_SERVICE = ("10.0.0.1", 2049)    # where the client sent its NFS request


class Recorder:
    """The spoofing sender (iod/spoof.py Spoofer.send) as the engine sees
    it: keeps each datagram, or fails with ``error``."""

    def __init__(self):
        self.sent = []
        self.error = None

    def send(self, src_ip, src_port, dst_ip, dst_port, parts):
        if self.error is not None:
            raise self.error
        self.sent.append(((src_ip, src_port), (dst_ip, dst_port), b"".join(parts)))
        return 1


@pytest.fixture
def store(tmp_path):
    s = open_store(str(tmp_path / "data"))
    yield s
    s.close()


@pytest.fixture
def spoofer():
    return Recorder()


@pytest.fixture
def engine(store, spoofer):
    return make_engine(store, spoofer)


def make_engine(store, spoofer, **kw):
    kw.setdefault("pong_allow", [ipaddress.ip_network("10.0.0.0/24")])
    return Engine(KEYS, store, spoofer, wall=START, mono=BOOT, verifier=VERIFIER, **kw)


_ids = itertools.count(1)
_sender = iodproto.Sequencer(sender=77)


def request(op, stamp_time=START + 1, **fields):
    """A request as the metaserver sends it: stamped (stamp_time None: not)."""
    stamp = None if stamp_time is None else _sender.stamp(stamp_time)
    return Message(op, next(_ids), stamp, **fields)


def signed(msg, keys=KEYS):
    return iodproto.encode(msg, keys)


def tcp(engine, msg, at=1.0, peer=METASERVER):
    """The engine's answer to ``msg`` over TCP, ``at`` seconds after its start,
    as the bytes the connection sends (a Reply's FileRange as os.sendfile
    sends it: what the datafile has, zeros past it)."""
    answer = engine.handle(signed(msg), peer, False, START + at, BOOT + at)
    if not isinstance(answer, Reply):
        return answer
    out = []
    for part in answer.parts:
        if isinstance(part, FileRange):
            data = b"" if part.pinned is None else os.pread(part.pinned.fd, part.count,
                                                              part.offset)
            out.append(data + bytes(part.count - len(data)))
        else:
            out.append(part)
    answer.release()
    return b"".join(out)


def udp(engine, frame, at=1.0, peer=METASERVER):
    return engine.handle(frame, peer, True, START + at, BOOT + at)


def reply(msg, status=0, **fields):
    """The signed REPLY frame the iod must answer ``msg`` with."""
    return signed(iodproto.reply(msg, status, **fields))


def count(engine, name):
    return engine.counters.snapshot().get(name, 0)


# -- the data operations ------------------------------------------------------------

def test_write_stores_the_data_and_answers_with_this_boot_verifier(engine, store):
    w = request(Op.WRITE, ino=42, seed=7, offset=10, data=b"0123456789", stable=False)
    assert tcp(engine, w) == reply(w, verifier=VERIFIER)
    assert store.read(42, 7, 0, 100) == bytes(10) + b"0123456789"
    assert count(engine, "write_bytes") == 10


def test_read_answers_count_bytes_holes_and_the_end_as_zeros(engine, store):
    store.write(42, 7, 4, b"abcd")
    r = request(Op.READ, ino=42, seed=7, offset=2, count=10, stamp_time=None)
    assert tcp(engine, r) == reply(r, data=b"\0\0abcd\0\0\0\0")
    absent = request(Op.READ, ino=1, seed=1, offset=0, count=3, stamp_time=None)
    assert tcp(engine, absent) == reply(absent, data=bytes(3))


def test_a_read_of_several_ranges_answers_them_back_to_back(engine, store):
    store.write(42, 7, 0, b"0123456789")
    more = iodproto.pack_extents([(8, 4), (0, 2), (100, 1)])
    r = request(Op.READ, ino=42, seed=7, offset=3, count=2, more=more, stamp_time=None)
    want = b"34" + b"89\0\0" + b"01" + b"\0"
    assert tcp(engine, r) == reply(r, data=want)
    r = request(Op.READ, ino=42, seed=7, offset=3, count=2, more=more)   # stamped: over UDP
    assert udp(engine, signed(r)) == reply(r, data=want)
    assert count(engine, "read_bytes") == 2 * 9


def test_a_read_of_several_ranges_is_bounded_and_never_forwarded(engine, store, spoofer):
    too_much = iodproto.pack_extents([(0, iodproto.MAX_DATA)])
    r = request(Op.READ, ino=42, seed=7, offset=0, count=1, more=too_much, stamp_time=None)
    assert tcp(engine, r) == reply(r, errno.EINVAL, message=f"count {iodproto.MAX_DATA + 1} "
                                                            f"exceeds {iodproto.MAX_DATA}")
    f = request(Op.READ, ino=42, seed=7, offset=0, count=1, client=("10.0.0.9", 700),
                source=("10.0.0.1", 2049), head=b"h", more=iodproto.pack_extents([(5, 1)]))
    assert udp(engine, signed(f)).startswith(b"NFSi")   # an error REPLY, nothing spoofed
    assert not spoofer.sent


def test_commit_answers_the_verifier(engine, store):
    store.write(42, 7, 0, b"x")
    c = request(Op.COMMIT, ino=42, seed=7, stamp_time=None)
    assert tcp(engine, c) == reply(c, verifier=VERIFIER)


def test_truncate_cuts_and_grows_with_zeros(engine, store):
    store.write(42, 7, 0, b"0123456789")
    t = request(Op.TRUNCATE, ino=42, seed=7, size=4)
    assert tcp(engine, t) == reply(t)
    assert store.read(42, 7, 0, 100) == b"0123"


def test_purge_removes_the_datafiles_and_counts_them(engine, store):
    store.write(1, 1, 0, b"a")
    store.write(2, 5, 0, b"b")
    p = request(Op.PURGE, files=[[1, 1], [2, 5], [3, 3]])
    assert tcp(engine, p) == reply(p)
    assert list(store.list()) == []
    assert count(engine, "purged_files") == 2


def ds_handle(ino, seed, minted, client="10.0.0.9"):
    return dsfh.verify(KEYS, dsfh.mint(KEYS, ino=ino, seed=seed, layout_gen=1, minted=minted,
                                       client=client, write=True, secure=False))


def test_purge_and_revoke_make_data_server_handles_stale(store, spoofer):
    revoked = Revoked(floor=int(START * 1000))
    engine = make_engine(store, spoofer, revoked=revoked)
    minted = int(START * 1000) + 500          # before the REVOKE's stamp, START + 1
    p = request(Op.PURGE, files=[[1, 1]])
    assert tcp(engine, p) == reply(p)
    assert revoked.stale(ds_handle(1, 1, minted))
    r = request(Op.REVOKE, files=[[2, 2]], clients=["10.0.0.7"])
    assert tcp(engine, r) == reply(r)
    assert revoked.stale(ds_handle(2, 2, minted))
    assert revoked.stale(ds_handle(3, 3, minted, client="10.0.0.7"))
    # a handle minted for the client after its revocation is honoured
    assert not revoked.stale(ds_handle(3, 3, minted + 1000, client="10.0.0.7"))
    assert not revoked.stale(ds_handle(3, 3, minted))
    everything = request(Op.REVOKE, stamp_time=START + 2, everything=True)
    assert tcp(engine, everything) == reply(everything)
    assert revoked.stale(ds_handle(3, 3, minted + 1000))
    assert not revoked.stale(ds_handle(3, 3, int((START + 2) * 1000)))


def test_a_revoke_needs_a_fresh_stamp_and_addresses(store, spoofer):
    revoked = Revoked(floor=0)
    engine = make_engine(store, spoofer, revoked=revoked)
    assert tcp(engine, request(Op.REVOKE, stamp_time=None, everything=True)) is None
    assert count(engine, "dropped_unstamped") == 1 and revoked.floor == 0
    bad = request(Op.REVOKE, clients=["not an address"])
    assert iodproto.decode(tcp(engine, bad), KEYS).status == errno.EINVAL


def test_list_names_every_datafile_then_resumes_after_a_cursor(engine, store):
    for ino, seed in ((1, 1), (2, 5), (300, 2)):
        store.write(ino, seed, 0, b"a")
    listing = request(Op.LIST, stamp_time=None)
    assert tcp(engine, listing) == reply(listing, files=list(store.list()), cursor=None)
    bad = request(Op.LIST, cursor=b"not ours", stamp_time=None)
    assert tcp(engine, bad) == reply(bad, errno.EINVAL,
                                     message="not a cursor this iod handed out")


def test_a_failing_disk_is_an_errno_reply(engine, store, monkeypatch):
    def full(*args, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(store, "write", full)
    w = request(Op.WRITE, ino=1, seed=1, offset=0, data=b"x", stable=True)
    assert tcp(engine, w) == reply(w, errno.ENOSPC, message="[Errno 28] No space left on device")
    assert count(engine, "error_enospc") == 1


# -- forwarded requests: the reply goes to the NFS client, from the metaserver ----

def test_a_forwarded_read_is_sent_to_the_client_as_head_data_and_xdr_padding(engine, store,
                                                                            spoofer):
    store.write(42, 7, 0, b"hello")
    head = b"RPC+NFS head"
    r = request(Op.READ, ino=42, seed=7, offset=0, count=7, client=CLIENT, source=NFS_SERVICE,
                head=head)
    assert udp(engine, signed(r)) is None           # nothing goes back to the metaserver
    assert spoofer.sent == [(NFS_SERVICE, CLIENT, head + b"hello\0\0" + b"\0")]
    assert count(engine, "spoofed_datagrams") == 1 and count(engine, "read_bytes") == 7


def test_a_forwarded_write_sends_the_prepared_reply_once_the_data_is_written(engine, store,
                                                                             spoofer):
    w = request(Op.WRITE, ino=42, seed=7, offset=0, data=b"data", stable=True, client=CLIENT,
                source=NFS_SERVICE, reply=b"the NFS WRITE reply")
    # ...and then acknowledged to the metaserver (it orders truncations after it)
    assert udp(engine, signed(w)) == reply(w, verifier=VERIFIER)
    assert store.read(42, 7, 0, 4) == b"data"
    assert spoofer.sent == [(NFS_SERVICE, CLIENT, b"the NFS WRITE reply")]


def test_a_forwarded_write_too_old_for_the_metaserver_to_wait_for_is_not_written(engine, store,
                                                                                spoofer):
    # Stamped at START + 1: taken FORWARD_MAX_AGE later it is still written...
    w = request(Op.WRITE, ino=42, seed=7, offset=0, data=b"data", stable=True, client=CLIENT,
                source=NFS_SERVICE, reply=b"the NFS WRITE reply")
    assert udp(engine, signed(w), at=1.0 + FORWARD_MAX_AGE) == reply(w, verifier=VERIFIER)
    # ...a moment later, no: the metaserver may have cut the file meanwhile.
    late = request(Op.WRITE, ino=42, seed=7, offset=4, data=b"late", stable=True, client=CLIENT,
                   source=NFS_SERVICE, reply=b"the NFS WRITE reply")
    assert udp(engine, signed(late), at=1.5 + FORWARD_MAX_AGE) == reply(
        late, errno.ETIMEDOUT, message=f"[Errno 110] forwarded WRITE {FORWARD_MAX_AGE + 0.5:.1f} "
                                       f"s old, more than {FORWARD_MAX_AGE:g} s: not written")
    assert store.read(42, 7, 0, 100) == b"data"
    assert len(spoofer.sent) == 1
    # A relayed WRITE is the metaserver's own call, waited for: never too old.
    relayed = request(Op.WRITE, ino=42, seed=7, offset=4, data=b"tail", stable=True)
    assert tcp(engine, relayed, at=30.0) == reply(relayed, verifier=VERIFIER)


def test_a_forwarded_reply_that_cannot_be_sent_is_an_error_to_the_metaserver(engine, store,
                                                                            spoofer):
    spoofer.error = OSError(errno.EHOSTUNREACH, "No route to host")
    r = request(Op.READ, ino=42, seed=7, offset=0, count=4, client=CLIENT, source=NFS_SERVICE)
    assert udp(engine, signed(r)) == reply(r, errno.EHOSTUNREACH,
                                           message="[Errno 113] No route to host")


def test_forwarded_requests_name_the_source_to_send_from(engine):
    r = request(Op.READ, ino=1, seed=1, offset=0, count=4, client=CLIENT)
    assert udp(engine, signed(r)) == reply(r, errno.EINVAL,
                                           message="READ with a client needs a source address")


def test_answers_that_do_not_fit_a_datagram_are_emsgsize_over_udp(engine):
    r = request(Op.READ, ino=1, seed=1, offset=0, count=MAX_UDP_PAYLOAD + 1)
    assert udp(engine, signed(r)) == reply(
        r, errno.EMSGSIZE, message="[Errno 90] answer too large for UDP; ask over TCP")
    # data that fits, but not with the frame around it
    big = request(Op.READ, ino=1, seed=1, offset=0, count=MAX_UDP_PAYLOAD - 10)
    assert udp(engine, signed(big)) == reply(big, errno.EMSGSIZE,
                                             message="answer too large for UDP; ask over TCP")
    assert len(tcp(engine, request(Op.READ, ino=1, seed=1, offset=0,
                                   count=MAX_UDP_PAYLOAD + 1))) > MAX_UDP_PAYLOAD


# -- trust: what is dropped unanswered ----------------------------------------------

def test_frames_that_do_not_verify_are_dropped_and_counted_by_reason(engine, store):
    w = signed(request(Op.WRITE, ino=1, seed=1, offset=0, data=b"x", stable=True))
    forged = w[:-1] + bytes([w[-1] ^ 1])
    assert tcp_frame(engine, forged) is None
    assert tcp_frame(engine, signed(request(Op.COMMIT, ino=1, seed=1), OTHER_KEYS)) is None
    assert tcp_frame(engine, b"NFSi" + bytes(60)) is None
    assert tcp_frame(engine, w[:-5]) is None
    assert store.read(1, 1, 0, 1) == b""
    assert engine.counters.snapshot() == {"dropped_bad_mac": 2, "dropped_malformed": 2}


def tcp_frame(engine, frame, at=1.0):
    return engine.handle(frame, METASERVER, False, START + at, BOOT + at)


def test_a_stamped_frame_is_acted_on_once(engine, store):
    w = request(Op.WRITE, ino=1, seed=1, offset=0, data=b"first", stable=False)
    frame = signed(w)
    assert tcp_frame(engine, frame) == reply(w, verifier=VERIFIER)
    store.write(1, 1, 0, b"later")
    assert tcp_frame(engine, frame, at=2.0) is None
    assert store.read(1, 1, 0, 5) == b"later"
    assert count(engine, "dropped_replay") == 1 and count(engine, "write") == 1


def test_a_stamp_further_than_the_clock_skew_from_the_wall_clock_is_stale(store, spoofer):
    engine = make_engine(store, spoofer, max_clock_skew=60)
    early = request(Op.TRUNCATE, ino=1, seed=1, size=0, stamp_time=START + 100)
    assert tcp(engine, early, at=39.0) is None            # 61 s ahead
    fine = request(Op.TRUNCATE, ino=1, seed=1, size=0, stamp_time=START + 100)
    assert tcp(engine, fine, at=41.0) == reply(fine)      # 59 s ahead
    late = request(Op.TRUNCATE, ino=1, seed=1, size=0, stamp_time=START + 100)
    assert tcp(engine, late, at=161.0) is None            # 61 s behind
    assert count(engine, "dropped_stale") == 2


def test_frames_stamped_before_the_engine_started_may_have_been_seen(engine):
    before = request(Op.TRUNCATE, ino=1, seed=1, size=0, stamp_time=START - 1)
    assert tcp(engine, before) is None
    assert count(engine, "dropped_replay") == 1


def test_what_changes_data_or_sends_elsewhere_needs_a_stamp(engine):
    unstamped = (request(Op.WRITE, stamp_time=None, ino=1, seed=1, offset=0, data=b"x",
                         stable=False),
                 request(Op.TRUNCATE, stamp_time=None, ino=1, seed=1, size=0),
                 request(Op.PURGE, stamp_time=None, files=[]))
    for msg in unstamped:
        assert tcp(engine, msg) is None
    forwarded = request(Op.READ, stamp_time=None, ino=1, seed=1, offset=0, count=1,
                        client=CLIENT, source=NFS_SERVICE)
    assert tcp(engine, forwarded) is None
    assert udp(engine, signed(request(Op.READ, stamp_time=None, ino=1, seed=1, offset=0,
                                      count=1))) is None
    assert count(engine, "dropped_unstamped") == 5
    # a READ, COMMIT or LIST over TCP answers its own (handshaken) peer: no stamp needed
    relayed = request(Op.READ, stamp_time=None, ino=1, seed=1, offset=0, count=1)
    assert tcp(engine, relayed) == reply(relayed, data=b"\0")


def test_over_udp_only_read_write_and_ping(engine):
    for op, fields in ((Op.COMMIT, {"ino": 1, "seed": 1}), (Op.LIST, {}),
                       (Op.TRUNCATE, {"ino": 1, "seed": 1, "size": 0})):
        assert udp(engine, signed(request(op, **fields))) is None
    assert count(engine, "dropped_not_over_udp") == 3


def test_replies_and_pongs_are_not_requests(engine):
    assert tcp(engine, request(Op.REPLY, stamp_time=None)) is None
    assert count(engine, "dropped_unexpected_op") == 1


# -- PING ------------------------------------------------------------------------------

@pytest.fixture
def space(store, monkeypatch):
    """A fixed free and total space, for PONGs to compare byte for byte."""
    monkeypatch.setattr(store, "statvfs", lambda: (1 << 30, 3 << 20, 2 << 20, 10, 5, 5))


def pong(ping, at, store_id, keys=KEYS):
    return iodproto.encode(Message(Op.PONG, ping.id, version=VERSION, uptime=at,
                                   free=2 << 20, total=1 << 30, verifier=VERIFIER,
                                   time=START + at, store=store_id), keys)


def test_pong_tells_version_uptime_space_verifier_wall_clock_and_store(engine, store, space):
    ping = request(Op.PING, stamp_time=None)
    assert tcp(engine, ping, at=12.5) == pong(ping, 12.5, store.store_id)


def test_a_stamped_ping_with_spoof_from_gets_its_pong_from_that_source(engine, store, spoofer,
                                                                       space):
    ping = request(Op.PING, spoof_from=NFS_SERVICE)
    requester = ("10.0.0.50", 4000)
    assert udp(engine, signed(ping), at=3.0, peer=requester) is None
    assert spoofer.sent == [(NFS_SERVICE, requester, pong(ping, 3.0, store.store_id))]


def test_no_spoofed_pong_outside_pong_allow_nor_over_tcp(engine, spoofer):
    outside = request(Op.PING, spoof_from=NFS_SERVICE)
    assert udp(engine, signed(outside), peer=("192.0.2.1", 4000)) == reply(
        outside, errno.EACCES, message="[Errno 13] no spoofed PONG to 192.0.2.1: not in this "
                                       "iod's --pong-allow")
    over_tcp = request(Op.PING, spoof_from=NFS_SERVICE)
    assert tcp(engine, over_tcp) == reply(
        over_tcp, errno.EINVAL,
        message="a spoofed PONG goes to a UDP port: send the PING over UDP")
    assert spoofer.sent == [] and count(engine, "refused_spoof") == 1


def test_a_ping_over_udp_without_a_stamp_gets_a_plain_pong_only_if_padded(engine, store, space):
    short = signed(request(Op.PING, stamp_time=None))
    assert udp(engine, short) is None
    assert count(engine, "dropped_short_ping") == 1
    padded = iodproto.plain_ping(900, KEYS)
    assert len(padded) == iodproto.PLAIN_PING_SIZE
    answer = udp(engine, padded, at=2.0)
    assert answer == pong(Message(Op.PING, 900), 2.0, store.store_id)
    assert len(answer) <= len(padded)
    # unsigned (monitoring without the key): an unsigned PONG
    assert udp(engine, iodproto.plain_ping(901, None), at=2.0) == pong(
        Message(Op.PING, 901), 2.0, store.store_id, keys=None)
    assert count(engine, "ping_unauthenticated") == 1


def test_plain_pongs_are_rate_limited_by_the_monotonic_clock(store, spoofer, space):
    engine = make_engine(store, spoofer, ping_rate=2.0, ping_burst=3)
    ping = iodproto.plain_ping(1, None)

    def answered(wall, mono):
        return engine.handle(ping, ("192.0.2.7", 9), True, wall, mono) is not None
    assert [answered(START, BOOT) for _ in range(4)] == [True, True, True, False]
    assert not answered(START + 3600, BOOT)             # the wall clock jumping gives nothing
    assert answered(START, BOOT + 0.5)                   # half a second: one more
    assert not answered(START, BOOT + 0.5)
    assert count(engine, "dropped_rate_limited") == 3


def test_an_unsigned_ping_never_gets_a_spoofed_pong(engine, spoofer, space):
    ping = iodproto.encode(Message(Op.PING, 5, spoof_from=NFS_SERVICE,
                                   pad=bytes(iodproto.PLAIN_PING_SIZE)), None)
    assert udp(engine, ping) is not None                # a plain PONG to its source
    assert spoofer.sent == [] and count(engine, "refused_spoof") == 1


# -- the data store's identity --------------------------------------------------------

def test_the_store_is_checked_at_most_every_interval_and_at_every_ping(engine, store,
                                                                       monkeypatch):
    checks = []
    monkeypatch.setattr(store, "identity_problem", lambda: checks.append(1))

    def commit(at):
        tcp(engine, request(Op.COMMIT, stamp_time=None, ino=1, seed=1), at=at)
    commit(1.0)
    commit(1.0 + STORE_CHECK_INTERVAL / 2)
    assert len(checks) == 1
    commit(1.0 + STORE_CHECK_INTERVAL)
    assert len(checks) == 2
    tcp(engine, request(Op.PING, stamp_time=None), at=1.0 + STORE_CHECK_INTERVAL)
    assert len(checks) == 3


def test_a_lost_store_answers_eio_and_pongs_without_its_id_until_restarted(engine, store,
                                                                           space):
    store.write(1, 1, 0, b"data")
    os.unlink(os.path.join(store.directory, MARKER))
    r = request(Op.READ, stamp_time=None, ino=1, seed=1, offset=0, count=4)
    why = f"{store.directory}/{MARKER} was removed (the directory wiped or deleted?)"
    assert tcp(engine, r) == reply(r, errno.EIO, message=f"[Errno 5] data store lost: {why}")
    ping = request(Op.PING, stamp_time=None)
    assert tcp(engine, ping, at=2.0) == pong(ping, 2.0, None)
    assert engine.store_lost == why and count(engine, "store_lost") == 1
