"""nfspd: the metaserver process — NFS v2/v3 and v4.1/4.2, MOUNT and the portmapper.

Wiring only: configuration in, sockets bound, services composed, signals
handled. What each piece does lives in its own module.
"""

import collections
import errno
import functools
import logging
import os
import secrets
import signal
import socket
import time
import weakref

import trio

from common import keyfile, striping
from common import mount as mount_proto
from common.iodsconf import load_entries
from common.metafile import DEFAULT_STRIPE_UNIT
from common.runtime import iodstores, schedstat
from common.runtime.iodstores import IodStores
from common.runtime.keyreload import KeyFile
from common.runtime.metrics import MetricsServer
from nfspd import (
    admin,
    layouts,
    metrics,
    mountd,
    nfs2proc,
    nfs3proc,
    nfs4proc,
    portmapper,
    steering,
)
from nfspd.datapath import LocalDataPath
from nfspd.dispatch import Dispatcher, Program
from nfspd.drc import DuplicateRequestCache
from nfspd.exports import ExportRegistry
from nfspd.fs.attrcache import Changes, SharedChanges
from nfspd.fs.commit import GroupCommit
from nfspd.fs.handles import export_id_for_path
from nfspd.fs.metafs import MetaFS
from nfspd.iodpath import IodDataPath
from nfspd.nfs3proc import MAX_IO_TCP
from nfspd.nfs4service import Nfs4Service
from nfspd.nfsservice import NfsService
from nfspd.pnfs import Pnfs
from nfspd.purgequeue import open_purge_queue, spawn_unlinkd
from nfspd.transport import (Limits, answer_udp_call, bind_tcp, bind_udp, serve_tcp, serve_udp,
                             udp_socket)
from nfspd.workers import Pool

log = logging.getLogger("nfspd")

NFS_PROGRAM = 100003
NFS_VERSIONS = (2, 3)
NFS_TCP_VERSIONS = (2, 3, 4)  # NFSv4 is TCP only (RFC 8881 2.9.1)
MOUNT_VERSIONS = (1, 2, 3)
# For new files. A pNFS client cuts its I/O at stripe boundaries (Linux's
# files layout driver), so 1 MiB lets it send 1 MiB calls; Lustre's default too.
STRIPE_UNIT = 1 << 20
LOOP_WINDOW = 10  # seconds of the event loop's time `nfsp status` gives shares of


class Config:
    def __init__(self, exports, state_dir, data_dir=None, bind="0.0.0.0", port=2049,
                 mount_port=20048, portmap="auto", portmap_port=111, limits=None,
                 iods=None, key=None, stripe_unit=STRIPE_UNIT, iod_options=None,
                 unlinkd="spawn", metrics=None, v4_lease=90, v4_grace=None, v4_domain=None,
                 pnfs=True, workers=0, log_level="info"):
        self.exports = exports
        self.state_dir = state_dir
        self.data_dir = data_dir or os.path.join(state_dir, "data")
        self.bind = bind
        self.port = port
        self.mount_port = mount_port
        self.portmap = portmap
        self.portmap_port = portmap_port
        self.limits = limits or Limits()
        self.iods = iods          # iods.conf path; None: the local data store
        self.key = key            # cluster key file, required with iods
        self.stripe_unit = stripe_unit
        self.iod_options = iod_options or {}
        self.unlinkd = unlinkd    # spawn | external | off (only with iods)
        self.metrics = metrics    # (host, port) of the Prometheus endpoint, or None
        self.v4_lease = v4_lease  # NFSv4 lease time, seconds
        self.v4_grace = v4_lease if v4_grace is None else v4_grace
        self.v4_domain = v4_domain  # NFSv4 owner names user@domain; None: numeric ids
        self.pnfs = pnfs          # hand out pNFS files layouts (when there are iods)
        self.workers = workers    # processes answering NFSv3 READDIR(PLUS) (nfspd/workers.py)
        self.log_level = log_level


def load_or_create_key(path, nbytes=32):
    """The secret that authenticates file handles. It must outlive restarts (or
    every client's handles go stale), so it is created once, mode 0600."""
    try:
        with open(path, "rb") as f:
            key = f.read()
        if len(key) >= 16:
            return key
        raise ValueError(f"{path}: key too short ({len(key)} bytes)")
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    return key


def registrations(config):
    """What the portmapper should say about us: (prog, vers, proto, port)."""
    regs = []
    for proto in (socket.IPPROTO_UDP, socket.IPPROTO_TCP):
        versions = NFS_TCP_VERSIONS if proto == socket.IPPROTO_TCP else NFS_VERSIONS
        regs += [(NFS_PROGRAM, v, proto, config.port) for v in versions]
        regs += [(mount_proto.MOUNT_PROGRAM, v, proto, config.mount_port) for v in MOUNT_VERSIONS]
    return regs


class Metaserver:
    """The assembled services; run() serves until cancelled."""

    def __init__(self, config):
        self.config = config
        os.makedirs(config.state_dir, exist_ok=True)
        os.makedirs(config.data_dir, exist_ok=True)
        self.handle_key = load_or_create_key(os.path.join(config.state_dir, "handle.key"))
        self.iod_stores = None    # common/runtime/iodstores.IodStores, with iods
        self._data_servers = {}   # iods.conf's ds= by iod address (nfspd/pnfs.py)
        self.datapath = self._datapath()
        self.purges = None
        self.unlinkd = None
        self.purge = self._purge_sink()
        self._filesystems = weakref.WeakSet()  # every MetaFS made, for status()
        self.group_commit = GroupCommit()  # shared by the exports: one flush for all
        # Shared too: exports may overlap, and a change through one is one
        # through the other (nfspd/fs/attrcache.py); and with the workers,
        # which make changes and move atimes too.
        self.changes_fd = None
        if config.workers:
            self.changes_fd = SharedChanges.memory(config.workers + 1)
            self.changes = SharedChanges(self.changes_fd, 0, config.workers + 1)
        else:
            self.changes = Changes()
        self.registry = ExportRegistry(config.exports, self._make_fs,
                                       rmtab_path=os.path.join(config.state_dir, "rmtab"))
        self.registry.load()
        self.drc = DuplicateRequestCache()
        self.pnfs = None
        if config.pnfs and isinstance(self.datapath, IodDataPath):
            # The iods are the data servers: without them, no layouts.
            self.pnfs = Pnfs(self.datapath, self._data_servers)
        self.v4 = Nfs4Service(self.registry, config.state_dir, lease_time=config.v4_lease,
                              grace_time=config.v4_grace, max_io=MAX_IO_TCP,
                              domain=config.v4_domain, pnfs=self.pnfs)
        nfs = Program(NFS_PROGRAM, "nfs", {2: nfs2proc.PROCEDURES, 3: nfs3proc.PROCEDURES,
                                           4: nfs4proc.PROCEDURES},
                      NfsService(self.registry, self.datapath, v4=self.v4), tcp_only=(4,))
        self.nfs = Dispatcher([nfs], self.drc)
        self.mount = Dispatcher([mountd.program(self.registry)], self.drc)
        self.workers = None
        if config.workers:
            self.workers = Pool(config.workers, os.path.abspath(config.exports),
                                os.path.abspath(config.state_dir),
                                os.path.abspath(config.data_dir), config.log_level,
                                stripe_unit=getattr(self.datapath, "stripe_unit",
                                                    DEFAULT_STRIPE_UNIT),
                                layout_gen=getattr(self.datapath, "layout_gen", 0),
                                changes_fd=self.changes_fd)
        self.started = time.time()
        # (time.monotonic(), on_cpu_ns, waiting_ns) of the event loop's
        # thread, a sample a second: `nfsp status` gives its last seconds.
        self.loop_samples = collections.deque(maxlen=LOOP_WINDOW + 1)

    def _datapath(self):
        c = self.config
        local = LocalDataPath(c.data_dir)
        if c.iods is None:
            return local
        if c.key is None:
            raise ValueError("--iods needs --key (the cluster key file shared with the iods)")
        if not striping.valid_stripe_unit(c.stripe_unit):
            raise ValueError(f"--stripe-unit {c.stripe_unit}: must be a multiple of 4096 "
                             f"between 4096 and {1 << 26}")
        entries = load_entries(c.iods)
        iods = [e.address for e in entries]
        self._data_servers = {e.address: (e.ds_host, e.ds_port) for e in entries
                              if e.ds_host is not None}
        keys = keyfile.load(c.key)
        found, change = layouts.open_layouts(c.state_dir, iods, c.iods)
        if change:
            log.info("%s", change)
        # Files created before iods were configured (layout generation 0) keep
        # their data in the local store.
        # Each iod's data store, checked against the one it served before
        # (a disk that failed to mount would serve its stripes as zeros).
        self.iod_stores = IodStores(os.path.join(c.state_dir, iodstores.FILE_NAME),
                                    names=[f"{h}:{p}" for h, p in found.all_iods()])
        return IodDataPath(found, keys, c.stripe_unit, local=local, bind=c.bind,
                           stores=self.iod_stores, **c.iod_options)

    def _purge_sink(self):
        """What MetaFS calls when a file's last link goes: None (the data path's
        own purge) without iods or with --unlinkd off (the iods are then told
        directly, best effort: a crash loses what was pending, scrub finds it);
        otherwise the durable journal unlinkd drains (paper 5.5.2)."""
        c = self.config
        if c.iods is None or c.unlinkd == "off":
            return None
        self.purges = open_purge_queue(c.state_dir)
        local = self.datapath.local

        def purge(ino, seed):
            self.purges(ino, seed)
            if local is not None:
                # Files created before iods were configured live in the local
                # store; (ino, seed) names at most one of the two, and purging
                # an absent datafile is a no-op.
                local.purge(ino, seed)

        def append_batch(records):  # the group commit's: one journal flush
            self.purges.append_batch(records)
            if local is not None:
                for ino, seed in records:
                    local.purge(ino, seed)

        def append_unsynced(ino, seed):  # an async export's: not flushed
            self.purges.append_unsynced(ino, seed)
            if local is not None:
                local.purge(ino, seed)
        purge.append_batch = append_batch
        purge.append_unsynced = append_unsynced
        purge.wake = self.purges.wake
        purge.appended_on = self.purges.appended_on
        return purge

    def _make_fs(self, path):
        fs = MetaFS(path, export_id_for_path(path), self.handle_key, self.datapath,
                    purge=self.purge, commit=self.group_commit, changes=self.changes)
        self._filesystems.add(fs)
        if self.purges is not None:
            self.purges.export_on(fs.dev, fs.dir_fsync_commits_all)
        if not fs.parent_fsync_suffices:
            log.warning("%s: its file system journals no metadata (ext2, or ext4 without a "
                        "journal): a sync SYMLINK or MKNOD syncs the whole file system, and "
                        "creates slow down after mass removals (README: troubleshooting)", path)
        return fs

    async def run(self, task_status=trio.TASK_STATUS_IGNORED):
        c = self.config
        lim = c.limits
        # Port 0 (tests) means any free port: TCP takes the port UDP got, and
        # the portmapper is told the real numbers.
        steered = None
        if self.workers is not None:
            # NFSv3 namespace changes over UDP go straight to the workers.
            try:
                nfs_udp, *steered = steering.open_group(udp_socket, c.bind, c.port, c.workers)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOPROTOOPT, errno.EPERM):
                    raise
                log.warning("NFSv3 namespace changes stay with nfspd: this kernel steers no "
                            "UDP calls to the workers (%s)", e)
        if steered is None:
            nfs_udp = await bind_udp(c.bind, c.port)
        c.port = nfs_udp.getsockname()[1]
        nfs_tcp = await bind_tcp(c.bind, c.port)
        mnt_udp = await bind_udp(c.bind, c.mount_port)
        c.mount_port = mnt_udp.getsockname()[1]
        mnt_tcp = await bind_tcp(c.bind, c.mount_port)
        async with trio.open_nursery() as nursery:
            # First, so that `nfsp status` answers by the time clients are served.
            await nursery.start(admin.AdminServer(admin.socket_path(c.state_dir),
                                                  self._admin_commands()).run)
            if c.metrics is not None:
                await nursery.start(MetricsServer(*c.metrics, self.status, metrics.render).run)
            if isinstance(self.datapath, IodDataPath):
                self.datapath.set_reply_socket(nfs_udp)
                await nursery.start(self.datapath.run)
                log.info("data on %d iods (layout generation %d, stripe unit %d)",
                         len(self.datapath.links), self.datapath.layout_gen, c.stripe_unit)
                if self.pnfs is not None:
                    # Layouts handed out before this start are not in its
                    # state (no fence would cover them): the iods refuse them,
                    # and their holders fetch new ones.
                    nursery.start_soon(self.pnfs.revoke_clients, [], True)
                if self.purges is not None and c.unlinkd == "spawn":
                    self.unlinkd = await nursery.start(
                        spawn_unlinkd(self.purges.directory, c.iods, c.key,
                                      stores_path=self.iod_stores.path).run)
            if self.workers is not None:
                self.workers.answer_udp_on(
                    nfs_udp, steered, functools.partial(answer_udp_call, nfs_udp, self.nfs,
                                                        limits=lim),
                    lambda sock: serve_udp(sock, self.nfs, lim))
                await nursery.start(self.workers.run)
            await nursery.start(serve_udp, nfs_udp, self.nfs, lim, self.workers)
            await nursery.start(serve_tcp, nfs_tcp, self.nfs, lim, self.workers)
            await nursery.start(serve_udp, mnt_udp, self.mount, lim)
            await nursery.start(serve_tcp, mnt_tcp, self.mount, lim)
            unregister = await self._portmapper(nursery)
            nursery.start_soon(self._signals, nursery.cancel_scope)
            nursery.start_soon(self._report_counters)
            nursery.start_soon(self._sample_loop)
            nursery.start_soon(self._lease_timer)
            log.info("serving NFS v2/v3 on %s:%d (udp, tcp) and v4.1/4.2 (tcp), MOUNT v1-3 on "
                     "port %d; exports: %s",
                     c.bind, c.port, c.mount_port,
                     ", ".join(self.registry.export_paths()) or "none")
            task_status.started(self)
            try:
                await trio.sleep_forever()
            finally:
                if unregister is not None:
                    with trio.CancelScope(shield=True), trio.move_on_after(3):
                        await unregister()
                if self.purges is not None:
                    self.purges.close()

    def _admin_commands(self):
        return {"status": lambda req: self.status(),
                "accept-iod-store": lambda req: admin.accept_iod_store(self, req)}

    def status(self):
        """What `nfsp status` shows (JSON-serialisable; see tools/status.py)."""
        return admin.status_of(self)

    async def _portmapper(self, nursery):
        """Register with the system's rpcbind where one runs, else serve our own
        portmapper on port 111. Returns the coroutine function that undoes the
        registration, or None."""
        c = self.config
        if c.portmap == "off":
            return None
        regs = registrations(c)
        if c.portmap in ("auto", "system") and await portmapper.rpcbind_running(timeout=1.0):
            ok = await portmapper.register_with_rpcbind(regs)
            if ok:
                log.info("registered NFS and MOUNT with the system rpcbind")
                return lambda: portmapper.unregister_with_rpcbind(regs)
            log.warning("system rpcbind refused our registrations")
            return None
        if c.portmap == "system":
            raise SystemExit("--portmap system: no rpcbind answers on 127.0.0.1:111")
        table = portmapper.PortTable(portmapper_port=c.portmap_port)
        for prog, vers, proto, port in regs:
            table.add(prog, vers, proto, port, owner="nfspd")
        dispatcher = Dispatcher([portmapper.program(table)])
        udp = await bind_udp(c.bind, c.portmap_port)
        tcp = await bind_tcp(c.bind, c.portmap_port)
        await nursery.start(serve_udp, udp, dispatcher, c.limits)
        await nursery.start(serve_tcp, tcp, dispatcher, c.limits)
        log.info("no system rpcbind: serving an embedded portmapper on port %d", c.portmap_port)
        return None

    async def _lease_timer(self):
        """Clients that stopped renewing their lease lose their state (their
        locks and opens go to whoever waits for them)."""
        period = max(1.0, self.config.v4_lease / 4)
        while True:
            await trio.sleep(period)
            ips, everything = self.v4.expire()
            if self.pnfs is not None and (ips or everything):
                # What they wrote through layouts must not land any more.
                await self.pnfs.revoke_clients(ips, everything)

    async def _signals(self, cancel_scope):
        # trio re-raises the signals still pending when the receiver closes: a
        # SIGHUP racing SIGTERM must not turn a clean stop into a kill.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    if self.registry.reload():
                        log.info("exports reloaded: %s", ", ".join(self.registry.export_paths()))
                        if self.workers is not None:
                            self.workers.reload()
                        if self.pnfs is not None:
                            # Who may use what changed: no layout handed out
                            # under the old rules is honoured any more.
                            await self.pnfs.revoke_clients([], everything=True)
                    self._reload_keys()
                else:
                    log.info("%s: shutting down", signal.Signals(signum).name)
                    cancel_scope.cancel()
                    return

    def _reload_keys(self):
        """Key rotation without downtime: the iods accept the old and the new
        key during a switch, so nfspd and its unlinkd re-read theirs here."""
        if not isinstance(self.datapath, IodDataPath):
            return
        if not KeyFile(self.config.key).reload_into(self.datapath.keys, log):
            return
        if self.unlinkd is not None:
            self.unlinkd.reload()

    async def _sample_loop(self):
        """How this thread, the event loop's, which answers every call,
        spends its time (common/runtime/schedstat.py), once a second."""
        while True:
            got = schedstat.read()
            if got is None:
                return  # (a kernel that does not keep them)
            self.loop_samples.append((time.monotonic(), *got))
            await trio.sleep(1.0)

    async def _report_counters(self, period=60.0):
        """Malformed and refused messages are counted; say so in the log once a
        period rather than once a message (a flood must not flood the log)."""
        last = {}
        keys = ("dropped", "garbage_args", "auth_errors", "rpc_mismatch", "system_err")
        while True:
            await trio.sleep(period)
            now = {}
            for name, d in (("nfs", self.nfs), ("mount", self.mount)):
                for k in keys:
                    now[f"{name}.{k}"] = getattr(d.counters, k)
            data = {f"data.{k}": v for k, v in getattr(self.datapath, "counters", {}).items()}
            changed = {k: v - last.get(k, 0) for k, v in now.items() if v != last.get(k, 0)}
            if changed:
                log.info("bad or refused messages in the last %ds: %s", period,
                         ", ".join(f"{k}={v}" for k, v in sorted(changed.items())))
            moved = {k: v - last.get(k, 0) for k, v in data.items() if v != last.get(k, 0)}
            if moved:
                log.info("data path in the last %ds: %s", period,
                         ", ".join(f"{k[5:]}={v}" for k, v in sorted(moved.items())))
            last = {**now, **data}
