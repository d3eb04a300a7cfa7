"""Start the real daemons as processes inside a test's network namespace."""

import os
import sys

from tests.support.process import REPO, DaemonProcess  # noqa: F401 (REPO: for older imports)
from tools.rpcclient import RpcClient, getport
NFS_PROGRAM = 100003
MOUNT_PROGRAM = 100005


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
        return [sys.executable, "-m", "nfspd.cli", "--exports", self.exports,
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
