"""The iod's spoofing sender: UDP datagrams with another host's source
address (the metaserver's), from a raw IPv4 socket (paper 5.6).

Send path. Spoofer.send runs in the iod's I/O threads, on a plain blocking
socket: going back to trio to send would cost more than the send itself
(trio.socket's sendto ~23 us CPU per datagram against ~5 us for a plain
sendto on this machine). Per datagram it copies the parts into one buffer
and computes the UDP checksum over it (iod/ipv4.py), builds one 20-byte header
per fragment with struct and sends header + fragment with sendto (cheaper
than sendmsg's scatter-gather: 4.7 against 6.2 us per packet). Measured with
``unshare --net python3 -m tools.dev.iod_sendbench`` (CPU time, best of 9 rounds, a
shared 2-vCPU AMD EPYC VM, so +-30%): checksum 15 us for 8 KiB, 49 us for
32 KiB; Spoofer.send of 8 KiB 68 us at MTU 1500 (6 packets), 38 us in one
packet; of 32 KiB ~220 us at MTU 1500 (23 packets), ~120 us at MTU 9000 (4),
~85 us in one packet. The per-packet syscall (~5-7 us) dominates small MTUs,
the checksum and copy large packets; a kernel UDP socket sending the same
32 KiB (checksum offloaded, fragmented in the kernel) takes 16 us, which is
what a Python raw-socket sender gives up for control of IDs and source.

MTU. With IP_HDRINCL the kernel refuses (EMSGSIZE) rather than fragments a
packet larger than the route's MTU, so the datagram is cut to the MTU of the
route to the client: netlink route lookup (the route's own mtu metric or a
learned path-MTU exception, else the outgoing link's MTU; loopback has
65536), cached per destination with a bound and an age limit, and looked up
again when a send fails with EMSGSIZE.

Reassembly at the client, ``net.ipv4.ipfrag_max_dist`` (default 64). Linux
counts, per source address (an inet_peer), every fragment it receives from
that source; when a fragment arrives for a half-assembled datagram and
ipfrag_max_dist or more fragments from the same source arrived since that
datagram's previous fragment, the fragments gathered so far are thrown away
(counted in ReasmFails) and the datagram never completes: the NFS client
times out and retransmits. Unfragmented packets do not count, fragments from
other sources neither. But every iod spoofs the same source, the metaserver
(whose own fragmented replies share it too), so at a client all of them
count against each other. When k iods send fragmented replies to one client
at the same time, their fragments interleave roughly round robin in the
switch's queue toward the client: about k-1 foreign fragments between two of
one reply, whatever the reply size (a reply's own fragments do not count
against it). That would let ~60 iods send to one client at once -- but
queues bunch one iod's burst behind others': a 32 KiB reply is 23 fragments
at MTU 1500, so three back-to-back replies of one iod already put 64 foreign
fragments between two of another's. The benchmarks (tools/dev/benchmarks) lose
replies this way with 2 iods and 16 READs in flight. A client that reads
from several iods at once loses
whole replies until it retransmits: raise ``net.ipv4.ipfrag_max_dist`` on
such clients (e.g. to 1024), or use larger MTUs (fewer fragments per reply).
Do not set it to 0: it is also what keeps a stale half-assembled datagram
(one fragment lost) from being completed with fragments of a later reply
that reuses its IP ID -- each iod has only 65535/N IDs (iod/ipv4.py), and a
stale datagram waits ``ipfrag_time`` (30 s); the UDP checksum would reject
such a mix, but that reply would be lost all the same. Clients otherwise need
no tuning: the default ``ipfrag_high_thresh`` (4 MiB, each fragment charged
its buffer's true size) holds dozens of 32 KiB replies in reassembly at once.
tests/test_iod_fragments.py shows the kernel's behaviour on both sides of the
limit.
"""

import collections
import concurrent.futures
import errno
import logging
import socket
import struct
import threading
import time

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from iod import ipv4

log = logging.getLogger(__name__)

LOOPBACK_MTU = 65536
SEND_TIMEOUT = 1.0          # a raw send blocks only while the socket buffer is full
SEND_BUFFER = 4 << 20


def open_raw_socket(send_buffer=SEND_BUFFER, send_timeout=SEND_TIMEOUT):
    """A raw IPv4 socket whose packets carry our own IP header (IPPROTO_RAW
    implies IP_HDRINCL). Needs root or CAP_NET_RAW; it keeps working after
    the process drops them."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    try:
        # SO_SNDBUFFORCE passes net.core.wmem_max, but only while we are root.
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_SNDBUFFORCE", 32), send_buffer)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    # A kernel-side send timeout keeps the socket in blocking mode: a Python
    # timeout would add a poll() before every send.
    sec = int(send_timeout)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                    struct.pack("@ll", sec, int((send_timeout - sec) * 1e6)))
    return sock


LOOKUP_TIMEOUT = 5.0   # seconds; a netlink answer takes microseconds


class RouteMtu:
    """MTU of the route to a destination, from netlink; thread-safe, cached
    for ``max_age`` seconds, at most ``max_entries`` destinations.

    Create it before dropping root: its netlink socket is opened (and its
    code loaded: an unprivileged user may not be able to read the Python
    installation) here, and route queries need no privilege afterwards."""

    def __init__(self, max_entries=4096, max_age=60.0, clock=time.monotonic):
        self._max_entries = max_entries
        self._max_age = max_age
        self._clock = clock
        self._cache = collections.OrderedDict()   # dst -> (mtu, looked up at)
        self._lock = threading.Lock()
        # One thread does every lookup: pyroute2 opens a netlink socket per
        # calling thread (closed only with the IPRoute), so lookups from each
        # I/O thread would end with one socket per thread, opened after
        # dropping root.
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="iod-route")
        self._ipr = self._worker.submit(IPRoute).result()
        self.get("127.0.0.1")   # loads whatever the lookups need, while we still can

    def get(self, dst):
        now = self._clock()
        with self._lock:
            hit = self._cache.get(dst)
            if hit is not None and now - hit[1] < self._max_age:
                return hit[0]
            mtu = self._lookup(dst)
            self._cache[dst] = (mtu, now)
            self._cache.move_to_end(dst)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
            return mtu

    def forget(self, dst):
        with self._lock:
            self._cache.pop(dst, None)

    def _lookup(self, dst):
        if self._ipr is None:
            raise OSError(errno.EBADF, "route lookups are closed")
        try:
            return self._worker.submit(self._lookup_in_worker, dst).result(LOOKUP_TIMEOUT)
        except concurrent.futures.TimeoutError:
            raise OSError(errno.ETIMEDOUT, f"route lookup of {dst} took over "
                                           f"{LOOKUP_TIMEOUT:g} s") from None

    def _lookup_in_worker(self, dst):
        try:
            route = self._ipr.route("get", dst=dst)[0]
            oif = route.get("RTA_OIF")
            link_mtu = self._ipr.link("get", index=oif)[0].get("IFLA_MTU")
        except NetlinkError as e:
            raise OSError(e.code, f"no route to {dst}: {e}") from None
        except (IndexError, TypeError, ValueError) as e:
            raise OSError(errno.EHOSTUNREACH, f"no usable route to {dst}: {e}") from None
        mtu = link_mtu or LOOPBACK_MTU
        metrics = route.get("RTA_METRICS")
        if metrics is not None:
            route_mtu = metrics.get("RTAX_MTU")
            if route_mtu:
                mtu = min(mtu, route_mtu)
        return mtu

    def close(self):
        with self._lock:
            if self._ipr is not None:
                self._worker.submit(self._ipr.close).result(LOOKUP_TIMEOUT)
                self._ipr = None
                self._worker.shutdown(wait=False)


class Spoofer:
    """Sends UDP datagrams with any source address. ``send`` is thread-safe
    and blocking (call it from the I/O threads)."""

    def __init__(self, ip_ids, sock=None, mtus=None, ttl=ipv4.DEFAULT_TTL):
        self.ip_ids = ip_ids
        self.sock = sock if sock is not None else open_raw_socket()
        self.mtus = mtus if mtus is not None else RouteMtu()
        self.ttl = ttl

    def send(self, src_ip, src_port, dst_ip, dst_port, payload):
        """Send ``payload`` (bytes, or a sequence of bytes-like parts to be
        concatenated) as one UDP datagram from src_ip:src_port to
        dst_ip:dst_port. Returns the number of IP packets sent; raises
        ValueError (not an IPv4 address, source 0.0.0.0) or OSError (EMSGSIZE
        for more than a datagram holds, a failed send)."""
        parts = (payload,) if isinstance(payload, (bytes, bytearray, memoryview)) else payload
        src, dst = ipv4.pack_ip(src_ip), ipv4.pack_ip(dst_ip)
        if src == bytes(4):
            # The kernel would put its own address there, after we summed
            # 0.0.0.0 into the UDP checksum: the client would drop it.
            raise ValueError("cannot spoof source 0.0.0.0")
        size = sum(len(p) for p in parts)
        if size > ipv4.MAX_UDP_PAYLOAD:
            raise OSError(errno.EMSGSIZE, f"{size} bytes do not fit a UDP datagram")
        dgram = ipv4.datagram(src, src_port, dst, dst_port, parts)
        sendto, address = self.sock.sendto, (dst_ip, 0)
        for attempt in (1, 2):
            packets = ipv4.fragments(src, dst, self.ip_ids.next(), dgram,
                                     self.mtus.get(dst_ip), self.ttl)
            try:
                for header, body in packets:
                    # Joining the 20-byte header to the fragment costs less
                    # than sendmsg's scatter-gather handling (4.7 vs 6.2 us).
                    sendto(header + body, address)
                return len(packets)
            except OSError as e:
                # The route's MTU shrank under us: look it up again, resend
                # the whole datagram under a fresh ID.
                if e.errno != errno.EMSGSIZE or attempt == 2:
                    raise
                self.mtus.forget(dst_ip)

    def close(self):
        self.mtus.close()
        self.sock.close()
