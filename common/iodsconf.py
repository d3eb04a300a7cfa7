"""iods.conf: the I/O daemons of the cluster, one per line (paper 5.8).

    # comment
    node1               port 2050 (iodproto.DEFAULT_PORT)
    node2:2051
    10.0.0.3:2050       # a comment after an entry
    10.0.0.4 ds=192.0.2.4:2049
    127.0.0.1:2051 ds=0.0.0.0

An entry may name where NFSv4.1 clients reach the iod's pNFS data server
(iod --ds-port), ``ds=ADDRESS[:PORT]``: the metaserver hands it out in
GETDEVICEINFO. Without it: the iod's own address and the port its PONGs
report (iod --ds-port, by default its --port + 1000). ADDRESS is an IPv4
address, as a layout carries it (RFC 5665 universal addresses hold no
names); 0.0.0.0 means the address the client reached the metaserver at, for
iods sharing the metaserver's host while listening only on loopback for the
metaserver (`nfsp up --bind 0.0.0.0`). Files written before the field
existed stay valid: it is optional.

The order matters: stripe i of a file lives on the ((seed + i) mod n)-th iod
of the file's layout generation (common/striping.py), so the metaserver only
ever lets this list grow at its end (nfspd/layouts.py). Hosts are IPv4
addresses or DNS names: spoofed replies are IPv4 (iod/), so IPv6 is refused
here rather than half-working. Every error names file:line. Pure: no I/O but
load_entries' read.
"""

import collections
import ipaddress
import re

from common.iodproto import DEFAULT_PORT

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class IodsConfError(ValueError):
    """An iods.conf that cannot be used; the message names file:line."""


class IodEntry(collections.namedtuple("IodEntry", "host port ds_host ds_port")):
    """One line: the iod at (host, port); its data server at ds_host (None:
    the iod's address; WILDCARD: the metaserver's, as the client reached it)
    and ds_port (None: the port the iod reports)."""
    __slots__ = ()

    @property
    def address(self):
        return (self.host, self.port)


WILDCARD = "0.0.0.0"
# An iod serves its pNFS data server on its port + this unless told otherwise
# (iod --ds-port): 2050 -> 3050, and iods sharing a host, on ports of their
# own, get data-server ports of their own too.
DS_PORT_OFFSET = 1000


def default_ds_port(port):
    """The data-server port of an iod on ``port``, or None past 65535."""
    ds = port + DS_PORT_OFFSET
    return ds if ds <= 65535 else None


def _host(text, where):
    if ":" in text or text.startswith("["):
        raise IodsConfError(f"{where}: {text!r}: IPv6 is not supported (spoofed replies are IPv4)")
    if re.fullmatch(r"[0-9.]+", text):
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            raise IodsConfError(f"{where}: {text!r} is not an IPv4 address") from None
        return text
    if len(text) > 253 or not all(_LABEL.match(label) for label in text.rstrip(".").split(".")):
        raise IodsConfError(f"{where}: {text!r} is not a host name or IPv4 address")
    return text.rstrip(".").lower()


def _port(text, where):
    # ASCII digits only: str.isdigit() also takes "²" and other scripts' digits.
    if not re.fullmatch(r"[0-9]{1,5}", text) or not 0 < int(text) < 65536:
        raise IodsConfError(f"{where}: port {text!r} is not in 1..65535")
    return int(text)


def _ds(text, where):
    """ds=ADDRESS[:PORT] -> (address, port or None)."""
    address, sep, port_text = text.partition(":")
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise IodsConfError(f"{where}: ds={text!r:.80}: the data server's address must be an "
                            f"IPv4 address (a pNFS layout carries no host names)") from None
    return address, (_port(port_text, where) if sep else None)


def parse_entries(text, filename="<iods.conf>"):
    """[IodEntry, ...] in file order. Raises IodsConfError."""
    out = []
    seen = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        where = f"{filename}:{lineno}"
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        line, *options = line.split()
        ds_host = ds_port = None
        for option in options:
            key, eq, value = option.partition("=")
            if key != "ds" or not eq:
                raise IodsConfError(f"{where}: expected one host[:port] per line, then "
                                    f"optionally ds=ADDRESS[:PORT], got {option!r:.80}")
            if ds_host is not None:
                raise IodsConfError(f"{where}: ds= given twice")
            ds_host, ds_port = _ds(value, where)
        host, sep, port_text = line.rpartition(":") if line.count(":") == 1 else (line, "", "")
        if not sep:
            host, port = line, DEFAULT_PORT
        else:
            port = _port(port_text, where)
        if not host:
            raise IodsConfError(f"{where}: missing host before ':{port_text}'")
        host = _host(host, where)
        key = (host, port)
        if key in seen:
            raise IodsConfError(f"{where}: {host}:{port} is already listed on line {seen[key]}")
        seen[key] = lineno
        out.append(IodEntry(host, port, ds_host, ds_port))
    return out


def parse_iods(text, filename="<iods.conf>"):
    """[(host, port), ...] in file order (the iods, without their data
    servers). Raises IodsConfError."""
    return [e.address for e in parse_entries(text, filename)]


def load_entries(path):
    """Read and parse an iods.conf; an empty list is an error (no data could be stored)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise IodsConfError(f"{path}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise IodsConfError(f"{path}: {e.strerror}") from None
    entries = parse_entries(text, path)
    if not entries:
        raise IodsConfError(f"{path}: no iod listed")
    return entries


def load_iods(path):
    """load_entries' (host, port) pairs."""
    return [e.address for e in load_entries(path)]


def format_iod(host, port, ds_host=None, ds_port=None):
    """An iods.conf line (parse_entries reads it back)."""
    if ds_host is None:
        return f"{host}:{port}"
    return f"{host}:{port} ds={ds_host}" + ("" if ds_port is None else f":{ds_port}")
