"""iods.conf: the I/O daemons of the cluster, one per line (paper 5.8).

    # comment
    node1               port 2050 (iodproto.DEFAULT_PORT)
    node2:2051
    10.0.0.3:2050       # a comment after an entry

The order matters: stripe i of a file lives on the ((seed + i) mod n)-th iod
of the file's layout generation (common/striping.py), so the metaserver only
ever lets this list grow at its end (nfspd/layouts.py). Hosts are IPv4
addresses or DNS names: spoofed replies are IPv4 (iod/), so IPv6 is refused
here rather than half-working. Every error names file:line. Pure: no I/O but
load_iods' read.
"""

import ipaddress
import re

from common.iodproto import DEFAULT_PORT

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class IodsConfError(ValueError):
    """An iods.conf that cannot be used; the message names file:line."""


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


def parse_iods(text, filename="<iods.conf>"):
    """[(host, port), ...] in file order. Raises IodsConfError."""
    out = []
    seen = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        where = f"{filename}:{lineno}"
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if len(line.split()) != 1:
            raise IodsConfError(f"{where}: expected one host[:port] per line, got {line!r:.80}")
        host, sep, port_text = line.rpartition(":") if line.count(":") == 1 else (line, "", "")
        if not sep:
            host, port = line, DEFAULT_PORT
        else:
            # ASCII digits only: str.isdigit() also takes "²" and other scripts' digits.
            if not re.fullmatch(r"[0-9]{1,5}", port_text) or not 0 < int(port_text) < 65536:
                raise IodsConfError(f"{where}: port {port_text!r} is not in 1..65535")
            port = int(port_text)
        if not host:
            raise IodsConfError(f"{where}: missing host before ':{port_text}'")
        host = _host(host, where)
        key = (host, port)
        if key in seen:
            raise IodsConfError(f"{where}: {host}:{port} is already listed on line {seen[key]}")
        seen[key] = lineno
        out.append(key)
    return out


def load_iods(path):
    """Read and parse an iods.conf; an empty list is an error (no data could be stored)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise IodsConfError(f"{path}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise IodsConfError(f"{path}: {e.strerror}") from None
    iods = parse_iods(text, path)
    if not iods:
        raise IodsConfError(f"{path}: no iod listed")
    return iods


def format_iod(host, port):
    return f"{host}:{port}"
