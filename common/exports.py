"""The exports table: a parser for exports(5) and the client matcher (pure).

Syntax, as nfs-utils' exportfs reads it::

    # comment
    /srv/data   host1(rw,no_root_squash) 10.0.0.0/8(ro,all_squash) *.example.org(rw) *(ro)
    "/srv/with space"  -rw,async  node?.cluster  192.168.1.0/255.255.255.0(ro)
    /srv/long   a(rw) \\
                b(rw)

- ``-opts`` after the path sets default options for the clients after it.
- A client with no ``(options)`` gets the defaults: ro, root_squash, secure, sync.
- ``host (rw)`` (note the space) is the classic mistake: exportfs reads it as
  ``host`` with defaults plus ``*(rw)``; so do we, with a warning.
- A line without clients exports to everyone (``*``), also with a warning.

Which spec applies when several match (exports(5), "Machine Name Formats"): the
first in the order single host, IP network, wildcard, netgroup, anonymous
(``*``), whatever their order on the line; among specs of the same kind, the
first on the line. Lines naming the same path are merged in file order.
"""

import dataclasses
import fnmatch
import ipaddress
import re

ANON_ID = 65534
_U32 = 0xFFFFFFFF
INVALID_ID = _U32  # (uid_t)-1: what a kernel server treats as "no identity"


class ExportsError(ValueError):
    """A syntax or semantic error; the message starts with "file:line: "."""


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    readonly: bool = True
    root_squash: bool = True
    all_squash: bool = False
    anonuid: int = ANON_ID
    anongid: int = ANON_ID
    secure: bool = True
    sync: bool = True
    wdelay: bool = True
    subtree_check: bool = False
    hide: bool = True
    crossmnt: bool = False
    fsid: "str | None" = None
    pnfs: bool = True       # NFSv4.1 pNFS layouts for this client (no_pnfs: none)

    def squash(self, uid, gid, gids):
        """(uid, gid, gids) as the export lets this client act: the rules of
        Linux's nfsd_setuser(). all_squash maps everyone to the anonymous ids
        with no supplementary groups; root_squash maps uid 0 and gid 0 (also in
        the supplementary list) independently; an invalid id (-1) always
        becomes the anonymous one."""
        if self.all_squash:
            uid, gid, gids = self.anonuid, self.anongid, ()
        elif self.root_squash:
            if uid == 0:
                uid = self.anonuid
            if gid == 0:
                gid = self.anongid
            gids = tuple(self.anongid if g == 0 else g for g in gids)
        else:
            gids = tuple(gids)
        if uid == INVALID_ID:
            uid = self.anonuid
        if gid == INVALID_ID:
            gid = self.anongid
        return uid, gid, gids

    def anonymous(self):
        """The identity of an AUTH_NONE caller."""
        return self.anonuid, self.anongid, ()


# Kinds of client spec, in exports(5)'s priority order.
HOST, NETWORK, WILDCARD, NETGROUP, ANONYMOUS = range(5)
_KIND_NAMES = ("host", "network", "wildcard", "netgroup", "anonymous")


def _client_ip(client_ip):
    addr = ipaddress.ip_address(client_ip.split("%", 1)[0])
    if addr.version == 6 and addr.ipv4_mapped is not None:
        # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; the
        # admin wrote a.b.c.d.
        addr = addr.ipv4_mapped
    return addr


@dataclasses.dataclass(frozen=True)
class ClientSpec:
    text: str
    kind: int
    options: ExportOptions
    value: object = None  # an ip_address, ip_network, or lower-cased name/pattern

    def matches(self, addr, names):
        """``addr`` an ipaddress object, ``names`` the client's lower-cased names."""
        if self.kind == ANONYMOUS:
            return True
        if self.kind == NETWORK:
            return addr.version == self.value.version and addr in self.value
        if self.kind == HOST:
            if isinstance(self.value, str):
                return self.value in names
            return addr == self.value
        if self.kind == WILDCARD:
            return any(fnmatch.fnmatchcase(n, self.value) for n in names)
        return False

    @property
    def needs_hostname(self):
        return (self.kind == WILDCARD or
                (self.kind == HOST and isinstance(self.value, str)))


@dataclasses.dataclass
class Export:
    path: str
    clients: list
    filename: str = "<exports>"
    lineno: int = 0
    warnings: list = dataclasses.field(default_factory=list)

    def match(self, client_ip, hostname=None):
        """The options for this client, or None if it is not allowed. ``hostname``
        is the client's (verified) name, or several (canonical name and aliases),
        or None if unknown: then only address, network and ``*`` specs can match."""
        addr = _client_ip(client_ip)
        if hostname is None:
            names = ()
        elif isinstance(hostname, str):
            names = (hostname.lower().rstrip("."),)
        else:
            names = tuple(n.lower().rstrip(".") for n in hostname)
        best = None
        for spec in self.clients:
            if (best is None or spec.kind < best.kind) and spec.matches(addr, names):
                best = spec
                if best.kind == HOST:
                    break
        return best.options if best is not None else None

    @property
    def needs_hostname(self):
        return any(c.needs_hostname for c in self.clients)


# --- Parsing --------------------------------------------------------------

_FLAGS = {
    "ro": ("readonly", True), "rw": ("readonly", False),
    "root_squash": ("root_squash", True), "no_root_squash": ("root_squash", False),
    "all_squash": ("all_squash", True), "no_all_squash": ("all_squash", False),
    "secure": ("secure", True), "insecure": ("secure", False),
    "sync": ("sync", True), "async": ("sync", False),
    "wdelay": ("wdelay", True), "no_wdelay": ("wdelay", False),
    "subtree_check": ("subtree_check", True), "no_subtree_check": ("subtree_check", False),
    "hide": ("hide", True), "nohide": ("hide", False),
    "crossmnt": ("crossmnt", True), "nocrossmnt": ("crossmnt", False),
    "pnfs": ("pnfs", True), "no_pnfs": ("pnfs", False),
}
# Accepted for compatibility with existing files; they concern NLM, ACLs,
# NFSv4 or the kernel's export cache, none of which apply here.
_IGNORED = {"secure_locks", "insecure_locks", "auth_nlm", "no_auth_nlm", "acl", "no_acl",
            "mp", "mountpoint", "nordirplus", "rdirplus", "security_label",
            "no_security_label", "no_pubexp", "pubexp"}
_IGNORED_VALUED = {"mountpoint", "mp", "refer", "replicas", "uuid", "fsloc"}
_SUPPORTED_SEC = {"sys", "none"}
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?$")
_WILDCARD_RE = re.compile(r"^[A-Za-z0-9_.*?\[\]!^-]+$")


def _error(filename, lineno, msg):
    return ExportsError(f"{filename}:{lineno}: {msg}")


def _parse_id(value, what, err):
    # ASCII digits only: int() also takes "1_000", " 7" and other scripts' digits.
    if not re.fullmatch(r"-?[0-9]+", value):
        raise err(f"{what}={value!r}: not a number")
    # Leading zeros are no part of the value; past 10 digits it is out of range
    # anyway (and int() refuses 4300 digits, leading zeros included).
    digits = value.lstrip("-").lstrip("0") or "0"
    n = int(digits, 10) if len(digits) <= 10 else _U32 + 1
    if value.startswith("-"):
        n = -n
    if not -(1 << 31) <= n <= _U32:
        raise err(f"{what}={value}: out of range")
    return n & _U32  # anonuid=-2, as old SunOS files say, is 4294967294


def _apply_options(base, text, err):
    changes = {}
    for opt in text.split(","):
        opt = opt.strip()
        if not opt:
            continue
        key, eq, value = opt.partition("=")
        if not eq and key in _FLAGS:
            field, v = _FLAGS[key]
            changes[field] = v
        elif eq and key in ("anonuid", "anongid"):
            changes[key] = _parse_id(value, key, err)
        elif eq and key == "fsid":
            if not (value == "root" or re.fullmatch(r"[0-9A-Fa-f:-]+", value)):
                raise err(f"fsid={value!r}: expected a number, 'root' or a UUID")
            changes["fsid"] = value
        elif eq and key == "sec":
            flavors = value.split(":")
            bad = [f for f in flavors if f not in _SUPPORTED_SEC]
            if bad:
                raise err(f"sec={value}: only 'sys' (AUTH_SYS) and 'none' are supported, "
                          f"not {', '.join(bad)}")
        elif not eq and key in _IGNORED:
            pass
        elif eq and key in _IGNORED_VALUED:
            pass
        elif eq and key in _FLAGS:
            raise err(f"option {key!r} takes no value")
        elif not eq and key in ("anonuid", "anongid", "fsid", "sec"):
            raise err(f"option {key!r} needs a value ({key}=...)")
        else:
            raise err(f"unknown export option {opt!r}")
    return dataclasses.replace(base, **changes) if changes else base


def _parse_client(text, options, err, warnings=None):
    if text == "*":
        return ClientSpec(text, ANONYMOUS, options)
    if text.startswith("@"):
        raise err(f"{text}: NIS netgroups are not supported; list the hosts or a network")
    if text.startswith("gss/"):
        raise err(f"{text}: Kerberos (gss/...) clients are not supported; only AUTH_SYS is")
    if text.startswith("[") and text.endswith("]"):
        text_ip = text[1:-1]
    else:
        text_ip = text
    if "/" in text_ip:
        try:
            net = ipaddress.ip_network(text_ip, strict=False)
        except ValueError:
            raise err(f"{text}: not an IP network (address/prefix or address/netmask)") from None
        return ClientSpec(text, NETWORK, options, net)
    try:
        return ClientSpec(text, HOST, options, _client_ip(text_ip))
    except ValueError:
        pass
    if any(c in text for c in "*?["):
        if not _WILDCARD_RE.match(text):
            raise err(f"{text}: not a valid wildcard host pattern")
        if warnings is not None and all(c in "0123456789.*?" for c in text):
            warnings.append(f"{text}: wildcards match host names, not addresses; "
                            f"use an address/prefix network instead")
        return ClientSpec(text, WILDCARD, options, text.lower())
    if not _HOSTNAME_RE.match(text):
        raise err(f"{text}: not a valid host name, address, network or pattern")
    return ClientSpec(text, HOST, options, text.lower().rstrip("."))


def _unescape_path(raw, err):
    # exportfs: double quotes group, and \ooo (three octal digits) stands for
    # any byte, e.g. \040 for a space. The path is built as bytes and decoded
    # the way the file was (UTF-8, surrogateescape), so an escaped byte and the
    # same byte written as is give the same path.
    out = bytearray()
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == '"':
            i += 1
            continue
        if c == "\\":
            octal = raw[i + 1:i + 4]
            if len(octal) == 3 and all(d in "01234567" for d in octal) and octal <= "377":
                out.append(int(octal, 8))
                i += 4
                continue
            raise err(f"bad escape in path {raw!r} (use \\ooo, three octal digits up to 377)")
        try:
            out += c.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise err(f"path {raw!r} is not text from a file") from None
        i += 1
    if 0 in out:
        raise err(f"path {raw!r} has a NUL byte")
    return out.decode("utf-8", "surrogateescape")


def normalize_path(path):
    """Collapse repeated and trailing slashes; "." components vanish. Returns
    None for a path that is not absolute or has ".." components."""
    if not path.startswith("/"):
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None
    return "/" + "/".join(parts)


# What exportfs splits on (C isspace() in the C locale): not str.isspace(),
# which would also split a path at a no-break space or U+2028.
_SPACE = " \t\r\v\f"


def _tokens(line, err):
    """Split a logical line on whitespace outside double quotes."""
    tokens, cur, quoted, in_token = [], [], False, False
    for c in line:
        if c == '"':
            quoted = not quoted
            cur.append(c)
            in_token = True
        elif c in _SPACE and not quoted:
            if in_token:
                tokens.append("".join(cur))
                cur, in_token = [], False
        else:
            cur.append(c)
            in_token = True
    if quoted:
        raise err("unterminated double quote")
    if in_token:
        tokens.append("".join(cur))
    return tokens


def _logical_lines(text):
    """(first physical line number, text) with comments stripped and
    backslash-newline continuations joined."""
    pending, start = "", None
    lines = text.split("\n")  # not splitlines(): "\x1c" or "\x85" may be in a path
    if lines[-1] == "":
        lines.pop()
    for lineno, raw in enumerate(lines, 1):
        line = _strip_comment(raw)
        if start is None:
            start = lineno
        stripped = line.rstrip(_SPACE)
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        pending += line
        if pending.strip(_SPACE):
            yield start, pending
        pending, start = "", None
    if pending.strip(_SPACE):
        yield start, pending


def _strip_comment(line):
    quoted = False
    for i, c in enumerate(line):
        if c == '"':
            quoted = not quoted
        elif c == "#" and not quoted:
            return line[:i]
    return line


def parse_exports(text, filename="<exports>"):
    """Parse an exports(5) file into Exports (one per distinct path, in order
    of first appearance). Raises ExportsError("file:line: message")."""
    by_path = {}
    for lineno, line in _logical_lines(text):
        def err(msg, _lineno=lineno):
            return _error(filename, _lineno, msg)

        tokens = _tokens(line, err)
        path = _unescape_path(tokens[0], err)
        norm = normalize_path(path)
        if norm is None:
            raise err(f"export path {path!r} must be absolute and without '..'")
        export = by_path.get(norm)
        if export is None:
            export = by_path[norm] = Export(norm, [], filename, lineno)
        defaults = ExportOptions()
        added = 0
        for tok in tokens[1:]:
            if tok.startswith("-"):
                defaults = _apply_options(defaults, tok[1:], err)
                continue
            host, paren, rest = tok.partition("(")
            if paren:
                if not rest.endswith(")") or ")" in rest[:-1] or "(" in rest:
                    raise err(f"{tok}: unbalanced parentheses "
                              f"(no spaces are allowed inside the option list)")
                opts = _apply_options(defaults, rest[:-1], err)
            else:
                if ")" in tok:
                    raise err(f"{tok}: unbalanced parentheses")
                opts = defaults
            if not host:
                export.warnings.append(
                    f"{filename}:{lineno}: {tok} has no host name, so it applies to everyone (*); "
                    f"remove the space before '(' if it was meant for the preceding host")
                host = "*"
            notes = []
            spec = _parse_client(host, opts, err, notes)
            export.warnings.extend(f"{filename}:{lineno}: {n}" for n in notes)
            if any(c.text == spec.text for c in export.clients):
                raise err(f"{spec.text}: listed twice for {norm}")
            export.clients.append(spec)
            added += 1
        if not added:
            export.warnings.append(
                f"{filename}:{lineno}: no client given for {norm}; exporting to everyone (*)")
            if any(c.text == "*" for c in export.clients):
                raise err(f"*: listed twice for {norm}")
            export.clients.append(ClientSpec("*", ANONYMOUS, defaults))
    return list(by_path.values())


__all__ = ["ExportsError", "ExportOptions", "ClientSpec", "Export", "parse_exports",
           "normalize_path", "ANON_ID", "HOST", "NETWORK", "WILDCARD", "NETGROUP", "ANONYMOUS"]
