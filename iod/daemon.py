"""The I/O daemon (paper 5.6): stores stripes of file data and answers for
the metaserver. In three parts: the protocol engine (iod/engine.py: what a
frame gets as answer, and whom the iod trusts), the serving shell
(iod/server.py: sockets, I/O threads, trio, signals) and, here, its
configuration and the privileged start that hands the shell what it needs.

Privileges: everything that needs root happens before serving -- the raw
socket, binding (so a port below 1024 is possible), the key file, and the data
directory, which is given to the --user (chown at first start, of the store's
own layout only) and opened by descriptor (common/runtime/datastore.py) so the
directories above it may stay private to root. Keeping the store root-owned
is no option: creating datafiles in it is checked against the user doing it,
whatever descriptor the directory was opened with. Then the process becomes
--user (groups, gid, uid), keeping the open descriptors.

The data store's identity (common/runtime/datastore.py): the iod starts only
on a data directory carrying its marker (or one it may initialise: missing,
or --init); the engine checks while serving that it stays the one opened.
"""

import ipaddress
import logging
import os
import pwd
import socket

import trio

from common import iodproto
from common.runtime import pktinfo
from common.runtime.datastore import StoreError, open_store
from common.runtime.keyreload import KeyFile
from common.runtime.resvport import PRIVILEGED_PORTS
from iod import ipv4
from iod.server import Server
from iod.spoof import RouteMtu, Spoofer, open_raw_socket

log = logging.getLogger("iod")

DEFAULT_PONG_ALLOW = ("127.0.0.0/8",)


class Config:
    """The iod's settings (iod/cli.py makes them from its options)."""

    def __init__(self, data_dir, keys, listen="0.0.0.0", port=iodproto.DEFAULT_PORT,
                 user="nobody", ip_id_slot="0/1", threads=8, queue_depth=1024,
                 queue_bytes=64 << 20, tcp_inflight=64, max_connections=256,
                 stats_interval=60.0, send_timeout=30.0, key_path=None,
                 max_clock_skew=iodproto.MAX_CLOCK_SKEW, pong_allow=DEFAULT_PONG_ALLOW,
                 ping_rate=10.0, ping_burst=20, secure_port=False, metrics=None, init=False,
                 ds_port=None, ds_listen=None):
        self.data_dir = data_dir
        self.init = init                  # --init: may initialise an existing directory
        self.keys = keys
        self.listen = listen
        self.port = port
        self.user = user
        self.ip_id_slot = (ipv4.IpIdSlot.parse(ip_id_slot) if isinstance(ip_id_slot, str)
                           else ip_id_slot)
        self.threads = threads
        self.queue_depth = queue_depth
        self.queue_bytes = queue_bytes
        self.tcp_inflight = tcp_inflight
        self.max_connections = max_connections
        self.stats_interval = stats_interval
        self.send_timeout = send_timeout
        self.key_path = key_path          # re-read on SIGHUP
        self.max_clock_skew = max_clock_skew
        self.pong_allow = [ipaddress.ip_network(n) if isinstance(n, str) else n
                           for n in pong_allow]
        self.ping_rate = ping_rate
        self.ping_burst = ping_burst
        self.secure_port = secure_port
        self.metrics = metrics            # (host, port) or None
        self.ds_port = ds_port            # the pNFS data server's TCP port, or None: off
        self.ds_listen = ds_listen or listen  # and its address


# -- privileged start-up ----------------------------------------------------------

class StartupError(Exception):
    pass


def resolve_user(user):
    """--user: a name or a numeric uid -> (name, uid, gid)."""
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError):
        raise StartupError(f"no such user: {user}") from None
    return pw.pw_name, pw.pw_uid, pw.pw_gid


def bind_sockets(listen, port, buffer_bytes=4 << 20):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        for s in (udp, tcp):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        pktinfo.enable(udp)
        for opt, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):  # *BUFFORCE
            try:
                udp.setsockopt(socket.SOL_SOCKET, force, buffer_bytes)
            except OSError:
                udp.setsockopt(socket.SOL_SOCKET, opt, buffer_bytes)
        udp.bind((listen, port))
        tcp.bind((listen, port))
        tcp.listen(128)
    except OSError as e:
        udp.close()
        tcp.close()
        raise StartupError(f"cannot listen on {listen}:{port}: {e}") from None
    return udp, tcp


def drop_privileges(uid, gid):
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise StartupError("still able to regain root after dropping privileges")


def start(config):
    """The privileged part of starting an iod: returns a Server ready to serve,
    running as config.user. Raises StartupError with a message for the admin."""
    os.umask(0o077)
    name, uid, gid = resolve_user(config.user)
    if os.geteuid() != 0 and os.geteuid() != uid:
        raise StartupError(f"must be started as root to run as {name} (it opens a raw socket, "
                           f"then drops root)")
    try:
        raw = open_raw_socket()
    except PermissionError:
        raise StartupError("cannot open a raw socket: the iod needs root (or CAP_NET_RAW) at "
                           "start to spoof replies") from None
    if config.secure_port and config.port >= PRIVILEGED_PORTS:
        raw.close()
        raise StartupError(f"--secure-port needs --port below 1024 (not {config.port}): the "
                           f"point is that only root can listen there")
    udp, tcp = bind_sockets(config.listen, config.port)
    extra = []
    try:
        key_file = None
        if config.key_path is not None:
            try:
                key_file = KeyFile(config.key_path, keep_open=True)
                extra.append(key_file)
            except OSError as e:
                raise StartupError(f"{config.key_path}: {e.strerror}") from None
        ds_sock = None
        if config.ds_port is not None:
            ds_sock = bind_ds(config.ds_listen, config.ds_port)
            extra.append(ds_sock)
        metrics_sock = None
        if config.metrics is not None:
            metrics_sock = bind_metrics(*config.metrics)
            extra.append(metrics_sock)
        try:
            mtus = RouteMtu()
        except OSError as e:
            raise StartupError(f"cannot look up routes over netlink: {e}") from None
        extra.append(mtus)
        try:
            store = open_store(config.data_dir, init=config.init)
        except StoreError as e:
            raise StartupError(str(e)) from None
        except OSError as e:
            raise StartupError(f"data directory {config.data_dir}: {e}") from None
        extra.append(store)
        if store.initialised == "new":
            log.info("initialised %s as a new, empty data store: store id %s",
                     store.directory, store.store_id.hex())
        elif store.initialised == "adopted":
            log.info("adopted the datafiles in %s (no store marker yet) as data store %s",
                     store.directory, store.store_id.hex())
        try:
            # Only at the first start as this user (the walk costs one stat
            # per datafile): afterwards everything in it is created by us.
            if uid != 0 and os.stat(store.directory).st_uid != uid:
                changed = store.chown(uid, gid)
                if changed:
                    log.info("gave %d entries of %s to %s", changed, config.data_dir, name)
        except OSError as e:
            raise StartupError(f"data directory {config.data_dir}: {e}") from None
        if os.geteuid() == 0 and uid != 0:
            drop_privileges(uid, gid)
        elif uid == 0:
            log.warning("running as root (--user %s): consider an unprivileged user", name)
    except BaseException:
        for s in (raw, udp, tcp):
            s.close()
        for x in extra:
            x.close()
        raise
    spoofer = Spoofer(config.ip_id_slot, sock=raw, mtus=mtus)
    return Server(config, store, spoofer, udp, tcp, key_file=key_file, metrics_sock=metrics_sock,
                  ds_sock=ds_sock)


def bind_ds(host, port):
    """The pNFS data server's listening socket (--ds-port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise StartupError(f"pNFS data server: cannot listen on {host}:{port}: {e.strerror} "
                           f"(--ds-port PORT to choose another, --ds-port off for none)") from None
    return sock


def bind_metrics(host, port):
    """The --metrics listening socket (bound while root: any port works)."""
    try:
        sock = socket.create_server((host, port), family=socket.AF_INET, backlog=16)
    except OSError as e:
        raise StartupError(f"--metrics {host}:{port}: cannot listen: {e.strerror}") from None
    return sock


def run(config):
    server = start(config)
    try:
        trio.run(server.serve)
    finally:
        server.spoofer.close()
        server.store.close()
        server.udp_sock.close()
        server.tcp_sock.close()
        if server.metrics_sock is not None:
            server.metrics_sock.close()
        if server.ds_sock is not None:
            server.ds_sock.close()
        if server.key_file is not None:
            server.key_file.close()
