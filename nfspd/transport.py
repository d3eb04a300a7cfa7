"""UDP and TCP transports for RPC services, with trio.

Thin I/O shells: every received message goes to Dispatcher.handle_now(); a
reply is sent back at once, a Deferred call runs as a task that sends its reply
when it has one, but for a call that waits only for the group commit: that one
is parked until the end of the loop's batch, when one flush answers them all
(nfspd/parked.py). Concurrency and buffering are bounded everywhere: a
limited number of calls run at once per socket or connection (further
datagrams wait in the kernel's socket buffer, further records in TCP's window),
TCP records have a maximum size, idle connections are closed. A loop that has
drained its socket waits through common/runtime/idlewait.py: with one client,
a trip through trio's scheduler per call was a fifth of nfspd's CPU.
"""

import errno
import ipaddress
import logging
import select
import socket
import struct

import trio

from common import rpc
from common.runtime import pktinfo
from common.runtime.gather import unsent
from common.runtime.idlewait import IdleWait
from nfspd.dispatch import CallContext, Deferred, ReplyParts
from nfspd.parked import Parked

log = logging.getLogger(__name__)

UDP_MAX_DATAGRAM = 65535
_MARK = struct.Struct(">I")   # an RPC record's fragment mark (RFC 5531 11)



class Limits:
    """Bounds shared by the transports (defaults sized for a cluster's clients)."""

    def __init__(self, max_record=(1 << 20) + 4096 * 4, udp_inflight=128,
                 tcp_inflight_per_conn=32, max_connections=1024, idle_timeout=360.0,
                 send_timeout=30.0):
        self.max_record = max_record
        self.udp_inflight = udp_inflight
        self.tcp_inflight_per_conn = tcp_inflight_per_conn
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.send_timeout = send_timeout


def udp_socket():
    # A plain socket, not trio's wrapper: on the hot path the wrapper's
    # checkpoints cost more than the system calls (measured), so the UDP loop
    # calls the socket directly and parks in trio only when it would block.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    pktinfo.enable(sock)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
        except OSError:
            pass
    return sock


async def bind_udp(host, port):
    sock = udp_socket()
    sock.bind((host, port))
    return sock


async def bind_tcp(host, port, backlog=128):
    """A listening socket for serve_tcp (plain and non-blocking, like UDP's)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


UDP_BATCH = 64
"""Datagrams taken from the socket, while it has some, before other tasks get a
turn: one trip through trio's scheduler per batch rather than per call."""

TCP_RECV = 65536  # bytes asked of a TCP connection per read

_ICMP_ERRNOS = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)


async def serve_udp(sock, dispatcher, limits, offload=None,
                    task_status=trio.TASK_STATUS_IGNORED):
    """Receive datagrams and answer each from the address it was sent to.

    Calls that need no waiting are answered right here, in arrival order; so
    are those that wait only for the group commit, at the end of the batch
    (parked); the others (Deferred) run as tasks, at most
    ``limits.udp_inflight`` at once (the loop stops taking datagrams while that
    many run). With ``offload`` (a nfspd/workers.Pool), the calls it takes are
    answered by a worker process."""
    bound_host, port = sock.getsockname()[:2]
    limiter = trio.Semaphore(limits.udp_inflight)
    cmsg_space = pktinfo.ANCDATA_SIZE
    recvmsg, sendmsg = sock.recvmsg, sock.sendmsg
    handle_now = dispatcher.handle_now
    # The IP_PKTINFO of a datagram -> (local address, ancdata that sends a reply
    # from it): a few distinct values, so computed once each.
    destinations = {}
    no_pktinfo = ((bound_host, port), pktinfo.reply_from(bound_host))
    # A worker given this socket answers on it itself (nfspd/workers.py).
    offloaded_reply = None if getattr(offload, "udp", None) is sock else _offloaded_udp
    parked = Parked(limits.udp_inflight)
    idle = IdleWait(sock.fileno())
    try:
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                for _ in range(UDP_BATCH):
                    try:
                        data, ancdata, _, client = recvmsg(UDP_MAX_DATAGRAM, cmsg_space)
                    except BlockingIOError:
                        break
                    except OSError as e:
                        # ICMP errors from earlier sends surface here on Linux; not fatal.
                        if e.errno in _ICMP_ERRNOS:
                            continue
                        raise
                    if ancdata:
                        key = ancdata[0][2]
                        dest = destinations.get(key)
                        if dest is None:
                            dest = _destination(ancdata, bound_host, port)
                            if len(destinations) > 1024:
                                destinations.clear()
                            destinations[key] = dest
                    else:
                        dest = no_pktinfo
                    if (offload is not None and offload.takes(data)
                            and offload.submit(data, client, dest[0], 0, offloaded_reply,
                                               (sendmsg, dest[1], client))):
                        continue
                    ctx = CallContext(client, dest[0], "udp", raw=data)
                    try:
                        reply = handle_now(data, ctx)
                    except Exception:
                        _dispatch_failed(dispatcher, ctx)
                        continue
                    if reply is None:
                        continue
                    if type(reply) is Deferred:
                        if parked.park(reply, (dest[1], ctx)):
                            continue
                        try:
                            limiter.acquire_nowait()
                        except trio.WouldBlock:
                            await limiter.acquire()
                        nursery.start_soon(_answer_udp, sock, reply, ctx, limiter, limits)
                        continue
                    try:
                        sendmsg([reply], dest[1], 0, client)
                    except BlockingIOError:
                        await _send_udp(sock, reply, ctx, limits)
                    except OSError as e:
                        _send_failed(ctx, e)
                else:
                    # A full batch: let the rest of the server run before the next.
                    if parked:
                        await _settle_udp(sock, parked, limits)
                    await trio.lowlevel.checkpoint()
                    continue
                if parked:
                    # Then straight back to the socket: more came during the flush.
                    await _settle_udp(sock, parked, limits)
                    continue
                await idle.readable()
    finally:
        idle.close()
        parked.abandon()


async def _settle_udp(sock, parked, limits):
    for reply, (anc, ctx) in await parked.settle():
        if reply is None:
            continue
        try:
            sock.sendmsg(reply if type(reply) is ReplyParts else [reply], anc, 0, ctx.client)
        except BlockingIOError:
            await _send_udp(sock, reply, ctx, limits)
        except OSError as e:
            _send_failed(ctx, e)


def _offloaded_udp(reply, sendmsg, anc, client):
    # A worker's reply. A full socket buffer loses it, like a lost datagram:
    # the client retransmits.
    try:
        sendmsg([reply], anc, 0, client)
    except OSError as e:
        log.debug("UDP reply to %s:%s from a worker not sent: %s", client[0], client[1], e)


def _dispatch_failed(dispatcher, ctx):
    # A bug (handlers' own failures are SYSTEM_ERR replies already): one
    # message must not take the server down with it.
    dispatcher.counters.dropped += 1
    log.exception("dropped a message from %s:%s: the dispatcher failed", *ctx.client[:2])


def _destination(ancdata, bound_host, port):
    local_ip = pktinfo.destination(ancdata) or bound_host
    return (local_ip, port), pktinfo.reply_from(local_ip)


def _send_now(sock, reply, ctx):
    """Send without waiting; False if the socket's buffer is full. A
    ReplyParts leaves as one datagram, gathered by the kernel."""
    try:
        sock.sendmsg(reply if type(reply) is ReplyParts else [reply], pktinfo.reply_from(ctx.local[0]), 0,
                     ctx.client)
    except BlockingIOError:
        return False
    except OSError as e:
        _send_failed(ctx, e)
    return True


def _send_failed(ctx, e):
    # A reply too large for a datagram or an unreachable client: the client
    # retransmits or gives up; the server goes on.
    log.warning("UDP reply to %s:%s failed: %s", ctx.client[0], ctx.client[1], e)


async def _send_udp(sock, reply, ctx, limits):
    with trio.move_on_after(limits.send_timeout):
        while not _send_now(sock, reply, ctx):
            await trio.lowlevel.wait_writable(sock)


async def answer_udp_call(sock, dispatcher, data, client, local, limits):
    """Answer a call that reached this server elsewhere (handed back by a
    namespace worker, nfspd/workers.py) as if it had come in on ``sock``,
    sent to ``local`` by ``client``."""
    ctx = CallContext(client, local, "udp", raw=data)
    try:
        reply = await dispatcher.handle(data, ctx)
    except Exception:
        _dispatch_failed(dispatcher, ctx)
        return
    if reply is not None:
        await _send_udp(sock, reply, ctx, limits)


async def _answer_udp(sock, deferred, ctx, limiter, limits):
    try:
        reply = await deferred.run()
        if reply is not None:
            await _send_udp(sock, reply, ctx, limits)
    finally:
        limiter.release()


# accept() failures that concern one would-be connection, not the listener.
_ACCEPT_SKIP = (errno.ECONNABORTED, errno.EPROTO, errno.EPERM)
_ACCEPT_PAUSE = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


async def serve_tcp(listener, dispatcher, limits, offload=None,
                    task_status=trio.TASK_STATUS_IGNORED):
    """Serve RPC over TCP on a socket from bind_tcp.

    Like serve_udp, on the plain sockets: trio's streams cost several times
    what a small call does (locks, cancel scopes and checkpoints per send and
    per receive). One poller (_Poller) reads every connection whose calls are
    answered at once or wait only for the group commit; a connection that has
    to wait otherwise (a reply its socket does not take whole, its bound of
    calls in flight reached) gets a task of its own from then on
    (_serve_connection)."""
    connections = trio.Semaphore(limits.max_connections)
    task_status.started()
    async with trio.open_nursery() as nursery:
        poller = _Poller(dispatcher, limits, connections, offload, nursery)
        nursery.start_soon(poller.run)
        nursery.start_soon(poller.sweep)
        while True:
            await connections.acquire()
            while True:
                try:
                    conn, _ = listener.accept()
                    break
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(listener)
                except OSError as e:
                    if e.errno in _ACCEPT_SKIP:
                        continue
                    if e.errno in _ACCEPT_PAUSE:
                        log.warning("accept failed: %s; pausing", e)
                        await trio.sleep(0.1)
                        continue
                    connections.release()
                    raise
            poller.add(conn)


class _Connection:
    """One client's TCP connection: whole records out, whoever sends them."""

    __slots__ = ("sock", "client", "local", "lock", "broken", "send_timeout")

    def __init__(self, sock, client, local, send_timeout):
        self.sock, self.client, self.local = sock, client, local
        self.lock = trio.Lock()
        self.broken = False
        self.send_timeout = send_timeout

    async def send(self, data):
        """Send ``data`` (whole records); False when the connection is unusable
        (broken, or shut down here because the client did not take a reply
        in time: half a record may be on the wire)."""
        return await self.send_parts([data])

    async def send_parts(self, bufs):
        """send() of the records that ``bufs`` (a list of buffers) make
        together, gathered by sendmsg: a relayed READ's data leaves from the
        buffer it was received into."""
        if self.broken:
            return False
        lock = self.lock
        if not lock.locked():
            # Usually the socket takes it all at once: nothing to wait for.
            try:
                n = self.sock.sendmsg(bufs)
            except BlockingIOError:
                n = 0
            except OSError as e:
                return self._broke(e)
            bufs = unsent(bufs, n)
            if not bufs:
                return True
            lock.acquire_nowait()  # free: nothing ran since it was checked
        else:
            await lock.acquire()
        try:
            with trio.move_on_after(self.send_timeout):
                while bufs:
                    if self.broken:
                        return False
                    try:
                        n = self.sock.sendmsg(bufs)
                    except BlockingIOError:
                        try:
                            await trio.lowlevel.wait_writable(self.sock)
                        except trio.ClosedResourceError:
                            # Closed by the poller, which read the client's
                            # end while this task's call was in flight.
                            return self._broke(None)
                        continue
                    except OSError as e:
                        return self._broke(e)
                    bufs = unsent(bufs, n)
                return True
            log.warning("closing connection to %s: reply not taken within %ss",
                        self.client, self.send_timeout)
            self._broke(None)
            return False
        finally:
            lock.release()

    def _broke(self, error):
        if error is not None:
            log.debug("connection to %s broke: %s", self.client, error)
        self.broken = True
        try:
            # The receive loop then sees the end of the connection.
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return False


class _Stream:
    """A TCP connection's receiving side: its records, its calls in flight
    (tasks, or parked for the group commit), when data last came."""

    __slots__ = ("conn", "reader", "parked", "inflight", "last")

    def __init__(self, conn, limits):
        self.conn = conn
        self.reader = rpc.RecordReader(limits.max_record)
        self.inflight = trio.Semaphore(limits.tcp_inflight_per_conn)
        self.parked = Parked(limits.tcp_inflight_per_conn)
        self.last = trio.current_time()


def _open_stream(sock, limits):
    """A _Stream for an accepted socket, or None (closed) if it is already gone."""
    try:
        sock.setblocking(False)
        # Replies are small and answered at once: no waiting to fill segments.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Connection(sock, sock.getpeername()[:2], sock.getsockname()[:2],
                           limits.send_timeout)
    except OSError:
        sock.close()
        return None
    return _Stream(conn, limits)


def _take(records, st, dispatcher, offload, nursery):
    """Answer the calls of ``records`` that can be answered now, in order:
    (replies to send, in one write, a Deferred that needs a task though the
    connection has none left, the records after it). Parked calls wait in
    st.parked, the others run as tasks of ``nursery``."""
    conn = st.conn
    client, local = conn.client, conn.local
    handle_now = dispatcher.handle_now
    out = []
    for i, record in enumerate(records):
        if (offload is not None and offload.takes(record)
                and offload.submit(record, client, local, 1, _offloaded_tcp, (conn, nursery))):
            continue
        ctx = CallContext(client, local, "tcp", raw=record)
        try:
            reply = handle_now(record, ctx)
        except Exception:
            _dispatch_failed(dispatcher, ctx)
            continue
        if reply is None:
            continue
        if type(reply) is Deferred:
            if st.parked.park(reply):
                continue
            try:
                st.inflight.acquire_nowait()
            except trio.WouldBlock:
                return out, reply, records[i + 1:]
            nursery.start_soon(_answer_tcp, conn, reply, st.inflight)
        else:
            out.append(rpc.encode_record(reply))
    return out, None, ()


async def _take_all(records, st, dispatcher, offload, nursery, blocked=None):
    """_take every call of ``records``, after ``blocked`` (a Deferred that
    needs a task), waiting for a call in flight to end whenever the
    connection has none left: the replies to send at once."""
    out = []
    while True:
        if blocked is not None:
            await st.inflight.acquire()
            nursery.start_soon(_answer_tcp, st.conn, blocked, st.inflight)
        more, blocked, records = _take(records, st, dispatcher, offload, nursery)
        out += more
        if blocked is None:
            return out


async def _settled(parked):
    """The records of the replies that waited for the flush, once it is done,
    in order (one write)."""
    return b"".join(_tcp_record(reply) for reply, _ in await parked.settle()
                    if reply is not None)


class _Poller:
    """Reads every connection it holds from one task, through an epoll of its
    own (level-triggered, armed once per connection), as serve_udp reads its
    socket: a task per connection cost trio a wake-up, and the socket armed
    again, per call (perf, 8 clients, GETATTR: 44 against UDP's 34 us of CPU
    per call; the poller's prototype cut it to 37-40 and RENAME's 94-117 to
    83-94). A connection that must wait for something other than the group
    commit leaves for a task of its own (_serve_connection)."""

    def __init__(self, dispatcher, limits, connections, offload, nursery):
        self.dispatcher, self.limits, self.offload = dispatcher, limits, offload
        self.connections, self.nursery = connections, nursery
        self._ep = select.epoll()
        self._streams = {}  # fd -> _Stream

    def add(self, sock):
        st = _open_stream(sock, self.limits)
        if st is None:
            self.connections.release()
            return
        fd = sock.fileno()
        self._streams[fd] = st
        self._ep.register(fd, select.EPOLLIN)

    def _drop(self, fd):
        st = self._streams.pop(fd)
        self._ep.unregister(fd)
        return st

    def _close(self, fd):
        st = self._drop(fd)
        st.conn.broken = True  # a worker's or task's late reply must not reach a reused fd
        st.parked.abandon()
        trio.lowlevel.notify_closing(st.conn.sock)
        st.conn.sock.close()
        self.connections.release()

    def _leave(self, fd, pending=b"", blocked=None, records=()):
        """The connection goes on in a task of its own, with what it was doing."""
        st = self._drop(fd)
        self.nursery.start_soon(_serve_connection, st, self.dispatcher, self.limits,
                                self.connections, self.offload, pending, blocked, records)

    def _send(self, fd, st, data):
        """Send ``data`` (whole records) now; False if the connection is gone
        or has left for a task to finish sending it."""
        conn = st.conn
        if conn.lock.locked():  # a task is sending: after it, in order
            self._leave(fd, pending=data)
            return False
        try:
            n = conn.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError as e:
            log.debug("connection from %s ended: %s", conn.client, e)
            self._close(fd)
            return False
        if n < len(data):
            self._leave(fd, pending=data[n:])
            return False
        return True

    def _readable(self, fd, st, settling):
        conn = st.conn
        try:
            data = conn.sock.recv(TCP_RECV)
        except BlockingIOError:
            return
        except OSError as e:
            log.debug("connection from %s ended: %s", conn.client, e)
            self._close(fd)
            return
        if not data:
            self._close(fd)
            return
        st.last = trio.current_time()
        try:
            records = st.reader.feed(data)
        except rpc.RecordTooLarge as e:
            self.dispatcher.counters.dropped += 1
            log.warning("closing connection from %s:%s: %s", conn.client[0], conn.client[1], e)
            self._close(fd)
            return
        out, blocked, rest = _take(records, st, self.dispatcher, self.offload, self.nursery)
        if blocked is not None:
            self._leave(fd, pending=b"".join(out), blocked=blocked, records=rest)
            return
        # The replies of calls answered at once go out together, in one write
        # (clients pipeline many small calls).
        if out and not self._send(fd, st, b"".join(out)):
            return
        if st.parked:
            settling[fd] = st

    async def run(self):
        ep, streams = self._ep, self._streams
        idle = IdleWait(ep.fileno())
        unyielded = 0
        try:
            while True:
                events = ep.poll(0, UDP_BATCH)
                if not events:
                    if await idle.readable():
                        unyielded = 0
                    continue
                settling = {}  # fd -> stream, in the order they parked calls
                taken = 0
                while True:
                    for fd, _ in events:
                        st = streams.get(fd)
                        if st is not None:
                            self._readable(fd, st, settling)
                    taken += len(events)
                    if not settling or taken >= UDP_BATCH:
                        break
                    # Calls that came meanwhile join the flush, as serve_udp
                    # drains its socket first: with 8 clients over TCP, 5.3
                    # calls per flush instead of 4.0, CREATE+REMOVE under
                    # sync 1,285-1,409 -> 1,503-1,550 pairs/s (2 rounds).
                    events = ep.poll(0, UDP_BATCH - taken)
                    if not events:
                        break
                # Then the replies that waited for the flush (one flush for
                # them all: the first waits, the others find theirs done), in
                # order between themselves and after those sent at once.
                for fd, st in settling.items():
                    if streams.get(fd) is not st:
                        continue  # closed (calls given up), or left: its task settles them
                    data = await _settled(st.parked)
                    if data and streams.get(fd) is st:
                        self._send(fd, st, data)
                unyielded += taken
                if unyielded >= UDP_BATCH:
                    # Connections that keep sending must not keep the rest
                    # of the server from running.
                    unyielded = 0
                    await trio.lowlevel.checkpoint()
        finally:
            for fd in list(streams):
                self._close(fd)
            idle.close()
            ep.close()

    async def sweep(self):
        """Close connections idle for idle_timeout (at most a sixteenth later)."""
        idle_timeout = self.limits.idle_timeout
        while True:
            await trio.sleep(idle_timeout / 16)
            now = trio.current_time()
            for fd, st in list(self._streams.items()):
                if now - st.last >= idle_timeout:
                    log.debug("closing idle connection from %s", st.conn.client)
                    self._close(fd)


async def _serve_connection(st, dispatcher, limits, connections, offload=None,
                            pending=b"", blocked=None, records=()):
    """A connection that left the poller, served by a task of its own: the
    records it sends it reads until it closes, waiting as it must (for the
    socket to take a reply, for a call in flight to end). It starts with what
    it was doing: replies to send, a Deferred that waits for a call in flight
    to end, the records after it."""
    conn = st.conn
    sock, client, reader, parked = conn.sock, conn.client, st.reader, st.parked
    idle_timeout = limits.idle_timeout
    # The idle timeout needs no cancel scope per receive: one scope, whose
    # deadline moves on (never before idle_timeout without data, at most a
    # sixteenth later) when it has gone stale.
    slack = idle_timeout / 16
    try:
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as idle:
                moved = trio.current_time()
                idle.deadline = moved + idle_timeout + slack
                out = ([pending] if pending else []) + await _take_all(
                    records, st, dispatcher, offload, nursery, blocked)
                unyielded = 0
                drained = False
                while True:
                    # The replies of calls answered at once go out together,
                    # in one write (clients pipeline many small calls).
                    if out and not await conn.send(b"".join(out)):
                        break
                    if parked:
                        # Then the replies that waited for the flush, in order
                        # between themselves (and, like a task's, after those).
                        data = await _settled(parked)
                        if data and not await conn.send(data):
                            break
                    out = []
                    if drained:
                        # A short read that ended on a record boundary left
                        # the socket empty: a client waits for its replies
                        # before it sends more, so a recv now would only fail
                        # (EAGAIN, a system call and an exception per call).
                        # Bytes that came meanwhile are reported at the next
                        # epoll pass.
                        drained = False
                        unyielded = 0
                        await trio.lowlevel.wait_readable(sock)
                    try:
                        data = sock.recv(TCP_RECV)
                    except BlockingIOError:
                        unyielded = 0
                        await trio.lowlevel.wait_readable(sock)
                        continue
                    except OSError as e:
                        log.debug("connection from %s ended: %s", client, e)
                        break
                    if not data:
                        break
                    now = trio.current_time()
                    if now - moved > slack:
                        moved = now
                        idle.deadline = now + idle_timeout + slack
                    try:
                        records = reader.feed(data)
                    except rpc.RecordTooLarge as e:
                        dispatcher.counters.dropped += 1
                        log.warning("closing connection from %s:%s: %s", client[0], client[1], e)
                        break
                    unyielded += len(records)
                    out = await _take_all(records, st, dispatcher, offload, nursery)
                    if len(data) < TCP_RECV and not reader.pending():
                        drained = True
                    elif unyielded >= UDP_BATCH:
                        # A client that keeps the socket full must not keep
                        # the rest of the server from running.
                        unyielded = 0
                        await trio.lowlevel.checkpoint()
            if idle.cancelled_caught:
                log.debug("closing idle connection from %s", client)
            nursery.cancel_scope.cancel()
    finally:
        conn.broken = True  # a worker's late reply must not reach a reused fd
        parked.abandon()
        trio.lowlevel.notify_closing(sock)
        sock.close()
        connections.release()


def _offloaded_tcp(reply, conn, nursery):
    # A worker's reply, sent by a task of the connection like a Deferred's:
    # the connection's lock (a trio.Lock, released only by the task that took
    # it) keeps it from interleaving with another reply, even when the socket
    # takes only part of it.
    if conn.broken:
        return
    record = _MARK.pack(rpc.LAST_FRAGMENT | len(reply)) + reply
    try:
        nursery.start_soon(conn.send, record)
    except RuntimeError:  # the connection's nursery has closed
        pass


def _tcp_record(reply):
    if type(reply) is ReplyParts:
        reply = b"".join(reply)
    return rpc.encode_record(reply)


async def _answer_tcp(conn, deferred, inflight):
    try:
        reply = await deferred.run()
        if type(reply) is ReplyParts:
            # One fragment, its mark before the first buffer; the rest (a
            # relayed READ's MiB) is never joined.
            size = sum(map(len, reply))
            await conn.send_parts([_MARK.pack(rpc.LAST_FRAGMENT | size) + reply[0], *reply[1:]])
        elif reply is not None:
            await conn.send(rpc.encode_record(reply))
    finally:
        inflight.release()


def is_loopback(ip):
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False
