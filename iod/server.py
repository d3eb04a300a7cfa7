"""The iod's serving shell: how frames reach the protocol engine
(iod/engine.py) and its answers leave, on sockets, threads and trio.

Shape, as in the paper (5.6): a UDP receiver (READ, WRITE, PING from the
metaserver and iod_ping), a TCP receiver (persistent connections from the
metaserver and unlinkd, frames back to back, replies on the same connection in
any order, matched by id), a bounded buffer of requests (iod/workqueue.py) and
a pool of I/O threads. The receivers are trio tasks that only move bytes: a
datagram or a whole TCP frame goes into the buffer undecoded. An I/O thread
hands it to the engine with the time (HMAC and msgpack run in parallel
threads, off the event loop; the engine does the disk I/O and the spoofed
sends through the raw socket, iod/spoof.py) and sends the engine's answer:
UDP answers on the receiving socket, from a plain blocking call in the
thread. Only TCP answers go back through trio (run_sync_soon: no waiting in
the thread), since the connection's stream belongs to the event loop. A READ
relayed over TCP is answered with its REPLY's frame up to the MAC and then
the data trailer by os.sendfile from the datafile (zeros past its end;
common/iodproto.py): its data never enters this process.

Back-pressure: when the buffer is full a UDP request is dropped and counted
(the NFS client retransmits, the metaserver times out); a TCP connection
stops being read until there is room, and each connection has a bound on its
requests in flight, so replies the peer does not take stop its reading too.

With --secure-port (paper 5.7) TCP connections and UDP frames are taken only
from source ports below 1024, i.e. from root on the sending host
(dropped_insecure_port); everything else about whom to trust is the engine's.

SIGHUP re-reads the key file (key rotation without downtime; Keys.update
swaps the keys every thread uses). Root is gone by then: if the path cannot be
opened any more, the descriptor opened at start is read again, which sees the
file only as long as it is rewritten in place (`cat new > cluster.key`), not
replaced by another file.

--metrics ADDR:PORT serves the counters, queue depth and free space for
Prometheus (iod/metrics.py).

Logging: one line per event (start, stop, an error kind first seen or again
after a quiet minute, iod/errorlog.py); counters are summarised every
--stats-interval seconds when they changed, and on SIGUSR1.
"""

import errno
import logging
import os
import select
import signal
import socket
import threading
import time

import trio

from common import iodproto
from common.iodproto import IodProtoError
from common.runtime import pktinfo
from common.runtime.resvport import PRIVILEGED_PORTS
from common.runtime.version import VERSION
from iod.counters import Counters
from iod.dsrevoked import Revoked
from iod.dsserver import DsServer
from iod.engine import Engine, store_name
from iod.errorlog import ErrorLog
from iod.metrics import serve_metrics
from iod.nfs4ds import DataServer, FileRange, Reply
from iod.workqueue import WorkQueue

log = logging.getLogger("iod")

UDP_MAX_DATAGRAM = 65535
_ZEROS = memoryview(bytes(1 << 16))
UDP_BURST = 64          # datagrams taken in a row before letting other tasks run


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
        """A job of this connection is done (in trio, via run_sync_soon):
        ``data`` is the answer's bytes, a Reply (engine.handle), or None."""
        if data is None:
            self.inflight.release()
            return
        try:
            # Never blocks: a slot of ``inflight`` is held per queued reply.
            self.send_channel.send_nowait(data)
        except (trio.ClosedResourceError, trio.BrokenResourceError, trio.WouldBlock):
            _release(data)
            self.inflight.release()

    def drain(self):
        """Let go of the answers never sent (the connection ended)."""
        while True:
            try:
                _release(self.receive_channel.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError,
                    trio.BrokenResourceError):
                return


class Server:
    """The iod once its privileged set-up is done (iod/daemon.py): serve()
    runs it. Its engine is made with it, so the verifier and the time before
    which stamped frames are refused are this process's."""

    def __init__(self, config, store, spoofer, udp_sock, tcp_sock, key_file=None,
                 metrics_sock=None, ds_sock=None):
        self.config = config
        self.store = store
        self.spoofer = spoofer
        self.udp_sock = udp_sock     # stdlib sockets (non-blocking once serving)
        self.tcp_sock = tcp_sock
        self.key_file = key_file        # opened while root, re-read on SIGHUP
        self.metrics_sock = metrics_sock
        self.ds_sock = ds_sock
        self.started = time.monotonic()
        wall = time.time()
        self.connections = 0
        self.counters = Counters()
        self.errors = ErrorLog()
        # Data-server handles minted before this start are refused: what was
        # revoked while the iod was down is not known here.
        self.revoked = Revoked(floor=int(wall * 1000))
        self.engine = Engine(config.keys, store, spoofer, wall=wall, mono=self.started,
                             verifier=os.urandom(8), max_clock_skew=config.max_clock_skew,
                             pong_allow=config.pong_allow, ping_rate=config.ping_rate,
                             ping_burst=config.ping_burst, counters=self.counters,
                             errors=self.errors, revoked=self.revoked,
                             ds_port=config.ds_port if ds_sock is not None else None)
        self.ds = None
        if ds_sock is not None:
            data_server = DataServer(
                config.keys, store, self.revoked, verifier=self.engine.verifier,
                server_id=store.store_id or os.urandom(16), boot_epoch=int(wall),
                store_usable=self.engine.store_usable, counters=self.counters)
            self.ds = DsServer(data_server, ds_sock, threads=config.threads,
                               queue_depth=config.queue_depth, queue_bytes=config.queue_bytes,
                               max_connections=config.max_connections,
                               inflight=config.tcp_inflight, send_timeout=config.send_timeout,
                               counters=self.counters, errors=self.errors)
        self.queue = WorkQueue(config.queue_depth, config.queue_bytes)
        self.threads = []
        self._token = None

    # -- I/O threads -------------------------------------------------------

    def _io_thread(self):
        handle, wall, mono = self.engine.handle, time.time, time.monotonic
        while True:
            job = self.queue.get()
            if job is None:
                return
            out = None
            try:
                out = handle(job.frame, job.peer, job.conn is None, wall(), mono())
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

    # -- key rotation ----------------------------------------------------------

    def reload_keys(self):
        """SIGHUP: take the key file's keys (Keys.update: every thread signs
        and verifies with them from its next frame). Returns whether it did."""
        if self.key_file is None:
            log.warning("SIGHUP: no key file to reload")
            return False
        return self.key_file.reload_into(self.config.keys, log)

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
        if self.ds is not None:
            self.ds.start()
        try:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1,
                                           signal.SIGHUP) as sigs:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._serve_udp, self.udp_sock)
                    nursery.start_soon(self._serve_tcp, listener)
                    nursery.start_soon(self._stats_loop)
                    if self.metrics_sock is not None:
                        await nursery.start(serve_metrics, self)
                    host, port = self.udp_sock.getsockname()[:2]
                    slot = self.config.ip_id_slot
                    log.info("iod %s serving %s (store %s) on %s:%d (UDP and TCP) as uid %d; "
                             "%d I/O threads; IP IDs %d..%d (slot %d/%d); verifier %s", VERSION,
                             self.store.directory, store_name(self.store), host, port,
                             os.geteuid(), self.config.threads, slot.low, slot.high - 1,
                             slot.index, slot.count, self.engine.verifier.hex())
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
            if self.ds is not None:
                await trio.to_thread.run_sync(self.ds.stop)
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
            conn.drain()
            conn.receive_channel.close()
            slots.release()
            log.info("connection from %s:%d ended: %s", peer[0], peer[1], reason)

    async def _connection_writer(self, stream, conn, scope):
        receive = conn.receive_channel.receive
        while True:
            try:
                data = await receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            with trio.move_on_after(self.config.send_timeout) as timeout:
                try:
                    if type(data) is Reply:
                        await self._send_reply(stream, data)
                    else:
                        await stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    scope.cancel()
                    return
                finally:
                    _release(data)
            conn.inflight.release()
            if timeout.cancelled_caught:
                # Half a frame may be on the wire: the stream is unusable.
                log.warning("closing connection from %s:%d: answer not taken within %ss",
                            conn.peer[0], conn.peer[1], self.config.send_timeout)
                scope.cancel()
                return

    async def _send_reply(self, stream, reply):
        """A relayed READ's frame, its data by os.sendfile from the datafile
        (zeros past its end): the data never enters this process."""
        for part in reply.parts:
            if type(part) is not FileRange:
                await stream.send_all(part)
                continue
            sock = stream.socket
            out, sent, count = sock.fileno(), 0, part.count
            if part.pinned is not None:
                while sent < count:
                    try:
                        n = os.sendfile(out, part.pinned.fd, part.offset + sent, count - sent)
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(sock)
                        continue
                    if n == 0:     # the datafile ends here
                        break
                    sent += n
                self.counters.add("relay_sendfile_bytes", sent)
            while sent < count:
                n = min(len(_ZEROS), count - sent)
                await stream.send_all(_ZEROS[:n])
                sent += n


def _release(data):
    if type(data) is Reply:
        data.release()


def _plausible(data):
    """Cheap screening in the receiver (the MAC is checked by the threads):
    a datagram must be exactly one frame."""
    try:
        return len(data) >= iodproto.HEADER.size and iodproto.frame_length(
            data[:iodproto.HEADER.size]) == len(data)
    except IodProtoError:
        return False
