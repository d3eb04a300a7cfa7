"""IPv4 and UDP headers for the iod's spoofed replies, built by hand (sans-IO).

The iod sends its READ/WRITE replies from a raw socket (IP_HDRINCL) so that
they leave with the metaserver's address as source (paper 5.6). With
IP_HDRINCL the kernel neither fragments nor computes the UDP checksum, so this
module does both: ``datagram`` builds the UDP datagram with its checksum (always
computed: over a fragmented datagram it is the only guard against a client
reassembling pieces of two different replies) and ``fragments`` cuts it into IP
packets that fit the path's MTU.

Checksum: the 16-bit one's complement sum of RFC 1071 equals the buffer read
as one big integer modulo 0xFFFF (2**16 is 1 modulo 0xFFFF, so every 16-bit
word counts with weight 1). CPython's int.from_bytes is a linear C loop; the
remainder by a one-digit divisor is too, but with a division per 30-bit
digit, so the number is first folded in halves with shifts and adds (still
the same value modulo 0xFFFF). Measured (CPU time, python3 -m tools.dev.iod_sendbench
and a comparison script, shared AMD EPYC VM): 8 KiB in 15 us, 32 KiB in 49 us;
int.from_bytes with a plain remainder 22/88 us; summing a memoryview cast to
64-bit words 68 us for 8 KiB, array('H') 112 us, a Python loop over 16-bit
words 900 us.

IP identification: fragments are reassembled by (source, destination,
protocol, ID); every iod spoofs the same source (the metaserver) toward the
same client, so each iod draws IDs from its own slice of the 16-bit space
(IpIdSlot, ``--ip-id-slot I/N``). ID 0 is never used: on a raw socket the
kernel replaces a zero ID with one of its own, per fragment.
"""

import functools
import ipaddress
import itertools
import struct

IP_HEADER = struct.Struct("!BBHHHBBH4s4s")
UDP_HEADER = struct.Struct("!HHHH")
IPPROTO_UDP = 17
MAX_IP_PACKET = 65535
MAX_UDP_PAYLOAD = MAX_IP_PACKET - IP_HEADER.size - UDP_HEADER.size   # 65507
IP_MF = 0x2000
DEFAULT_TTL = 64


# Folding unit in bits: a multiple of 16 (so 2**k is 1 modulo 0xFFFF) and of
# CPython's 30-bit int digits (so the shifts move whole digits).
_FOLD_BITS = 240


@functools.lru_cache(maxsize=128)
def _low_mask(bits):
    return (1 << bits) - 1


def ones_sum(data):
    """The one's complement sum of ``data`` as 16-bit big-endian words, in
    0..0xFFFF (0 only for all-zero data: adding non-zero words with end-around
    carry never gives +0). An odd length is padded with a zero byte, as RFC
    768 says."""
    # Read little-endian, the sum is the byte-swapped one (RFC 1071 2.(B)),
    # and a zero pad byte at the end changes nothing.
    value = int.from_bytes(data, "little")
    if not value:
        return 0
    # hi * 2**k + lo is hi + lo modulo 0xFFFF: halving the number with cheap
    # shifts and adds first leaves the slow remainder loop (a division per
    # digit) a few digits; 40% faster from 8 KiB up.
    bits = len(data) * 8
    while bits > 16 * _FOLD_BITS:
        k = (bits // 2 + _FOLD_BITS - 1) // _FOLD_BITS * _FOLD_BITS
        value = (value >> k) + (value & _low_mask(k))
        bits = k + 1
    return ((value % 0xFFFF) << 8) % 0xFFFF or 0xFFFF


def ones_add(a, b):
    """One's complement addition of two 16-bit sums."""
    s = a + b
    return (s & 0xFFFF) + (s >> 16)


def checksum(data):
    """The Internet checksum of ``data`` (RFC 1071), as it would be stored
    in a header whose checksum field is zero inside ``data``."""
    return 0xFFFF - ones_sum(data)


@functools.lru_cache(maxsize=4096)
def pack_ip(ip):
    """'10.0.0.1' -> 4 bytes; ValueError for anything but a dotted quad
    (cached: the same few client and metaserver addresses recur)."""
    try:
        return ipaddress.IPv4Address(ip).packed
    except ValueError:
        raise ValueError(f"not an IPv4 address: {ip!r:.64}") from None


def datagram(src, src_port, dst, dst_port, parts):
    """The UDP datagram (header + the concatenated ``parts``) from src to dst
    (4-byte addresses), with its checksum. Returns a bytearray."""
    length = UDP_HEADER.size + sum(len(p) for p in parts)
    if length > MAX_UDP_PAYLOAD + UDP_HEADER.size:
        raise ValueError(f"UDP payload of {length - UDP_HEADER.size} bytes exceeds "
                         f"{MAX_UDP_PAYLOAD}")
    buf = bytearray(length)
    UDP_HEADER.pack_into(buf, 0, src_port, dst_port, length, 0)
    pos = UDP_HEADER.size
    for p in parts:
        buf[pos:pos + len(p)] = p
        pos += len(p)
    pseudo = src + dst + struct.pack("!BBH", 0, IPPROTO_UDP, length)
    # A computed 0 is sent as 0xFFFF (RFC 768: 0 means "no checksum").
    struct.pack_into("!H", buf, 6, 0xFFFF - ones_add(ones_sum(pseudo), ones_sum(buf)) or 0xFFFF)
    return buf


def fragment_payload_size(mtu):
    """Bytes of the datagram carried by each fragment but the last: what
    fits after the IP header, a multiple of 8 (fragment offsets count
    8-byte units)."""
    return (min(mtu, MAX_IP_PACKET) - IP_HEADER.size) // 8 * 8


def fragments(src, dst, ident, dgram, mtu, ttl=DEFAULT_TTL, proto=IPPROTO_UDP):
    """The IP packets carrying ``dgram`` over a path of ``mtu`` bytes, as
    [(IP header bytes, memoryview of the part of dgram it carries)].
    One packet if it fits. DF is never set: ICMP "fragmentation needed" would
    go to the spoofed source, not to us, so path MTU discovery cannot work."""
    if mtu < 68:
        raise ValueError(f"MTU {mtu} is below IPv4's minimum of 68")
    if len(dgram) > MAX_IP_PACKET - IP_HEADER.size:
        raise ValueError(f"datagram of {len(dgram)} bytes does not fit an IPv4 packet")
    if not 0 <= ident <= 0xFFFF:
        raise ValueError(f"IP identification {ident} out of range")
    view = memoryview(dgram)
    step = fragment_payload_size(mtu)
    # Only the length and fragment words change between fragments, so the
    # header checksum is the fixed part's sum plus those two words.
    base = ones_sum(IP_HEADER.pack(0x45, 0, 0, ident, 0, ttl, proto, 0, src, dst))
    out = []
    offset, size = 0, len(dgram)
    while True:
        chunk = min(step, size - offset)
        more = offset + chunk < size
        total_length = IP_HEADER.size + chunk
        frag = (IP_MF if more else 0) | (offset >> 3)
        csum = 0xFFFF - ones_add(ones_add(base, total_length), frag)
        out.append((IP_HEADER.pack(0x45, 0, total_length, ident, frag, ttl, proto, csum,
                                   src, dst), view[offset:offset + chunk]))
        offset += chunk
        if not more:
            return out


class IpIdSlot:
    """This iod's share of the IPv4 identification space: slot ``index`` of
    ``count`` equal slices of 1..65535. next() is safe from many threads
    (itertools.cycle's next is atomic under the GIL)."""

    def __init__(self, index=0, count=1):
        if not (type(index) is int and type(count) is int and 0 <= index < count <= 4096):
            raise ValueError(f"IP ID slot {index}/{count}: need 0 <= I < N <= 4096")
        width = 65536 // count
        self.index, self.count = index, count
        self.low = max(1, index * width)
        self.high = 65536 if index == count - 1 else (index + 1) * width   # exclusive
        self._ids = itertools.cycle(range(self.low, self.high))

    @classmethod
    def parse(cls, text):
        """'I/N' (e.g. '2/8': the third of eight slices)."""
        i, sep, n = text.partition("/")
        try:
            if not sep:
                raise ValueError
            return cls(int(i), int(n))
        except ValueError:
            raise ValueError(f"IP ID slot {text!r:.32}: expected I/N with 0 <= I < N <= 4096") \
                from None

    def __contains__(self, ident):
        return self.low <= ident < self.high

    def __len__(self):
        return self.high - self.low

    def next(self):
        return next(self._ids)

    def __repr__(self):
        return f"IpIdSlot({self.index}/{self.count}: {self.low}..{self.high - 1})"
