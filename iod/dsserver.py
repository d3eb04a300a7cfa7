"""The pNFS data server's shell: how RPC records reach iod/nfs4ds.py and its
replies leave, on plain sockets and threads (the iod protocol's trio loop,
iod/server.py, is not involved: a reply here is written by the thread that
made it, with os.sendfile straight from the datafile).

Shape: one thread accepts (at most ``max_connections`` at once); one thread
per connection reads records, each with one copy (the record mark, then
recv_into a buffer of the record's size: a WRITE's data is written to disk
from that buffer); a bounded queue (iod/workqueue.py) feeds ``threads`` I/O
threads that run the data server and send the reply under the connection's
send lock, replies in any order (RPC matches them by xid). Back-pressure: a
connection is not read while ``inflight`` of its requests wait or run, nor
while the queue is full. A record larger than the session's largest request
closes the connection (its end cannot be found without reading it whole).

A reply the peer does not take within ``send_timeout`` (SO_SNDTIMEO) closes
the connection: half a reply may be on the wire.
"""

import logging
import os
import socket
import struct
import threading
import time

from common.nfs4sessions import DEFAULT_SERVER_LIMITS
from iod.nfs4ds import Connection, FileRange
from iod.workqueue import WorkQueue

log = logging.getLogger("iod")

LAST_FRAGMENT = 0x80000000
# The largest record a client may send: the largest request a session grants,
# and the RPC header around it.
MAX_RECORD = DEFAULT_SERVER_LIMITS.maxrequestsize + 1024
_ZEROS = memoryview(bytes(1 << 20))


class _Conn:
    def __init__(self, sock, peer, inflight):
        self.sock = sock
        self.info = Connection(id=object(), ip=peer[0], port=peer[1])
        self.inflight = threading.Semaphore(inflight)
        self.send_lock = threading.Lock()
        self.broken = False

    def send(self, reply):
        """Send it all; returns how many bytes went by sendfile."""
        zero_copy = 0
        with self.send_lock:
            if self.broken:
                return 0
            try:
                for part in reply.parts:
                    if isinstance(part, FileRange):
                        zero_copy += self._send_range(part)
                    else:
                        self.sock.sendall(part)
            except OSError:
                # Timed out (SO_SNDTIMEO) or reset: part of a reply may be
                # out, so nothing more can follow it on this connection.
                self.broken = True
                self.shutdown()
                raise
        return zero_copy

    def _send_range(self, part):
        out = self.sock.fileno()
        sent = 0
        if part.pinned is not None:
            while sent < part.count:
                n = os.sendfile(out, part.pinned.fd, part.offset + sent, part.count - sent)
                if n == 0:     # the datafile ends here: the rest reads as zeros
                    break
                sent += n
        from_file = sent
        while sent < part.count:
            sent += self.sock.send(_ZEROS[:min(len(_ZEROS), part.count - sent)])
        return from_file

    def shutdown(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _recv_exactly(sock, view):
    """Fill ``view``; False if the peer closed first. MSG_WAITALL: the kernel
    waits for the whole record, where one recv per segment that arrived would
    cost the GIL's release and retake each (a 1 MiB WRITE came in dozens);
    a signal or the end of the stream still returns early, hence the loop."""
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:], len(view) - got, socket.MSG_WAITALL)
        if n == 0:
            return False
        got += n
    return True


class DsServer:
    def __init__(self, ds, sock, *, threads=8, queue_depth=1024, queue_bytes=64 << 20,
                 max_connections=256, inflight=64, send_timeout=30.0, counters=None,
                 errors=None):
        self.ds = ds
        self.sock = sock
        self.threads = threads
        self.queue = WorkQueue(queue_depth, queue_bytes)
        self.slots = threading.Semaphore(max_connections)
        self.inflight = inflight
        self.send_timeout = send_timeout
        self.counters = counters
        self.errors = errors
        self._conns = set()
        self._lock = threading.Lock()
        self._stopping = False
        self._threads = []

    def _count(self, name, n=1):
        if self.counters is not None:
            self.counters.add(name, n)

    def start(self):
        self.sock.setblocking(True)
        for i in range(self.threads):
            self._spawn(self._io_thread, f"iod-ds-io-{i}")
        self._spawn(self._accept_loop, "iod-ds-accept")
        host, port = self.sock.getsockname()[:2]
        log.info("pNFS data server (NFSv4.1, files layout) on %s:%d (TCP)", host, port)

    def _spawn(self, target, name, *args):
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self._threads.append(t)
        return t

    def stop(self, timeout=5.0):
        self._stopping = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)    # wakes accept()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.shutdown()
        self.queue.close()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    # -- threads ----------------------------------------------------------------------

    def _accept_loop(self):
        while not self._stopping:
            self.slots.acquire()
            try:
                sock, peer = self.sock.accept()
            except OSError as e:
                self.slots.release()
                if self._stopping:
                    return
                self._error(("ds accept", e.errno), "data server accept failed: %s", e)
                time.sleep(0.1)
                continue
            self._count("ds_connections")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            whole, frac = divmod(self.send_timeout, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                            struct.pack("ll", int(whole), int(frac * 1e6)))
            conn = _Conn(sock, peer[:2], self.inflight)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._read_loop, args=(conn,), daemon=True,
                             name=f"iod-ds-conn-{peer[0]}:{peer[1]}").start()

    def _read_loop(self, conn):
        peer = f"{conn.info.ip}:{conn.info.port}"
        log.info("data server connection from %s", peer)
        reason = "closed by peer"
        mark = bytearray(4)
        try:
            while not self._stopping:
                record = self._read_record(conn.sock, mark)
                if record is None:
                    break
                if isinstance(record, str):
                    reason = record
                    self._count("ds_dropped_bad_stream")
                    break
                conn.inflight.acquire()
                while not self.queue.put((conn, record), len(record), 0.5):
                    if self._stopping:
                        return
                    self._count("ds_waits_queue_full")
        except OSError as e:
            reason = str(e)
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.shutdown()
            # Replies still being sent hold the socket: closed by the last user.
            with conn.send_lock:
                conn.broken = True
                conn.sock.close()
            self.ds.connection_closed(conn.info)
            self.slots.release()
            log.info("data server connection from %s ended: %s", peer, reason)

    def _read_record(self, sock, mark):
        """The next record (a bytearray), None at the end of the stream, or
        why the stream cannot be read on (a str)."""
        fragments = []
        size = 0
        while True:
            if not _recv_exactly(sock, memoryview(mark)):
                return None
            header = int.from_bytes(mark, "big")
            length = header & ~LAST_FRAGMENT
            size += length
            if size > MAX_RECORD:
                return f"a record of more than {MAX_RECORD} bytes"
            buf = bytearray(length)
            if not _recv_exactly(sock, memoryview(buf)):
                return None
            if header & LAST_FRAGMENT:
                if not fragments:
                    return buf
                fragments.append(buf)
                return bytearray().join(fragments)
            if length:      # endless empty fragments must not grow the list
                fragments.append(buf)

    def _io_thread(self):
        handle, now = self.ds.handle, time.monotonic
        while True:
            job = self.queue.get()
            if job is None:
                return
            conn, record = job
            reply = None
            try:
                reply = handle(memoryview(record), conn.info, now())
                if reply is not None:
                    self._count("ds_sendfile_bytes", conn.send(reply))
            except OSError as e:
                self._error(("ds send", e.errno), "data server reply to %s:%d not sent: %s",
                            conn.info.ip, conn.info.port, e)
            except Exception as e:      # a bug must not take the thread down
                self._count("internal_errors")
                self._error(("ds internal", type(e).__name__),
                            "data server internal error: %r", e, exc_info=True)
            finally:
                if reply is not None:
                    reply.release()
                conn.inflight.release()

    def _error(self, key, message, *args, **kw):
        if self.errors is not None:
            self.errors(logging.WARNING, key, message, *args, **kw)
        else:
            log.warning(message, *args, **kw)
