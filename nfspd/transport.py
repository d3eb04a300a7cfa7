"""UDP and TCP transports for RPC services, with trio.

Thin I/O shells: every received message goes to Dispatcher.handle_now(); a
reply is sent back at once, a Deferred call runs as a task that sends its reply
when it has one, but for a call that waits only for the group commit: that one
is parked until the end of the loop's batch, when one flush answers them all
(nfspd/parked.py). Concurrency and buffering are bounded everywhere: a
limited number of calls run at once per socket or connection (further
datagrams wait in the kernel's socket buffer, further records in TCP's window),
TCP records have a maximum size, idle connections are closed.
"""

import errno
import ipaddress
import logging
import socket
import struct

import trio

from common import rpc
from common.runtime import pktinfo
from common.runtime.gather import unsent
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
    task_status.started()
    try:
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
                await trio.lowlevel.wait_readable(sock)
    finally:
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
    per receive)."""
    connections = trio.Semaphore(limits.max_connections)
    task_status.started()
    async with trio.open_nursery() as nursery:
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
            nursery.start_soon(_serve_connection, conn, dispatcher, limits, connections, offload)


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
                        await trio.lowlevel.wait_writable(self.sock)
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


async def _serve_connection(sock, dispatcher, limits, connections, offload=None):
    try:
        sock.setblocking(False)
        # Replies are small and answered at once: no waiting to fill segments.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Connection(sock, sock.getpeername()[:2], sock.getsockname()[:2],
                           limits.send_timeout)
    except OSError:
        sock.close()
        connections.release()
        return
    client, local = conn.client, conn.local
    reader = rpc.RecordReader(limits.max_record)
    inflight = trio.Semaphore(limits.tcp_inflight_per_conn)
    parked = Parked(limits.tcp_inflight_per_conn)
    handle_now = dispatcher.handle_now
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
                unyielded = 0
                drained = False
                while True:
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
                    out = []
                    for record in records:
                        if (offload is not None and offload.takes(record)
                                and offload.submit(record, client, local, 1, _offloaded_tcp,
                                                   (conn, nursery))):
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
                            if parked.park(reply):
                                continue
                            await inflight.acquire()
                            nursery.start_soon(_answer_tcp, conn, reply, inflight)
                        else:
                            out.append(rpc.encode_record(reply))
                    # The replies of calls answered at once go out together,
                    # in one write (clients pipeline many small calls).
                    if out and not await conn.send(b"".join(out)):
                        break
                    if parked:
                        # Then the replies that waited for the flush, in order
                        # between themselves (and, like a task's, after those).
                        out = [_tcp_record(reply) for reply, _ in await parked.settle()
                               if reply is not None]
                        if out and not await conn.send(b"".join(out)):
                            break
                    unyielded += len(records)
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
