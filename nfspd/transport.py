"""UDP and TCP transports for RPC services, with trio.

Thin I/O shells: every received message goes to Dispatcher.handle(); what it
returns is sent back. Concurrency and buffering are bounded everywhere: a
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
from nfspd.dispatch import CallContext

log = logging.getLogger(__name__)

UDP_MAX_DATAGRAM = 65535
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux's value; Python < 3.12 lacks the name
_in_pktinfo = struct.Struct("=i4s4s")  # ipi_ifindex, ipi_spec_dst, ipi_addr


def _pktinfo_dst(ancdata):
    """The address a datagram was sent to, from its IP_PKTINFO message."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _in_pktinfo.size:
            _, _, addr = _in_pktinfo.unpack_from(data)
            return socket.inet_ntoa(addr)
    return None


def _pktinfo_src(ip):
    return [(socket.IPPROTO_IP, IP_PKTINFO, _in_pktinfo.pack(0, socket.inet_aton(ip), b"\0" * 4))]


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
    sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
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
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await sock.bind((host, port))
    sock.listen(backlog)
    return trio.SocketListener(sock)


async def serve_udp(sock, dispatcher, limits, task_status=trio.TASK_STATUS_IGNORED):
    """Receive datagrams and answer each from the address it was sent to."""
    bound_host, port = sock.getsockname()[:2]
    limiter = trio.Semaphore(limits.udp_inflight)
    cmsg_space = socket.CMSG_SPACE(_in_pktinfo.size)
    task_status.started()
    async with trio.open_nursery() as nursery:
        while True:
            await limiter.acquire()
            while True:
                try:
                    data, ancdata, _, client = sock.recvmsg(UDP_MAX_DATAGRAM, cmsg_space)
                    break
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(sock)
                except OSError as e:
                    # ICMP errors from earlier sends surface here on Linux; not fatal.
                    if e.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                        limiter.release()
                        raise
            local_ip = _pktinfo_dst(ancdata) or bound_host
            ctx = CallContext(client, (local_ip, port), "udp", raw=data)
            nursery.start_soon(_answer_udp, sock, dispatcher, data, ctx, limiter, limits)


async def _answer_udp(sock, dispatcher, data, ctx, limiter, limits):
    try:
        reply = await dispatcher.handle(data, ctx)
        if reply is None:
            return
        anc = [] if ctx.local[0] in ("0.0.0.0", "") else _pktinfo_src(ctx.local[0])
        with trio.move_on_after(limits.send_timeout):
            while True:
                try:
                    sock.sendmsg([reply], anc, 0, ctx.client)
                    return
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)
                except OSError as e:
                    # A reply too large for a datagram or an unreachable client:
                    # the client retransmits or gives up; the server goes on.
                    log.warning("UDP reply to %s:%s failed: %s", ctx.client[0], ctx.client[1], e)
                    return
    finally:
        limiter.release()


async def serve_tcp(listener, dispatcher, limits, task_status=trio.TASK_STATUS_IGNORED):
    connections = trio.Semaphore(limits.max_connections)
    task_status.started()
    async with trio.open_nursery() as nursery:
        while True:
            await connections.acquire()
            try:
                stream = await listener.accept()
            except OSError as e:
                connections.release()
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("accept failed: %s; pausing", e)
                    await trio.sleep(0.1)
                    continue
                raise
            nursery.start_soon(_serve_connection, stream, dispatcher, limits, connections)


async def _serve_connection(stream, dispatcher, limits, connections):
    try:
        client = stream.socket.getpeername()[:2]
        local = stream.socket.getsockname()[:2]
    except OSError:
        connections.release()
        return
    reader = rpc.RecordReader(limits.max_record)
    send_lock = trio.Lock()
    inflight = trio.Semaphore(limits.tcp_inflight_per_conn)
    try:
        async with stream, trio.open_nursery() as nursery:
            while True:
                with trio.move_on_after(limits.idle_timeout) as idle:
                    try:
                        data = await stream.receive_some(65536)
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                        log.debug("connection from %s ended: %s", client, e)
                        data = b""
                if idle.cancelled_caught:
                    log.debug("closing idle connection from %s", client)
                    break
                if not data:
                    break
                try:
                    records = reader.feed(data)
                except rpc.RecordTooLarge as e:
                    dispatcher.counters.dropped += 1
                    log.warning("closing connection from %s:%s: %s", client[0], client[1], e)
                    break
                for record in records:
                    await inflight.acquire()
                    ctx = CallContext(client, local, "tcp", raw=record)
                    nursery.start_soon(_answer_tcp, stream, send_lock, dispatcher, record, ctx,
                                       inflight, limits)
            nursery.cancel_scope.cancel()
    finally:
        connections.release()


async def _answer_tcp(stream, send_lock, dispatcher, record, ctx, inflight, limits):
    try:
        reply = await dispatcher.handle(record, ctx)
        if reply is None:
            return
        async with send_lock:
            with trio.move_on_after(limits.send_timeout) as timeout:
                await stream.send_all(rpc.encode_record(reply))
            if timeout.cancelled_caught:
                # Half a record may be on the wire: the stream is unusable.
                log.warning("closing connection to %s: reply not taken within %ss",
                            ctx.client, limits.send_timeout)
                await stream.aclose()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        inflight.release()


def is_loopback(ip):
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False
