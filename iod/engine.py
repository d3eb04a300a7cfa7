"""The iod's protocol engine: what the iod answers to a frame, apart from how
frames arrive and answers leave (iod/server.py).

Engine.handle takes one frame as received (bytes), its peer (ip, port),
whether it came over UDP, and the time, and returns the encoded answer for
the peer, or None when the frame gets none. No sockets, threads or clocks in
here: the caller gives two clocks' readings, ``wall`` (what stamps are
checked against and PONGs carry) and ``mono`` (which paces plain PONGs and
store checks and counts uptime). The effects that need I/O go through the
objects handed in: the data store (common/runtime/datastore.py) and the
spoofing sender (iod/spoof.py), which sends READ and WRITE replies straight
to the NFS client. Those sends stay inside the request: one that fails
becomes an error REPLY to the metaserver, as any other failure of the
request does. One handler per op, named as the op (READ, WRITE, COMMIT,
TRUNCATE, PURGE, LIST, PING, REVOKE), in one table.

Several I/O threads call handle at once (HMAC, msgpack and disk I/O run in
parallel): the little state the engine shares between requests (replay
guard, PONG token bucket, store check) is each under a lock of its own.

Trust: the iod acts only on frames that verify under the cluster key and, for
what needs one, carry a fresh stamp seen for the first time (replay
protection: common/iodproto.py). Everything else is dropped, never answered,
and counted by reason: dropped_bad_mac, dropped_malformed, dropped_replay,
dropped_stale (a stamp more than --max-clock-skew off the wall clock),
dropped_unstamped, dropped_rate_limited, dropped_short_ping (and, in the
server, dropped_insecure_port and dropped_queue_full). No reflection: a
spoofed PONG goes only for a stamped, authenticated PING and only to a
requester inside --pong-allow; a PING without a fresh stamp over UDP (its
source address may be forged), unsigned ones included, gets a plain PONG to
its source through a token bucket (--ping-rate), and only if the PING was
padded to be at least as large.

The data store's identity (common/runtime/datastore.py): every PING, and any
request coming more than STORE_CHECK_INTERVAL after the last check, checks
that the store is still the one opened (marker in place, file system still
mounted). Once it is not, the engine says so in one error line and answers
EIO to every data request (NFS3ERR_IO for the client, a retry later for
unlinkd) and PONGs without a store id, until the iod is restarted: a missing
datafile reads as zeros, and a lost store must never be served as one full of
holes.
"""

import errno
import ipaddress
import itertools
import logging
import math
import os
import struct
import threading

from common import iodproto
from common.iodproto import IodProtoError, Message, Op
from common.runtime.version import VERSION
from iod import ipv4
from iod.counters import Counters
from iod.errorlog import ErrorLog
from iod.nfs4ds import FileRange, Reply

log = logging.getLogger("iod")

UDP_OPS = frozenset((Op.READ, Op.WRITE, Op.PING))
LIST_PAGE = 10000
STORE_CHECK_INTERVAL = 1.0   # seconds between store identity checks under traffic

_CURSOR = struct.Struct(">QQ")   # LIST: the last (ino, seed) handed out


class Engine:
    """The protocol core of one iod. ``wall`` and ``mono`` are the time it
    starts: frames stamped before ``wall`` are refused (our predecessor may
    have seen them, see iodproto.ReplayGuard), uptime counts from ``mono``.
    ``verifier`` (8 bytes) changes at every start: a WRITE's verifier, which
    tells the metaserver that unstable writes may be lost."""

    def __init__(self, keys, store, spoofer, *, wall, mono, verifier,
                 max_clock_skew=iodproto.MAX_CLOCK_SKEW, pong_allow=(), ping_rate=10.0,
                 ping_burst=20, counters=None, errors=None, revoked=None, ds_port=None):
        self.keys = keys             # Keys.update (SIGHUP) swaps them for every thread
        self.store = store
        self.spoofer = spoofer
        self.verifier = verifier
        self.started = mono
        self.pong_allow = list(pong_allow)
        self.counters = Counters() if counters is None else counters
        self.errors = ErrorLog() if errors is None else errors
        self.replay = iodproto.ReplayGuard(max_clock_skew, not_before=wall)
        self._replay_lock = threading.Lock()
        self.pong_bucket = iodproto.TokenBucket(ping_rate, ping_burst)
        self._bucket_lock = threading.Lock()
        self.revoked = revoked        # the data server's (iod/dsrevoked.py), or None
        self.ds_port = ds_port        # told in PONGs: the metaserver's layouts name it
        self.store_lost = None        # why the data store is no longer the one opened
        self._store_check_due = -math.inf   # the first request checks
        self._store_check_lock = threading.Lock()
        self._handlers = {Op.READ: self.READ, Op.WRITE: self.WRITE, Op.COMMIT: self.COMMIT,
                          Op.TRUNCATE: self.TRUNCATE, Op.PURGE: self.PURGE, Op.LIST: self.LIST,
                          Op.PING: self.PING, Op.REVOKE: self.REVOKE}

    def handle(self, frame, peer, udp, wall, mono):
        """The answer to ``frame`` from ``peer`` (over UDP if ``udp``, else
        TCP), as the frame to send back to ``peer``, or None. A READ relayed
        over TCP is answered with a Reply (iod/nfs4ds.py): the frame up to
        its MAC, then its data trailer as a FileRange, which the connection
        sends with os.sendfile and then release()s."""
        try:
            msg = iodproto.decode(frame, self.keys, unsigned_ok=udp)
            # (decode refuses a stamp in an unsigned frame; checked again
            # here: only key holders may make the guard track a sender)
            if msg.stamp is not None and msg.authenticated:
                with self._replay_lock:
                    self.replay.check(msg.stamp, wall)
            elif msg.authenticated and iodproto.needs_stamp(msg, udp):
                raise IodProtoError(f"{msg.op.name} without the stamp replay protection "
                                    f"requires (sender from an older release?)", "unstamped")
        except IodProtoError as e:
            self.counters.add("dropped_" + e.reason)
            self.errors(logging.WARNING, ("dropped", e.reason), "dropping a frame from %s:%s: "
                        "%s (more like it are counted, not logged)", peer[0], peer[1], e)
            return None
        if udp and msg.op not in UDP_OPS:
            self.counters.add("dropped_not_over_udp")
            return None
        if udp and msg.op == Op.PING and msg.stamp is None:
            return self._plain_pong(msg, len(frame), wall, mono)
        handler = self._handlers.get(msg.op)
        if handler is None:
            self.counters.add("dropped_unexpected_op")
            return None
        self.counters.add(msg.op.name.lower())
        try:
            if msg.op != Op.PING and not self.store_usable(mono):
                raise OSError(errno.EIO, f"data store lost: {self.store_lost}")
            answer = handler(msg, peer, udp, wall, mono)
        except OSError as e:
            code = e.errno or errno.EIO
            self.counters.add(f"error_{errno.errorcode.get(code, code)}".lower())
            self.errors(logging.WARNING, (msg.op, code), "%s failed: %s", msg.op.name, e)
            answer = iodproto.reply(msg, code, message=str(e)[:1000])
        except (ValueError, OverflowError) as e:
            self.counters.add("error_einval")
            answer = iodproto.reply(msg, errno.EINVAL, message=str(e)[:1000])
        if answer is None:
            return None
        if type(answer) is _Relayed:
            total = sum(r.count for r in answer.ranges)
            return Reply([iodproto.encode_head(answer.reply, total, self.keys), *answer.ranges])
        data = iodproto.encode(answer, self.keys)
        if udp and len(data) > ipv4.MAX_UDP_PAYLOAD:
            self.counters.add("error_emsgsize")
            data = iodproto.encode(iodproto.reply(
                msg, errno.EMSGSIZE, message="answer too large for UDP; ask over TCP"), self.keys)
        return data

    def _plain_pong(self, msg, size, wall, mono):
        """A PING over UDP without a fresh stamp: its source may be forged, so
        its PONG is never spoofed, never larger than the PING (which must be
        padded to PLAIN_PING_SIZE), and rate-limited. Unsigned PINGs get an
        unsigned PONG."""
        if size < iodproto.PLAIN_PING_SIZE:
            self.counters.add("dropped_short_ping")
            return None
        with self._bucket_lock:
            allowed = self.pong_bucket.take(mono)
        if not allowed:
            self.counters.add("dropped_rate_limited")
            return None
        if msg.spoof_from is not None:   # only an unsigned PING gets here with one
            self.counters.add("refused_spoof")
        self.counters.add("ping" if msg.authenticated else "ping_unauthenticated")
        return iodproto.encode(self.pong(msg, wall, mono),
                               self.keys if msg.authenticated else None)

    def _spoof(self, source, client, parts):
        packets = self.spoofer.send(source[0], source[1], client[0], client[1], parts)
        self.counters.add("spoofed_datagrams")
        self.counters.add("spoofed_packets", packets)

    # -- the ops: (msg, peer, udp, wall, mono) -> the answer Message, or None
    #    when the answer went to someone else (spoofed) ----------------------

    def READ(self, msg, peer, udp, wall, mono):
        ranges = [(msg.offset, msg.count)]
        if msg.more:
            if msg.client is not None:
                raise ValueError("a READ of several ranges is relayed, never forwarded")
            ranges += iodproto.extents(msg.more)
        total = sum(count for _, count in ranges)
        if total > iodproto.MAX_DATA:
            raise ValueError(f"count {total} exceeds {iodproto.MAX_DATA}")
        if msg.client is None and udp and total > ipv4.MAX_UDP_PAYLOAD:
            raise OSError(errno.EMSGSIZE, "answer too large for UDP; ask over TCP")
        if msg.client is None and not udp:
            # Sent from the datafile by the connection (os.sendfile), never
            # read here; zeros past its end (FileRange).
            pinned = self.store.pin(msg.ino, msg.seed)
            if pinned is not None:
                # The connection's sendfile runs on the event loop: have the
                # disk reads started here, in the I/O thread, not there.
                try:
                    for offset, count in ranges:
                        os.posix_fadvise(pinned.fd, offset, count, os.POSIX_FADV_WILLNEED)
                except OSError:
                    pass    # only a hint
            self.counters.add("read_bytes", total)
            return _Relayed(iodproto.reply(msg), [FileRange(pinned, offset, count)
                                                  for offset, count in ranges])
        if msg.client is not None:
            source, client = _spoof_target(msg)
            pad = -msg.count % 4
            if len(msg.head) + msg.count + pad > ipv4.MAX_UDP_PAYLOAD:
                raise OSError(errno.EMSGSIZE, f"a READ reply of {msg.count} bytes does not fit "
                                              f"a UDP datagram")
        datas = []
        for offset, count in ranges:
            data = self.store.read(msg.ino, msg.seed, offset, count)
            # Holes and bytes past the datafile's end read as zeros: the
            # metaserver already clamped count to the file's size.
            datas.append(data + bytes(count - len(data)) if len(data) < count else data)
        if msg.client is None:
            self.counters.add("read_bytes", total)
            return iodproto.reply(msg, data=datas[0] if len(datas) == 1 else b"".join(datas))
        self._spoof(source, client, (msg.head, datas[0], bytes(pad)))
        self.counters.add("read_bytes", total)
        return None

    def WRITE(self, msg, peer, udp, wall, mono):
        if msg.client is not None:
            source, client = _spoof_target(msg)
            if msg.reply is None:
                raise ValueError("WRITE with a client needs the reply to send it")
            age = wall - msg.stamp.time if msg.stamp is not None else 0.0
            if age > iodproto.FORWARD_MAX_AGE:
                # The metaserver may have stopped waiting for it, and cut the
                # file since: written now, it could bring cut bytes back.
                raise OSError(errno.ETIMEDOUT, f"forwarded WRITE {age:.1f} s old, more than "
                                               f"{iodproto.FORWARD_MAX_AGE:g} s: not written")
        self.store.write(msg.ino, msg.seed, msg.offset, msg.data, sync=msg.stable)
        self.counters.add("write_bytes", len(msg.data))
        if msg.client is not None:
            self._spoof(source, client, (msg.reply,))
        # A forwarded WRITE is acknowledged to the metaserver as well, once
        # the data is in: it holds a truncation of the file back until then,
        # so that a WRITE it planned first never lands after the TRUNCATE.
        return iodproto.reply(msg, verifier=self.verifier)

    def COMMIT(self, msg, peer, udp, wall, mono):
        self.store.commit(msg.ino, msg.seed)
        return iodproto.reply(msg, verifier=self.verifier)

    def TRUNCATE(self, msg, peer, udp, wall, mono):
        self.store.truncate(msg.ino, msg.seed, msg.size)
        # Durable before the answer: a shrink forgotten in a crash would let
        # old bytes reappear when the file grows again.
        self.store.commit(msg.ino, msg.seed)
        return iodproto.reply(msg)

    def PURGE(self, msg, peer, udp, wall, mono):
        if self.revoked is not None:
            # Before the datafiles go: a data-server WRITE in between would
            # bring one back, and nothing would ever purge it again.
            self.revoked.revoke(int(wall * 1000), files=msg.files)
        gone = sum(self.store.purge(ino, seed) for ino, seed in msg.files)
        if gone:
            # unlinkd trims its journal on this reply: a crash right after it
            # must not bring the datafiles back (they would be leaks).
            self.store.sync_removals()
        self.counters.add("purged_files", gone)
        return iodproto.reply(msg)

    def REVOKE(self, msg, peer, udp, wall, mono):
        if self.revoked is not None:
            at = int(msg.stamp.time * 1000)     # stamped: needs_stamp
            self.revoked.revoke(at, files=msg.files, clients=msg.clients,
                                everything=msg.everything)
        return iodproto.reply(msg)

    def LIST(self, msg, peer, udp, wall, mono):
        after = None
        if msg.cursor is not None:
            if len(msg.cursor) != _CURSOR.size:
                raise ValueError("not a cursor this iod handed out")
            after = _CURSOR.unpack(msg.cursor)
        files = list(itertools.islice(self.store.list(after), LIST_PAGE + 1))
        cursor = None
        if len(files) > LIST_PAGE:
            files = files[:LIST_PAGE]
            cursor = _CURSOR.pack(*files[-1])
        return iodproto.reply(msg, files=files, cursor=cursor)

    def PING(self, msg, peer, udp, wall, mono):
        pong = self.pong(msg, wall, mono)
        if msg.spoof_from is None:
            return pong
        if not udp:
            raise ValueError("a spoofed PONG goes to a UDP port: send the PING over UDP")
        if not self.pong_allowed(peer[0]):
            self.counters.add("refused_spoof")
            raise OSError(errno.EACCES, f"no spoofed PONG to {peer[0]}: not in this iod's "
                                        f"--pong-allow")
        self._spoof(msg.spoof_from, peer, (iodproto.encode(pong, self.keys),))
        return None

    def pong(self, msg, wall, mono):
        store = self.store.store_id if self.store_usable(mono, force=True) else None
        total, _, avail, *_ = self.store.statvfs()
        # free = what this (unprivileged) iod may still use
        return Message(Op.PONG, msg.id, version=VERSION, uptime=mono - self.started,
                       free=avail, total=total, verifier=self.verifier, time=wall, store=store,
                       ds_port=self.ds_port)

    def pong_allowed(self, ip):
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.pong_allow)

    # -- the data store's identity -------------------------------------------

    def store_usable(self, mono, force=False):
        """Whether the data store is still the one opened: checked at most every
        STORE_CHECK_INTERVAL seconds (one thread checks, the others go on), or
        now with ``force``. A lost store stays lost."""
        if self.store_lost is not None:
            return False
        if not force and mono < self._store_check_due:
            return True
        if not self._store_check_lock.acquire(blocking=force):
            return True
        try:
            if self.store_lost is None:
                self._store_check_due = mono + STORE_CHECK_INTERVAL
                why = self.store.identity_problem()
                if why is not None:
                    self.store_lost = why
                    self.counters.add("store_lost")
                    log.error("data store %s lost: %s; answering EIO to every request (never "
                              "zeros) until restarted: mount or restore the right store, then "
                              "restart the iod", store_name(self.store), why)
        finally:
            self._store_check_lock.release()
        return self.store_lost is None


class _Relayed:
    """READ's answer over TCP: the REPLY, and the FileRanges to send after it."""
    __slots__ = ("reply", "ranges")

    def __init__(self, reply, ranges):
        self.reply, self.ranges = reply, ranges


def _spoof_target(msg):
    if msg.source is None:
        raise ValueError(f"{msg.op.name} with a client needs a source address")
    return msg.source, msg.client


def store_name(store):
    """The store as the log names it."""
    return store.store_id.hex() if store.store_id is not None else "without identity"
