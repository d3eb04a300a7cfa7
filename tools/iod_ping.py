"""The `iod_ping` command: is each iod up, and do spoofed packets get through?
(paper 5.6)

PINGs go over UDP (the path the metaserver's READ and WRITE take) from one
unconnected socket, to every iod at once; each answer is matched by its id.
With --spoof-from ADDR every iod is also asked to send a second PONG from its
raw socket with ADDR as source -- the way it sends READ replies with the
metaserver's address. That PONG arrives from ADDR:PORT at our port, which is
why the socket is unconnected (a connected UDP socket would filter it out):
it counts as arrived only if it verifies under the cluster key and really
carries ADDR as source.

Replay protection (common/iodproto.py): each iod gets two PINGs, one stamped
with our clock and one without a stamp (which the iod answers through its rate
limiter). The stamped one is refused by an iod whose clock is more than its
--max-clock-skew away from ours: the other one's PONG then says by how much.
The spoofed PONG is asked for in a second round, stamped in the iod's time
(the offset its first PONG showed), and only iods whose --pong-allow covers
this host send it. With --unauthenticated (no key) the PINGs and PONGs are
unsigned: the iod tells only whether it is alive. An iod listening below
1024 (--secure-port) is pinged from a port below 1024.
"""

import os
import socket
import sys
import time

import click

from common import iodproto, keyfile
from common.iodproto import IodProtoError, Message, Op
from common.runtime.resvport import bind_reserved
from tools import embedded

DEFAULT_SPOOF_PORT = 2049   # what spoofed NFS replies carry: firewalls see that port


def _split_hostport(text, default_port):
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{text}: port must be in 1..65535")
    return host, int(port)


def _human_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024


def _human_duration(seconds):
    seconds = int(seconds)
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{d}d{h:02d}h" if d else f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Target:
    def __init__(self, name, address):
        self.name = name
        self.address = address   # resolved (ip, port)
        self.ping_id = self.spoof_id = self.plain_id = None
        self.sent = None
        self.pong = None
        self.plain_pong = None       # the answer to the unstamped PING
        self.offset = None           # the iod's clock minus ours
        self.rtt = None
        self.spoofed_from = None     # the source the spoofed PONG came from
        self.spoof_refused = None    # the iod's error when it would not spoof
        self.error = None


def ping(targets, keys, timeout, spoof_from=None):
    """Send the PINGs and collect the answers (mutates targets). ``keys``
    None: unsigned PINGs (--unauthenticated)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        reserved = False
        if any(t.address and t.address[1] < 1024 for t in targets):
            try:
                bind_reserved(sock, "0.0.0.0")
                reserved = True
            except OSError:
                pass   # not root: iods with --secure-port will not answer
        if not reserved:
            sock.bind(("0.0.0.0", 0))
        _ping(sock, targets, keys, timeout, spoof_from)
    finally:
        sock.close()


def _ping(sock, targets, keys, timeout, spoof_from):
    sequencer = iodproto.Sequencer()
    by_id = {}
    next_id = int.from_bytes(os.urandom(4), "big") << 16

    def send(t, frame):
        try:
            sock.sendto(frame, t.address)
        except OSError as e:
            t.error = f"cannot send: {e.strerror}"

    live = [t for t in targets if not t.error]
    for t in live:
        t.ping_id, t.plain_id, next_id = next_id, next_id + 1, next_id + 2
        by_id[t.ping_id] = (t, "ping")
        by_id[t.plain_id] = (t, "plain")
        t.sent = time.monotonic()
        if keys is not None:
            send(t, iodproto.encode(
                Message(Op.PING, t.ping_id, sequencer.stamp(time.time())), keys))
        send(t, iodproto.plain_ping(t.plain_id, keys))
    deadline = time.monotonic() + timeout
    while True:
        if spoof_from is not None:
            # Second round, per iod as soon as its clock is known.
            for t in live:
                if t.offset is not None and t.spoof_id is None and not t.error:
                    t.spoof_id, next_id = next_id, next_id + 1
                    by_id[t.spoof_id] = (t, "spoof")
                    sequencer.offset = t.offset
                    send(t, iodproto.encode(Message(
                        Op.PING, t.spoof_id, sequencer.stamp(time.time()), spoof_from=spoof_from),
                        keys))
        if not any(_waiting(t, spoof_from) for t in targets):
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock.settimeout(remaining)
        try:
            data, source = sock.recvfrom(65535)
        except TimeoutError:
            break
        except OSError:
            continue   # e.g. an ICMP port unreachable from one iod
        now = time.monotonic()
        try:
            msg = iodproto.decode(data, keys, unsigned_ok=keys is None)
        except IodProtoError:
            continue
        target, kind = by_id.get(msg.id, (None, None))
        if target is None:
            continue
        if msg.op == Op.REPLY and msg.status:
            why = f"error {msg.status}: {msg.message}"
            if kind == "spoof":
                target.spoof_refused = why
            else:
                target.error = why
        elif msg.op != Op.PONG:
            continue
        elif kind == "spoof":
            target.spoofed_from = source[:2]
        else:
            if msg.time is not None and target.offset is None:
                target.offset = msg.time - (time.time() - (now - target.sent) / 2)
            if kind == "ping" or keys is None:
                target.pong, target.rtt = msg, now - target.sent
            else:
                target.plain_pong = msg


def _waiting(t, spoof_from):
    if t.error:
        return False
    if t.pong is None:
        return True
    return (spoof_from is not None and t.spoofed_from is None and t.spoof_refused is None)


def _offset(offset):
    if offset is None:
        return "unknown relative to"
    return f"{abs(offset):.1f} s {'ahead of' if offset > 0 else 'behind'}"


def resolve(name, host, port):
    t = Target(name, None)
    try:
        info = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
        t.address = info[0][4][:2]
    except (socket.gaierror, UnicodeError) as e:
        t.error = f"cannot resolve {host}: {e}"
    return t


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("iods", nargs=-1, metavar="[HOST[:PORT]]...")
@click.option("--iods", "iods_conf", type=click.Path(dir_okay=False),
              help="Ping every iod listed in this iods.conf (as well as any given as arguments). "
                   f"[default, when no iod is given: {embedded.SYSTEM.iods_conf}, or DIR/iods.conf "
                   "of the cluster --dir picks]")
@embedded.dir_option
@click.option("--key", "key_path", type=click.Path(dir_okay=False),
              help="Cluster key file: PINGs are signed with it and answers verified. "
                   f"[default: {embedded.SYSTEM.key}, or DIR/cluster.key of the cluster --dir "
                   "picks]")
@click.option("--spoof-from", "spoof_from", metavar="ADDR[:PORT]",
              help="Also ask each iod for a PONG sent from its raw socket with ADDR (port "
                   f"{DEFAULT_SPOOF_PORT} unless given) as source, e.g. the metaserver's "
                   "address, and report whether it arrived: whether this network lets the "
                   "iods' spoofed replies through.")
@click.option("--timeout", default=2.0, show_default=True, type=click.FloatRange(0.01, 600),
              help="Seconds to wait for all answers.")
@click.option("--unauthenticated", is_flag=True,
              help="No key: send unsigned PINGs, which iods answer (rate-limited) with an "
                   "unsigned PONG: only whether they are alive can be trusted.")
def main(iods, iods_conf, up_dir, key_path, spoof_from, timeout, unauthenticated):
    """PING each iod: print its round-trip time, version, uptime, free space
    and how far its clock is from ours. Exit status 0 if every iod answered
    (and every spoofed PONG arrived, with --spoof-from), 1 otherwise, 2 for a
    usage error."""
    named = iods or iods_conf
    if not named or (key_path is None and not unauthenticated):
        cluster, note = embedded.choose(up_dir)
        if not named and os.path.exists(cluster.iods_conf):
            iods_conf = cluster.iods_conf
        key_path = key_path or cluster.key
        if note and (iods_conf == cluster.iods_conf or key_path == cluster.key):
            click.echo(f"iod_ping: {note}", err=True)
    entries = []
    if iods_conf:
        from common.iodsconf import IodsConfError, load_iods
        try:
            entries += load_iods(iods_conf)
        except IodsConfError as e:
            raise click.UsageError(str(e)) from None
    entries += [_split_hostport(text, iodproto.DEFAULT_PORT) for text in iods]
    if not entries:
        raise click.UsageError("name at least one iod (HOST[:PORT]) or --iods FILE, or the "
                               "cluster of `nfsp up DIR` with --dir DIR")
    keys = None
    if unauthenticated:
        if spoof_from is not None:
            raise click.UsageError("--spoof-from needs the key: iods spoof only for "
                                   "authenticated PINGs")
    else:
        try:
            keys = keyfile.load(key_path)
        except keyfile.KeyFileError as e:
            raise click.UsageError(str(e)) from None
    spoof = None
    if spoof_from is not None:
        spoof = _split_hostport(spoof_from, DEFAULT_SPOOF_PORT)
        try:
            socket.inet_aton(spoof[0])
            if spoof[0].count(".") != 3:
                raise OSError
        except OSError:
            raise click.BadParameter(f"{spoof_from}: ADDR must be an IPv4 address",
                                     param_hint="--spoof-from") from None
    targets = [resolve(f"{host}:{port}", host, port) for host, port in entries]
    ping(targets, keys, timeout, spoof)
    ok = True
    width = max(len(t.name) for t in targets)
    for t in targets:
        line = f"{t.name:<{width}}  "
        if t.error:
            line += t.error
            ok = False
        elif t.pong is None and t.plain_pong is not None:
            line += (f"answers only PINGs without a stamp: its clock is {_offset(t.offset)} "
                     f"ours, more than its --max-clock-skew? (run NTP)")
            ok = False
        elif t.pong is None:
            line += f"no answer within {timeout:g} s"
            ok = False
        else:
            p = t.pong
            line += (f"rtt {t.rtt * 1000:.2f} ms  version {p.version}  up "
                     f"{_human_duration(p.uptime)}  free {_human_bytes(p.free)} of "
                     f"{_human_bytes(p.total)}  verifier {p.verifier.hex()}")
            if t.offset is not None and abs(t.offset) >= 1:
                line += f"  clock {_offset(t.offset)} ours"
            if keys is None:
                line += "  (unauthenticated)"
        if spoof is not None and not t.error:
            wanted = f"{spoof[0]}:{spoof[1]}"
            if t.spoof_refused:
                line += f"\n{'':<{width}}  spoofed PONG from {wanted}: refused ({t.spoof_refused})"
                ok = False
            elif t.spoofed_from == tuple(spoof):
                line += f"\n{'':<{width}}  spoofed PONG from {wanted}: arrived"
            elif t.spoofed_from is not None:
                line += (f"\n{'':<{width}}  spoofed PONG from {wanted}: arrived from "
                         f"{t.spoofed_from[0]}:{t.spoofed_from[1]} instead (rewritten on the "
                         f"way?)")
                ok = False
            else:
                line += (f"\n{'':<{width}}  spoofed PONG from {wanted}: NOT arrived (filtered "
                         f"by the network or by this host's rp_filter?)")
                ok = False
        click.echo(line)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
