"""pNFS data-server file handles: the capability the metaserver mints for a
client (in a files layout's nfl_fh_list) and an iod checks before it serves a
byte of the file. Pure: no I/O, no clocks (the mint time is an argument).

A handle is 64 bytes, big-endian::

    version u8 | key_id u8 | rights u8 | reserved u8 (0) | layout_gen u32 |
    ino u64 | seed u64 | minted u64 | client 16 bytes | mac 16 bytes

- ``ino``, ``seed`` name the datafile (common/runtime/datastore.py), and
  ``layout_gen`` the file's layout generation (common/metafile.py): the
  handle is of one file, and of the data that file had when it was minted.
- ``minted``: when the metaserver minted it, in milliseconds of the iod's
  wall clock (the metaserver already stamps its frames in each iod's time,
  common/iodproto.py). An iod refuses handles minted before it started or
  before a revocation that covers them (iod/dsrevoked.py): they are STALE.
- ``client``: the address the metaserver saw the LAYOUTGET come from, once it
  had applied the exports to it (IPv4 as ::ffff:a.b.c.d). The iod serves the
  handle only on a connection from that address: a sniffed handle is no use
  to another host, and the export rules stay the metaserver's alone.
- ``rights``: RIGHT_WRITE (a RW layout on a rw export: WRITE and COMMIT
  allowed; without it only READ) and RIGHT_SECURE (the export is `secure`:
  only connections from a port below 1024).
- ``mac``: HMAC-SHA256 under the cluster key ``key_id`` (common/keyfile.py:
  the key the metaserver and the iods already share), over a domain label and
  the 48 bytes before it, cut to 16 bytes. Without the key a handle cannot be
  made, and changing any bit of one (another file, another client, more
  rights) breaks it.

verify() raises DsHandleError(NFS4ERR_BADHANDLE) for anything that is not a
handle this cluster minted (wrong length, version, reserved bits, unknown key
id, bad MAC).
"""

import dataclasses
import hashlib
import hmac
import ipaddress
import struct

from common.nfs4 import nfsstat4

VERSION = 1
RIGHT_WRITE = 0x01
RIGHT_SECURE = 0x02
_KNOWN_RIGHTS = RIGHT_WRITE | RIGHT_SECURE

_BODY = struct.Struct(">BBBBIQQQ16s")
MAC_SIZE = 16
SIZE = _BODY.size + MAC_SIZE      # 64, well under NFS4_FHSIZE
_DOMAIN = b"NFSP pNFS data-server file handle\0"
_U64 = 1 << 64


class DsHandleError(ValueError):
    def __init__(self, status, why):
        super().__init__(why)
        self.status = nfsstat4(status)


@dataclasses.dataclass(frozen=True)
class DsHandle:
    ino: int
    seed: int
    layout_gen: int
    minted: int                  # ms, the iod's wall clock
    client: ipaddress.IPv6Address
    rights: int

    @property
    def may_write(self):
        return bool(self.rights & RIGHT_WRITE)

    @property
    def secure(self):
        return bool(self.rights & RIGHT_SECURE)

    def client_matches(self, ip):
        """Whether a connection from ``ip`` (a string) is the handle's client."""
        try:
            return _as_v6(ip) == self.client
        except ValueError:
            return False


def _as_v6(ip):
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        return ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + addr.packed)
    return addr


def _mac(key, body):
    return hmac.new(key, _DOMAIN + body, hashlib.sha256).digest()[:MAC_SIZE]


def mint(keys, *, ino, seed, layout_gen, minted, client, write, secure):
    """The handle of datafile (ino, seed) for ``client`` (an address string),
    signed with the cluster's current key (common/iodproto.Keys)."""
    for name, value, bound in (("ino", ino, _U64), ("seed", seed, _U64),
                               ("minted", minted, _U64), ("layout_gen", layout_gen, 1 << 32)):
        if not 0 <= value < bound:
            raise ValueError(f"{name} out of range: {value}")
    rights = (RIGHT_WRITE if write else 0) | (RIGHT_SECURE if secure else 0)
    key_id, key = keys.signing
    body = _BODY.pack(VERSION, key_id, rights, 0, layout_gen, ino, seed, minted,
                      _as_v6(client).packed)
    return body + _mac(key, body)


def verify(keys, fh):
    """The DsHandle of ``fh`` (bytes from the wire), or DsHandleError."""
    fh = bytes(fh)
    if len(fh) != SIZE:
        raise DsHandleError(nfsstat4.NFS4ERR_BADHANDLE, f"{len(fh)} bytes, not {SIZE}")
    body, mac = fh[:_BODY.size], fh[_BODY.size:]
    version, key_id, rights, reserved, layout_gen, ino, seed, minted, client = \
        _BODY.unpack(body)
    key = keys.by_id.get(key_id)
    if version != VERSION or reserved or rights & ~_KNOWN_RIGHTS or key is None:
        raise DsHandleError(nfsstat4.NFS4ERR_BADHANDLE, "not a data-server handle of ours")
    if not hmac.compare_digest(mac, _mac(key, body)):
        raise DsHandleError(nfsstat4.NFS4ERR_BADHANDLE, "bad MAC")
    return DsHandle(ino, seed, layout_gen, minted, ipaddress.IPv6Address(client), rights)
