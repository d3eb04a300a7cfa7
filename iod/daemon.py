"""The I/O daemon: stores stripes of file data and answers for the metaserver
(paper 5.6).

Shape, as in the paper: a UDP receiver (READ, WRITE, PING from the
metaserver and iod_ping), a TCP receiver (persistent connections from the
metaserver and unlinkd, frames back to back, replies on the same connection in
any order, matched by id), a bounded buffer of requests (iod/workqueue.py) and
a pool of I/O threads. The receivers are trio tasks that only move bytes: a
datagram or a whole TCP frame goes into the buffer undecoded. An I/O thread
verifies and decodes it (HMAC and msgpack run in parallel threads, off the
event loop), does the disk I/O on the DataStore and sends the answer itself:
spoofed replies through the raw socket (iod/spoof.py), UDP answers on the
receiving socket, both from plain blocking calls in the thread. Only TCP
answers go back through trio (run_sync_soon: no waiting in the thread), since
the connection's stream belongs to the event loop.

Back-pressure: when the buffer is full a UDP request is dropped and counted
(the NFS client retransmits, the metaserver times out); a TCP connection
stops being read until there is room, and each connection has a bound on its
requests in flight, so replies the peer does not take stop its reading too.

Trust: the iod acts only on frames that verify under the cluster key and, for
what needs one, carry a fresh stamp seen for the first time (replay
protection: common/iodproto.py; the guard is shared by the threads under a
lock). Everything else is dropped, never answered, and counted by reason:
dropped_bad_mac, dropped_malformed, dropped_replay, dropped_stale (a stamp
more than --max-clock-skew off our clock), dropped_unstamped,
dropped_insecure_port (--secure-port), dropped_rate_limited,
dropped_short_ping. No reflection: a spoofed PONG goes only for a stamped,
authenticated PING and only to a requester inside --pong-allow; a PING
without a fresh stamp over UDP (its source address may be forged), unsigned
ones included, gets a plain PONG to its source through a token bucket
(--ping-rate), and only if the PING was padded to be at least as large.
With --secure-port (paper 5.7) TCP connections and UDP frames are taken only
from source ports below 1024, i.e. from root on the sending host.

SIGHUP re-reads the key file (key rotation without downtime; Keys.update
swaps the keys every thread uses). Root is gone by then: if the path cannot be
opened any more, the descriptor opened at start is read again, which sees the
file only as long as it is rewritten in place (`cat new > cluster.key`), not
replaced by another file.

--metrics ADDR:PORT serves the counters, queue depth and free space for
Prometheus (iod/metrics.py).

The data store's identity (common/runtime/datastore.py): the iod starts only on a data
directory carrying its marker (or one it may initialise: missing, or --init),
and reports the store id in every PONG. Every PING, and any request coming
more than STORE_CHECK_INTERVAL after the last check, checks that the store is
still the one opened (marker in place, file system still mounted). Once it is
not, the iod says so in one error line and stays up answering EIO to every
data request (NFS3ERR_IO for the client, a retry later for unlinkd) and PONGs
without a store id, until restarted: a missing datafile reads as zeros, and
a lost store must never be served as one full of holes.

Privileges: everything that needs root happens before serving -- the raw
socket, binding (so a port below 1024 is possible), the key file, and the data
directory, which is given to the --user (chown at first start, of the store's
own layout only) and opened by descriptor (common/runtime/datastore.py) so the directories
above it may stay private to root. Keeping the store root-owned is no option:
creating datafiles in it is checked against the user doing it, whatever
descriptor the directory was opened with. Then the process becomes --user
(groups, gid, uid), keeping the open descriptors.

Logging: one line per event (start, stop, an error kind first seen or again
after a quiet minute); counters are summarised every --stats-interval seconds
when they changed, and on SIGUSR1.
"""

import errno
import ipaddress
import itertools
import logging
import os
import pwd
import select
import signal
import socket
import struct
import threading
import time

import trio

from common import iodproto
from common.iodproto import IodProtoError, Message, Op
from iod import ipv4
from iod.spoof import RouteMtu, Spoofer, open_raw_socket
from common.runtime import pktinfo
from common.runtime.keyreload import KeyFile
from common.runtime.datastore import StoreError, open_store
from common.runtime.resvport import PRIVILEGED_PORTS
from common.runtime.version import VERSION
from iod.workqueue import WorkQueue

log = logging.getLogger("iod")

UDP_OPS = frozenset((Op.READ, Op.WRITE, Op.PING))
UDP_MAX_DATAGRAM = 65535
UDP_BURST = 64          # datagrams taken in a row before letting other tasks run
LIST_PAGE = 10000
ERROR_LOG_INTERVAL = 60.0
DEFAULT_PONG_ALLOW = ("127.0.0.0/8",)
STORE_CHECK_INTERVAL = 1.0   # seconds between store identity checks under traffic


class Config:
    def __init__(self, data_dir, keys, listen="0.0.0.0", port=iodproto.DEFAULT_PORT,
                 user="nobody", ip_id_slot="0/1", threads=8, queue_depth=1024,
                 queue_bytes=64 << 20, tcp_inflight=64, max_connections=256,
                 stats_interval=60.0, send_timeout=30.0, key_path=None,
                 max_clock_skew=iodproto.MAX_CLOCK_SKEW, pong_allow=DEFAULT_PONG_ALLOW,
                 ping_rate=10.0, ping_burst=20, secure_port=False, metrics=None, init=False):
        self.data_dir = data_dir
        self.init = init                  # --init: may initialise an existing directory
        self.keys = keys
        self.listen = listen
        self.port = port
        self.user = user
        self.ip_id_slot = (ipv4.IpIdSlot.parse(ip_id_slot) if isinstance(ip_id_slot, str)
                           else ip_id_slot)
        self.threads = threads
        self.queue_depth = queue_depth
        self.queue_bytes = queue_bytes
        self.tcp_inflight = tcp_inflight
        self.max_connections = max_connections
        self.stats_interval = stats_interval
        self.send_timeout = send_timeout
        self.key_path = key_path          # re-read on SIGHUP
        self.max_clock_skew = max_clock_skew
        self.pong_allow = [ipaddress.ip_network(n) if isinstance(n, str) else n
                           for n in pong_allow]
        self.ping_rate = ping_rate
        self.ping_burst = ping_burst
        self.secure_port = secure_port
        self.metrics = metrics            # (host, port) or None


class Counters:
    """Event counts, bumped from every thread: each thread counts in a dict
    of its own (no lock on the hot path), summed when read."""

    def __init__(self):
        self._local = threading.local()
        self._dicts = []
        self._lock = threading.Lock()

    def add(self, name, n=1):
        try:
            mine = self._local.counts
        except AttributeError:
            mine = self._local.counts = {}
            with self._lock:
                self._dicts.append(mine)
        mine[name] = mine.get(name, 0) + n

    def snapshot(self):
        with self._lock:
            dicts = list(self._dicts)
        total = {}
        for d in dicts:
            for k, v in d.copy().items():    # dict.copy is atomic under the GIL
                total[k] = total.get(k, 0) + v
        return total

    def summary(self):
        return " ".join(f"{k}={v}" for k, v in sorted(self.snapshot().items()))


class _RateLimitedLog:
    """Logs an error kind once, then again only after a quiet interval
    (a storm of one error is one line per interval, its count is in the
    counters)."""

    def __init__(self, interval=ERROR_LOG_INTERVAL, clock=time.monotonic):
        self._interval = interval
        self._clock = clock
        self._last = {}
        self._lock = threading.Lock()

    def __call__(self, level, kind, fmt, *args, **kwargs):
        now = self._clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._interval:
                return
            if len(self._last) > 1024:
                self._last.clear()
            self._last[kind] = now
        log.log(level, fmt, *args, **kwargs)


class _Job:
    """One received frame: ``conn`` is its TCP connection, or None for UDP
    (then ``peer`` and ``local`` are the datagram's addresses)."""
    __slots__ = ("frame", "conn", "peer", "local")

    def __init__(self, frame, conn, peer, local=None):
        self.frame, self.conn, self.peer, self.local = frame, conn, peer, local


class _Connection:
    """A TCP connection's reply side, driven from the trio thread."""

    def __init__(self, peer, inflight):
        self.peer = peer
        self.inflight = trio.Semaphore(inflight)
        self.send_channel, self.receive_channel = trio.open_memory_channel(inflight)

    def finish(self, data):
        """A job of this connection is done (in trio, via run_sync_soon)."""
        if data is None:
            self.inflight.release()
            return
        try:
            # Never blocks: a slot of ``inflight`` is held per queued reply.
            self.send_channel.send_nowait(data)
        except (trio.ClosedResourceError, trio.BrokenResourceError, trio.WouldBlock):
            self.inflight.release()


class Iod:
    """The daemon once its privileged set-up is done: serve() runs it."""

    def __init__(self, config, store, spoofer, udp_sock, tcp_sock, key_file=None,
                 metrics_sock=None):
        self.config = config
        self.keys = config.keys
        self.store = store
        self.spoofer = spoofer
        self.udp_sock = udp_sock     # stdlib sockets (non-blocking once serving)
        self.tcp_sock = tcp_sock
        self.key_file = key_file        # opened while root, re-read on SIGHUP
        self.metrics_sock = metrics_sock
        self.verifier = os.urandom(8)
        self.started = time.monotonic()
        # Frames stamped before we started may have been seen by our
        # predecessor: the guard refuses them (see iodproto.ReplayGuard).
        self.replay = iodproto.ReplayGuard(config.max_clock_skew, not_before=time.time())
        self._replay_lock = threading.Lock()
        self.pong_bucket = iodproto.TokenBucket(config.ping_rate, config.ping_burst)
        self._bucket_lock = threading.Lock()
        self.connections = 0
        self.counters = Counters()
        self.errors = _RateLimitedLog()
        self.queue = WorkQueue(config.queue_depth, config.queue_bytes)
        self.store_lost = None        # why the data store is no longer the one opened
        self._store_check_due = 0.0
        self._store_check_lock = threading.Lock()
        self.threads = []
        self._token = None
        self._handlers = {Op.READ: self._read, Op.WRITE: self._write, Op.COMMIT: self._commit,
                          Op.TRUNCATE: self._truncate, Op.PURGE: self._purge,
                          Op.LIST: self._list, Op.PING: self._ping}

    # -- I/O threads -------------------------------------------------------

    def _io_thread(self):
        while True:
            job = self.queue.get()
            if job is None:
                return
            out = None
            try:
                out = self._process(job)
            except Exception as e:  # a bug must not take the thread down with it
                self.counters.add("internal_errors")
                self.errors(logging.ERROR, ("internal", type(e).__name__),
                            "internal error handling a request: %r", e, exc_info=True)
            try:
                self._answer(job, out)
            except Exception as e:
                self.counters.add("internal_errors")
                self.errors(logging.ERROR, ("internal answer", type(e).__name__),
                            "internal error answering a request: %r", e, exc_info=True)

    def _process(self, job):
        """Decode and execute one frame; returns the encoded answer or None."""
        udp = job.conn is None
        try:
            msg = iodproto.decode(job.frame, self.keys, unsigned_ok=udp)
            # (decode refuses a stamp in an unsigned frame; checked again
            # here: only key holders may make the guard track a sender)
            if msg.stamp is not None and msg.authenticated:
                with self._replay_lock:
                    self.replay.check(msg.stamp, time.time())
            elif msg.authenticated and iodproto.needs_stamp(msg, udp):
                raise IodProtoError(f"{msg.op.name} without the stamp replay protection "
                                    f"requires (sender from an older release?)", "unstamped")
        except IodProtoError as e:
            self.counters.add("dropped_" + e.reason)
            self.errors(logging.WARNING, ("dropped", e.reason), "dropping a frame from %s:%s: "
                        "%s (more like it are counted, not logged)", job.peer[0], job.peer[1], e)
            return None
        if udp and msg.op not in UDP_OPS:
            self.counters.add("dropped_not_over_udp")
            return None
        if udp and msg.op == Op.PING and msg.stamp is None:
            return self._plain_pong(msg, job)
        handler = self._handlers.get(msg.op)
        if handler is None:
            self.counters.add("dropped_unexpected_op")
            return None
        self.counters.add(msg.op.name.lower())
        try:
            if msg.op != Op.PING and not self.store_usable():
                raise OSError(errno.EIO, f"data store lost: {self.store_lost}")
            answer = handler(msg, job)
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
        data = iodproto.encode(answer, self.keys)
        if job.conn is None and len(data) > ipv4.MAX_UDP_PAYLOAD:
            self.counters.add("error_emsgsize")
            data = iodproto.encode(iodproto.reply(
                msg, errno.EMSGSIZE, message="answer too large for UDP; ask over TCP"), self.keys)
        return data

    def _plain_pong(self, msg, job):
        """A PING over UDP without a fresh stamp: its source may be forged, so
        its PONG is never spoofed, never larger than the PING (which must be
        padded to PLAIN_PING_SIZE), and rate-limited. Unsigned PINGs get an
        unsigned PONG."""
        if len(job.frame) < iodproto.PLAIN_PING_SIZE:
            self.counters.add("dropped_short_ping")
            return None
        with self._bucket_lock:
            allowed = self.pong_bucket.take(time.monotonic())
        if not allowed:
            self.counters.add("dropped_rate_limited")
            return None
        if msg.spoof_from is not None:   # only an unsigned PING gets here with one
            self.counters.add("refused_spoof")
        self.counters.add("ping" if msg.authenticated else "ping_unauthenticated")
        return iodproto.encode(self.pong(msg), self.keys if msg.authenticated else None)

    def _answer(self, job, data):
        if job.conn is not None:
            try:
                self._token.run_sync_soon(job.conn.finish, data)
            except trio.RunFinishedError:
                pass
        elif data is not None:
            self._send_udp(data, job.peer, job.local)

    def _send_udp(self, data, peer, local):
        anc = [] if local is None else pktinfo.source(local)
        error = None
        for attempt in (1, 2):
            try:
                self.udp_sock.sendmsg([data], anc, 0, peer)
                return
            except BlockingIOError as e:
                # The socket is non-blocking (the receiver waits on it with
                # trio): wait a bounded while for room in its send buffer, once.
                error = e
                if attempt == 1:
                    poller = select.poll()
                    poller.register(self.udp_sock.fileno(), select.POLLOUT)
                    poller.poll(1000)
            except OSError as e:
                error = e
                break
        self.counters.add("udp_send_errors")
        self.errors(logging.WARNING, ("udp_send", error.errno), "answer to %s:%s not sent: %s",
                    peer[0], peer[1], error)

    def _spoof(self, source, client, parts):
        packets = self.spoofer.send(source[0], source[1], client[0], client[1], parts)
        self.counters.add("spoofed_datagrams")
        self.counters.add("spoofed_packets", packets)

    # -- operations (in I/O threads) -----------------------------------------

    @staticmethod
    def _spoof_target(msg):
        if msg.source is None:
            raise ValueError(f"{msg.op.name} with a client needs a source address")
        return msg.source, msg.client

    def _read(self, msg, job):
        if msg.count > iodproto.MAX_DATA:
            raise ValueError(f"count {msg.count} exceeds {iodproto.MAX_DATA}")
        if msg.client is None and job.conn is None and msg.count > ipv4.MAX_UDP_PAYLOAD:
            raise OSError(errno.EMSGSIZE, "answer too large for UDP; ask over TCP")
        if msg.client is not None:
            source, client = self._spoof_target(msg)
            pad = -msg.count % 4
            if len(msg.head) + msg.count + pad > ipv4.MAX_UDP_PAYLOAD:
                raise OSError(errno.EMSGSIZE, f"a READ reply of {msg.count} bytes does not fit "
                                              f"a UDP datagram")
        data = self.store.read(msg.ino, msg.seed, msg.offset, msg.count)
        # Holes and bytes past the datafile's end read as zeros: the
        # metaserver already clamped count to the file's size.
        short = msg.count - len(data)
        if msg.client is None:
            self.counters.add("read_bytes", msg.count)
            return iodproto.reply(msg, data=data + bytes(short) if short else data)
        self._spoof(source, client, (msg.head, data, bytes(short + pad)))
        self.counters.add("read_bytes", msg.count)
        return None

    def _write(self, msg, job):
        if msg.client is not None:
            source, client = self._spoof_target(msg)
            if msg.reply is None:
                raise ValueError("WRITE with a client needs the reply to send it")
        self.store.write(msg.ino, msg.seed, msg.offset, msg.data, sync=msg.stable)
        self.counters.add("write_bytes", len(msg.data))
        if msg.client is None:
            return iodproto.reply(msg, verifier=self.verifier)
        self._spoof(source, client, (msg.reply,))
        return None

    def _commit(self, msg, job):
        self.store.commit(msg.ino, msg.seed)
        return iodproto.reply(msg, verifier=self.verifier)

    def _truncate(self, msg, job):
        self.store.truncate(msg.ino, msg.seed, msg.size)
        # Durable before the answer: a shrink forgotten in a crash would let
        # old bytes reappear when the file grows again.
        self.store.commit(msg.ino, msg.seed)
        return iodproto.reply(msg)

    def _purge(self, msg, job):
        gone = sum(self.store.purge(ino, seed) for ino, seed in msg.files)
        if gone:
            # unlinkd trims its journal on this reply: a crash right after it
            # must not bring the datafiles back (they would be leaks).
            self.store.sync_removals()
        self.counters.add("purged_files", gone)
        return iodproto.reply(msg)

    _cursor = struct.Struct(">QQ")

    def _list(self, msg, job):
        after = None
        if msg.cursor is not None:
            if len(msg.cursor) != self._cursor.size:
                raise ValueError("not a cursor this iod handed out")
            after = self._cursor.unpack(msg.cursor)
        files = list(itertools.islice(self.store.list(after), LIST_PAGE + 1))
        cursor = None
        if len(files) > LIST_PAGE:
            files = files[:LIST_PAGE]
            cursor = self._cursor.pack(*files[-1])
        return iodproto.reply(msg, files=files, cursor=cursor)

    def store_usable(self, force=False):
        """Whether the data store is still the one opened: checked at most every
        STORE_CHECK_INTERVAL seconds (one thread checks, the others go on), or
        now with ``force``. A lost store stays lost."""
        if self.store_lost is not None:
            return False
        if not force and time.monotonic() < self._store_check_due:
            return True
        if not self._store_check_lock.acquire(blocking=force):
            return True
        try:
            if self.store_lost is None:
                self._store_check_due = time.monotonic() + STORE_CHECK_INTERVAL
                why = self.store.identity_problem()
                if why is not None:
                    self.store_lost = why
                    self.counters.add("store_lost")
                    log.error("data store %s lost: %s; answering EIO to every request (never "
                              "zeros) until restarted: mount or restore the right store, then "
                              "restart the iod", _store_name(self.store), why)
        finally:
            self._store_check_lock.release()
        return self.store_lost is None

    def pong(self, msg):
        store = self.store.store_id if self.store_usable(force=True) else None
        total, _, avail, *_ = self.store.statvfs()
        # free = what this (unprivileged) iod may still use
        return Message(Op.PONG, msg.id, version=VERSION, uptime=time.monotonic() - self.started,
                       free=avail, total=total, verifier=self.verifier, time=time.time(),
                       store=store)

    def _ping(self, msg, job):
        pong = self.pong(msg)
        if msg.spoof_from is None:
            return pong
        if job.conn is not None:
            raise ValueError("a spoofed PONG goes to a UDP port: send the PING over UDP")
        if not self.pong_allowed(job.peer[0]):
            self.counters.add("refused_spoof")
            raise OSError(errno.EACCES, f"no spoofed PONG to {job.peer[0]}: not in this iod's "
                                        f"--pong-allow")
        self._spoof(msg.spoof_from, job.peer, (iodproto.encode(pong, self.keys),))
        return None

    def pong_allowed(self, ip):
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.config.pong_allow)

    # -- key rotation ----------------------------------------------------------

    def reload_keys(self):
        """SIGHUP: take the key file's keys (Keys.update: every thread signs
        and verifies with them from its next frame). Returns whether it did."""
        if self.key_file is None:
            log.warning("SIGHUP: no key file to reload")
            return False
        return self.key_file.reload_into(self.keys, log)

    # -- trio side -----------------------------------------------------------

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED):
        self._token = trio.lowlevel.current_trio_token()
        for i in range(self.config.threads):
            t = threading.Thread(target=self._io_thread, name=f"iod-io-{i}", daemon=True)
            t.start()
            self.threads.append(t)
        self.udp_sock.setblocking(False)
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(self.tcp_sock))
        # trio re-raises the signals still pending when the receiver closes;
        # a SIGUSR1 or SIGHUP racing SIGTERM must not then kill the iod.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1,
                                           signal.SIGHUP) as sigs:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._serve_udp, self.udp_sock)
                    nursery.start_soon(self._serve_tcp, listener)
                    nursery.start_soon(self._stats_loop)
                    if self.metrics_sock is not None:
                        from iod.metrics import serve_metrics
                        await nursery.start(serve_metrics, self)
                    host, port = self.udp_sock.getsockname()[:2]
                    slot = self.config.ip_id_slot
                    log.info("iod %s serving %s (store %s) on %s:%d (UDP and TCP) as uid %d; "
                             "%d I/O threads; IP IDs %d..%d (slot %d/%d); verifier %s", VERSION,
                             self.store.directory, _store_name(self.store), host, port,
                             os.geteuid(), self.config.threads, slot.low, slot.high - 1,
                             slot.index, slot.count, self.verifier.hex())
                    task_status.started()
                    if self.config.secure_port:
                        log.info("--secure-port: taking connections and frames only from "
                                 "ports below 1024")
                    async for signum in sigs:
                        if signum == signal.SIGUSR1:
                            self.log_counters()
                            continue
                        if signum == signal.SIGHUP:
                            await trio.to_thread.run_sync(self.reload_keys)
                            continue
                        log.info("%s: stopping", signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()
                        break
        finally:
            self.queue.close()
            await trio.to_thread.run_sync(self._join_threads, 10.0)
            self.log_counters()
            log.info("iod stopped")

    def _join_threads(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self.threads if t.is_alive()]
        if stuck:
            log.warning("I/O threads still busy at exit: %s", ", ".join(stuck))

    def log_counters(self):
        log.info("counters: %s queue_high_water=%d", self.counters.summary() or "none",
                 self.queue.high_water)

    async def _stats_loop(self):
        last = None
        while True:
            await trio.sleep(self.config.stats_interval)
            now = self.counters.snapshot()
            if now != last:
                self.log_counters()
                last = now

    async def _serve_udp(self, sock):
        # The plain socket, waited on with trio: trio's own recvmsg passes
        # through the scheduler for every datagram (tens of microseconds
        # here); this drains what is queued and yields every UDP_BURST.
        bound = sock.getsockname()[0]
        fixed_local = None if bound in ("0.0.0.0", "") else bound
        cmsg_space = pktinfo.ANCDATA_SIZE
        recvmsg, burst = sock.recvmsg, 0
        secure = self.config.secure_port
        while True:
            try:
                data, ancdata, _, peer = recvmsg(UDP_MAX_DATAGRAM, cmsg_space)
            except BlockingIOError:
                burst = 0
                await trio.lowlevel.wait_readable(sock)
                continue
            except OSError as e:
                # ICMP errors from earlier sends surface here; nothing a
                # receive can fail with is a reason to stop serving.
                if e.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    self.counters.add("udp_receive_errors")
                    self.errors(logging.WARNING, ("udp_receive", e.errno),
                                "UDP receive failed: %s", e)
                    await trio.sleep(0.01)
                continue
            burst += 1
            if burst >= UDP_BURST:
                burst = 0
                await trio.sleep(0)
            self.counters.add("udp_frames")
            if secure and peer[1] >= PRIVILEGED_PORTS:
                self.counters.add("dropped_insecure_port")
                self.errors(logging.WARNING, "insecure udp", "--secure-port: dropping frames "
                            "from %s:%d, not a port below 1024 (more are counted, not logged)",
                            peer[0], peer[1])
                continue
            local = fixed_local or pktinfo.destination(ancdata)
            if not _plausible(data):
                self.counters.add("dropped_malformed")
                continue
            if not self.queue.put_nowait(_Job(data, None, peer[:2], local), len(data)):
                self.counters.add("dropped_queue_full")

    async def _serve_tcp(self, listener):
        slots = trio.Semaphore(self.config.max_connections)
        async with trio.open_nursery() as nursery:
            while True:
                await slots.acquire()
                try:
                    stream = await listener.accept()
                except OSError as e:
                    slots.release()
                    if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        self.errors(logging.WARNING, ("accept", e.errno), "accept failed: %s", e)
                        await trio.sleep(0.1)
                        continue
                    raise
                nursery.start_soon(self._connection, stream, slots)

    async def _connection(self, stream, slots):
        try:
            peer = stream.socket.getpeername()[:2]
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        except OSError:
            slots.release()
            return
        if self.config.secure_port and peer[1] >= PRIVILEGED_PORTS:
            self.counters.add("dropped_insecure_port")
            self.errors(logging.WARNING, "insecure tcp", "--secure-port: refusing a connection "
                        "from %s:%d, not a port below 1024 (more are counted, not logged)",
                        peer[0], peer[1])
            slots.release()
            with trio.CancelScope(shield=True):
                await stream.aclose()
            return
        conn = _Connection(peer, self.config.tcp_inflight)
        log.info("connection from %s:%d", *peer)
        reason = "closed by peer"
        self.connections += 1
        try:
            async with stream, trio.open_nursery() as nursery:
                nursery.start_soon(self._connection_writer, stream, conn, nursery.cancel_scope)
                reader = iodproto.FrameReader()
                while True:
                    try:
                        data = await stream.receive_some(1 << 18)
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                        reason = str(e) or type(e).__name__
                        break
                    if not data:
                        break
                    try:
                        frames = reader.feed(data)
                    except IodProtoError as e:
                        # Past a bad header the stream cannot be resynchronised.
                        self.counters.add("dropped_bad_stream")
                        reason = f"not an iod protocol stream: {e}"
                        break
                    for frame in frames:
                        self.counters.add("tcp_frames")
                        await conn.inflight.acquire()
                        job = _Job(frame, conn, peer)
                        if not self.queue.put_nowait(job, len(frame)):
                            self.counters.add("tcp_waits_queue_full")
                            while not await trio.to_thread.run_sync(
                                    self.queue.put, job, len(frame), 0.5):
                                pass
                nursery.cancel_scope.cancel()
        finally:
            self.connections -= 1
            conn.send_channel.close()
            slots.release()
            log.info("connection from %s:%d ended: %s", peer[0], peer[1], reason)

    async def _connection_writer(self, stream, conn, scope):
        async with conn.receive_channel:
            async for data in conn.receive_channel:
                with trio.move_on_after(self.config.send_timeout) as timeout:
                    try:
                        await stream.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        scope.cancel()
                        return
                conn.inflight.release()
                if timeout.cancelled_caught:
                    # Half a frame may be on the wire: the stream is unusable.
                    log.warning("closing connection from %s:%d: answer not taken within %ss",
                                conn.peer[0], conn.peer[1], self.config.send_timeout)
                    scope.cancel()
                    return


def _plausible(data):
    """Cheap screening in the receiver (the MAC is checked by the threads):
    a datagram must be exactly one frame."""
    try:
        return len(data) >= iodproto.HEADER.size and iodproto.frame_length(
            data[:iodproto.HEADER.size]) == len(data)
    except IodProtoError:
        return False


def _store_name(store):
    return store.store_id.hex() if store.store_id is not None else "without identity"



# -- privileged start-up ----------------------------------------------------------

class StartupError(Exception):
    pass


def resolve_user(user):
    """--user: a name or a numeric uid -> (name, uid, gid)."""
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError):
        raise StartupError(f"no such user: {user}") from None
    return pw.pw_name, pw.pw_uid, pw.pw_gid


def bind_sockets(listen, port, buffer_bytes=4 << 20):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        for s in (udp, tcp):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        pktinfo.enable(udp)
        for opt, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):  # *BUFFORCE
            try:
                udp.setsockopt(socket.SOL_SOCKET, force, buffer_bytes)
            except OSError:
                udp.setsockopt(socket.SOL_SOCKET, opt, buffer_bytes)
        udp.bind((listen, port))
        tcp.bind((listen, port))
        tcp.listen(128)
    except OSError as e:
        udp.close()
        tcp.close()
        raise StartupError(f"cannot listen on {listen}:{port}: {e}") from None
    return udp, tcp


def drop_privileges(uid, gid):
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise StartupError("still able to regain root after dropping privileges")


def start(config):
    """The privileged part of starting an iod: returns an Iod ready to serve,
    running as config.user. Raises StartupError with a message for the admin."""
    os.umask(0o077)
    name, uid, gid = resolve_user(config.user)
    if os.geteuid() != 0 and os.geteuid() != uid:
        raise StartupError(f"must be started as root to run as {name} (it opens a raw socket, "
                           f"then drops root)")
    try:
        raw = open_raw_socket()
    except PermissionError:
        raise StartupError("cannot open a raw socket: the iod needs root (or CAP_NET_RAW) at "
                           "start to spoof replies") from None
    if config.secure_port and config.port >= PRIVILEGED_PORTS:
        raw.close()
        raise StartupError(f"--secure-port needs --port below 1024 (not {config.port}): the "
                           f"point is that only root can listen there")
    udp, tcp = bind_sockets(config.listen, config.port)
    extra = []
    try:
        key_file = None
        if config.key_path is not None:
            try:
                key_file = KeyFile(config.key_path, keep_open=True)
                extra.append(key_file)
            except OSError as e:
                raise StartupError(f"{config.key_path}: {e.strerror}") from None
        metrics_sock = None
        if config.metrics is not None:
            metrics_sock = bind_metrics(*config.metrics)
            extra.append(metrics_sock)
        try:
            mtus = RouteMtu()
        except OSError as e:
            raise StartupError(f"cannot look up routes over netlink: {e}") from None
        try:
            store = open_store(config.data_dir, init=config.init)
        except StoreError as e:
            raise StartupError(str(e)) from None
        except OSError as e:
            raise StartupError(f"data directory {config.data_dir}: {e}") from None
        extra.append(store)
        if store.initialised == "new":
            log.info("initialised %s as a new, empty data store: store id %s",
                     store.directory, store.store_id.hex())
        elif store.initialised == "adopted":
            log.info("adopted the datafiles in %s (no store marker yet) as data store %s",
                     store.directory, store.store_id.hex())
        try:
            # Only at the first start as this user (the walk costs one stat
            # per datafile): afterwards everything in it is created by us.
            if uid != 0 and os.stat(store.directory).st_uid != uid:
                changed = store.chown(uid, gid)
                if changed:
                    log.info("gave %d entries of %s to %s", changed, config.data_dir, name)
        except OSError as e:
            raise StartupError(f"data directory {config.data_dir}: {e}") from None
        if os.geteuid() == 0 and uid != 0:
            drop_privileges(uid, gid)
        elif uid == 0:
            log.warning("running as root (--user %s): consider an unprivileged user", name)
    except BaseException:
        for s in (raw, udp, tcp):
            s.close()
        for x in extra:
            x.close()
        raise
    spoofer = Spoofer(config.ip_id_slot, sock=raw, mtus=mtus)
    return Iod(config, store, spoofer, udp, tcp, key_file=key_file, metrics_sock=metrics_sock)


def bind_metrics(host, port):
    """The --metrics listening socket (bound while root: any port works)."""
    try:
        sock = socket.create_server((host, port), family=socket.AF_INET, backlog=16)
    except OSError as e:
        raise StartupError(f"--metrics {host}:{port}: cannot listen: {e.strerror}") from None
    return sock


def run(config):
    iod = start(config)
    try:
        trio.run(iod.serve)
    finally:
        iod.spoofer.close()
        iod.store.close()
        iod.udp_sock.close()
        iod.tcp_sock.close()
        if iod.metrics_sock is not None:
            iod.metrics_sock.close()
        if iod.key_file is not None:
            iod.key_file.close()
