"""Start the real daemons as processes inside a test's network namespace."""

import os
import subprocess
import sys

from tests.support.netns import stop, wait_until
from tools.rpcclient import RpcClient, getport

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NFS_PROGRAM = 100003
MOUNT_PROGRAM = 100005


class Nfspd:
    """An nfspd process serving ``export`` (a directory) inside namespace ``ns``.

    ``clients`` is the exports(5) client list; the default lets loopback
    clients on any port write as root, which the real client tools need."""

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

    def start(self, timeout=20):
        self.log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONPATH=REPO)
        self.proc = self.ns.popen(self.argv(), stdout=self.log, stderr=subprocess.STDOUT, env=env)

        def died():
            if self.proc.poll() is not None:
                return f"nfspd exited with {self.proc.returncode}:\n{self.log_text()}"

        def answers():
            with self.ns.inside(RpcClient, "127.0.0.1", 2049, "tcp", timeout=1) as c:
                if not c.call(NFS_PROGRAM, 3, 0).accepted:
                    return False
            # Clients find MOUNT through the portmapper, which comes up last.
            return self.portmap == "off" or self.ns.inside(getport, "127.0.0.1", MOUNT_PROGRAM, 3) != 0
        wait_until(answers, timeout, what="nfspd answering NULL", abort=died)
        return self

    def stop(self):
        if self.proc is not None:
            rc = stop(self.proc)
            self.proc = None
            self.log.close()
            return rc

    def restart(self):
        self.stop()
        return self.start()

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def client(self, transport="udp", port=2049, **kw):
        """An RpcClient whose socket lives in the namespace."""
        return self.ns.inside(RpcClient, "127.0.0.1", port, transport, **kw)
