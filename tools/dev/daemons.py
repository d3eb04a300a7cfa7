"""The project's daemons as real processes inside a namespace: each started,
waited for with a bound (failing at once, with its log, if it dies), stopped.

    Nfspd(ns, workdir).start()          nfspd serving workdir/export
    Iod(ns, workdir, key_path).start()  an iod listening on 127.0.0.1:port
    NfspUp(ns, directory, log).start()  `nfsp up DIRECTORY`, the embedded cluster
"""

import os
import subprocess

from common import iodproto, keyfile
from common.iodproto import Op
from common.runtime.datastore import DataStore
from tools.dev import REPO, daemon_python
from tools.dev.iodclient import IodClient
from tools.dev.netns import stop, wait_until
from tools.rpcclient import RpcClient, getport

NFS_PROGRAM = 100003
MOUNT_PROGRAM = 100005


class DaemonProcess:
    """Subclasses give ``name``, ``argv()`` and ``answers()`` (True once the
    daemon serves), and set ``ns`` and ``log_path``."""

    name = "daemon"
    proc = None
    cwd = None

    def argv(self):
        raise NotImplementedError

    def answers(self):
        raise NotImplementedError

    def environment(self):
        """The daemon imports the project from this checkout."""
        return dict(os.environ, PYTHONPATH=REPO)

    def start(self, timeout=20):
        self.launch()
        return self.wait_ready(timeout)

    def launch(self):
        """Start the process, not waiting for it (several may start at once)."""
        self.log = open(self.log_path, "ab")
        self.proc = self.ns.popen(self.argv(), stdout=self.log, stderr=subprocess.STDOUT,
                                  env=self.environment(), cwd=self.cwd)

    def wait_ready(self, timeout=20):
        def died():
            if self.proc.poll() is not None:
                return f"{self.name} exited with {self.proc.returncode}:\n{self.log_text()}"
        wait_until(self.answers, timeout, what=f"{self.name} answering", abort=died)
        return self

    @property
    def pid(self):
        """The daemon's own pid. nsenter without --fork execs the daemon, so
        once it has, the popen'd process is the daemon (and its children are
        the daemon's own: nfspd's unlinkd, which is not the daemon)."""
        with open(f"/proc/{self.proc.pid}/comm") as f:
            if f.read().strip() != "nsenter":
                return self.proc.pid
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            children = f.read().split()
        return int(children[0]) if children else self.proc.pid

    def stop(self, timeout=10):
        """The exit status after SIGTERM (SIGKILL past ``timeout``)."""
        if self.proc is not None:
            rc = stop(self.proc, timeout)
            self.proc = None
            self.log.close()
            return rc

    def restart(self):
        self.stop()
        return self.start()

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")


class Nfspd(DaemonProcess):
    """An nfspd process serving ``export`` (a directory) inside namespace ``ns``.

    ``clients`` is the exports(5) client list; the default lets loopback
    clients on any port write as root, which the real client tools need."""

    name = "nfspd"

    def __init__(self, ns, workdir, export=None, clients="127.0.0.0/8(rw,no_root_squash,insecure)",
                 portmap="auto", extra_args=(), exports_text=None):
        self.ns = ns
        self.workdir = workdir
        self.export = export or os.path.join(workdir, "export")
        os.makedirs(self.export, exist_ok=True)
        self.state = os.path.join(workdir, "state")
        self.exports = os.path.join(workdir, "exports")
        if exports_text is None:
            exports_text = f"{self.export} {clients}\n"
        with open(self.exports, "w") as f:
            f.write(exports_text)
        self.portmap = portmap
        self.extra_args = list(extra_args)
        self.log_path = os.path.join(workdir, "nfspd.log")
        self.proc = None

    def argv(self):
        return [daemon_python(), "-m", "nfspd.cli", "--exports", self.exports,
                "--state-dir", self.state, "--portmap", self.portmap,
                "--log-level", "debug"] + self.extra_args

    def answers(self):
        with self.ns.inside(RpcClient, "127.0.0.1", 2049, "tcp", timeout=1) as c:
            if not c.call(NFS_PROGRAM, 3, 0).accepted:
                return False
        # Clients find MOUNT through the portmapper, which comes up last.
        return self.portmap == "off" or self.ns.inside(getport, "127.0.0.1", MOUNT_PROGRAM, 3) != 0

    def client(self, transport="udp", port=2049, **kw):
        """An RpcClient whose socket lives in the namespace."""
        return self.ns.inside(RpcClient, "127.0.0.1", port, transport, **kw)


def make_key(path):
    if not os.path.exists(path):
        keyfile.generate(path)
    return keyfile.load(path)


class Iod(DaemonProcess):
    """An iod process inside namespace ``ns``, listening on 127.0.0.1:port."""

    name = "iod"

    def __init__(self, ns, workdir, key_path, port=iodproto.DEFAULT_PORT, slot="0/1",
                 user="nobody", data_dir=None, extra_args=()):
        self.ns = ns
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.key_path = key_path
        self.keys = make_key(key_path)
        self.port = port
        self.slot = slot
        self.user = user
        self.data_dir = data_dir or os.path.join(workdir, "data")
        self.extra_args = list(extra_args)
        self.log_path = os.path.join(workdir, "iod.log")
        self.proc = None

    @property
    def address(self):
        """HOST:PORT, as iods.conf and unlinkd's journal name the iod."""
        return f"127.0.0.1:{self.port}"

    def argv(self):
        return [daemon_python(), "-m", "iod.cli", "--data-dir", self.data_dir,
                "--key", self.key_path, "--listen", "127.0.0.1", "--port", str(self.port),
                "--user", self.user, "--ip-id-slot", self.slot, "--threads", "4",
                "--log-level", "debug"] + self.extra_args

    def answers(self):
        with self.client("tcp", timeout=1) as c:
            return c.call(Op.PING).op == Op.PONG

    def client(self, transport="tcp", timeout=10.0):
        return self.ns.inside(IodClient, "127.0.0.1", self.port, self.keys, transport, timeout)

    def held(self):
        """{(ino, seed)} the iod's data directory holds, read straight from the disk."""
        store = DataStore(self.data_dir)
        try:
            return set(store.list())
        finally:
            store.close()

    def counters(self):
        """The counters of the iod's most recent summary line."""
        lines = [line for line in self.log_text().splitlines() if "counters:" in line]
        if not lines:
            return {}
        fields = lines[-1].split("counters:", 1)[1].split()
        return {k: int(v) for k, v in (f.split("=", 1) for f in fields if "=" in f)}

    def counters_now(self, want=None, timeout=30):
        """Ask for a summary (SIGUSR1) and return it; with ``want`` (name ->
        value), until the summary shows those values (the iod counts in its
        threads, after the answer may already be out)."""
        def fresh():
            os.kill(self.pid, 10)   # SIGUSR1
            c = self.counters()
            return c if want is None or all(c.get(k) == v for k, v in want.items()) else None
        result = []
        wait_until(lambda: result.append(fresh()) or result[-1], timeout,
                   what=f"iod counters {want}", interval=0.1)
        return result[-1]


class NfspUp(DaemonProcess):
    """`nfsp up DIRECTORY [args]` inside namespace ``ns``: up once it serves
    MOUNT and has printed its banner (the mount command, then READY; a
    SIGTERM before would leave it unprinted). ``command``
    replaces ``python3 -m tools.nfsp`` (an installed `nfsp`, say), ``env``
    the checkout's environment, ``cwd`` the working directory."""

    name = "nfsp up"
    READY = b"Ctrl-C or SIGTERM stops it."

    def __init__(self, ns, directory, log_path, args=(), command=None, env=None, cwd=None):
        self.ns = ns
        self.directory = directory
        self.export = os.path.join(directory, "export")
        self.log_path = log_path
        self.args = list(args)
        self.command = command or [daemon_python(), "-m", "tools.nfsp"]
        self.env, self.cwd = env, cwd
        self.proc = None

    def environment(self):
        return self.env if self.env is not None else super().environment()

    def argv(self):
        return [*self.command, "up", self.directory, *self.args]

    def answers(self):
        return (self.ns.inside(getport, "127.0.0.1", MOUNT_PROGRAM, 3) != 0
                and self.READY in open(self.log_path, "rb").read())
