"""IP_PKTINFO: which local address a UDP datagram arrived at, and sending a
reply from that address.

A host with several addresses must answer a UDP call from the address it was
sent to (a client drops a reply from any other), and an iod sends the NFS
reply with the metaserver's address as source: both set the source with an
IP_PKTINFO control message on sendmsg.
"""

import socket
import struct

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)   # Linux's value; Python < 3.12 lacks the name
_in_pktinfo = struct.Struct("=i4s4s")            # ipi_ifindex, ipi_spec_dst, ipi_addr
ANCDATA_SIZE = socket.CMSG_SPACE(_in_pktinfo.size)
"""What recvmsg needs as ancbufsize to receive the control message."""


def enable(sock):
    """Ask the kernel to report each datagram's destination address."""
    sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)


def destination(ancdata):
    """The address a datagram was sent to, from recvmsg's ancillary data (or None)."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _in_pktinfo.size:
            return socket.inet_ntoa(_in_pktinfo.unpack_from(data)[2])
    return None


def source(ip):
    """Ancillary data for sendmsg that sends from ``ip`` (an IPv4 address string)."""
    return [(socket.IPPROTO_IP, IP_PKTINFO, _in_pktinfo.pack(0, socket.inet_aton(ip), bytes(4)))]


_reply_from = {}


def reply_from(local_ip):
    """The ancillary data that makes a UDP reply leave from ``local_ip``, the
    address the call came to (none for a wildcard): a few distinct values
    per server, so built once each (the table is bounded all the same)."""
    anc = _reply_from.get(local_ip)
    if anc is None:
        anc = [] if local_ip in ("0.0.0.0", "") else source(local_ip)
        if len(_reply_from) > 1024:
            _reply_from.clear()
        _reply_from[local_ip] = anc
    return anc
