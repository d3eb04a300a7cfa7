"""A whole NFSP cluster in a network namespace: N real iod processes
(separate data directories, one cluster key) and an nfspd with --iods.

    c = Cluster(ns, workdir, n_iods=4, stripe_unit=65536).start()
    client, root = c.connect(vers=3, transport="udp")

Everything listens on the namespace's loopback: nfspd on 127.0.0.1:2049 (and
its embedded portmapper on 111), iod i on 127.0.0.1:(2050 + i), so the iods'
spoofed replies go from 127.0.0.1:2049 to the client over lo.
"""

import os
import signal

from tools.dev import nfsclient
from tools.dev.daemons import Iod, Nfspd, make_key
from tools.dev.netns import wait_until


class Cluster:
    def __init__(self, ns, workdir, n_iods=2, stripe_unit=65536, iod_args=(), nfspd_args=(),
                 clients="127.0.0.0/8(rw,no_root_squash,insecure)"):
        self.ns = ns
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.key_path = os.path.join(workdir, "cluster.key")
        self.keys = make_key(self.key_path)
        self.stripe_unit = stripe_unit
        self.iod_args = list(iod_args)
        self.iods = [self._iod(i, n_iods) for i in range(n_iods)]
        self.conf = os.path.join(workdir, "iods.conf")
        self.write_conf()
        self.nfspd = Nfspd(ns, os.path.join(workdir, "nfspd"), clients=clients,
                           portmap="embedded", extra_args=self._nfspd_args(nfspd_args))
        self.export = self.nfspd.export

    def _iod(self, i, n):
        return Iod(self.ns, os.path.join(self.workdir, f"iod{i}"), self.key_path,
                   port=2050 + i, slot=f"{i}/{max(n, 4)}", extra_args=self.iod_args)

    def _nfspd_args(self, extra):
        return ["--iods", self.conf, "--key", self.key_path,
                "--stripe-unit", str(self.stripe_unit)] + list(extra)

    def write_conf(self):
        with open(self.conf, "w") as f:
            f.write("# written by tools/dev/cluster.py\n")
            for iod in self.iods:
                f.write(f"127.0.0.1:{iod.port}\n")

    def add_iod(self):
        """Append one more iod (a new layout generation once nfspd restarts)."""
        iod = self._iod(len(self.iods), len(self.iods) + 1)
        self.iods.append(iod)
        self.write_conf()
        return iod.start()

    def start(self):
        for iod in self.iods:
            iod.start()
        self.nfspd.start()
        return self

    def stop(self):
        self.nfspd.stop()
        for iod in self.iods:
            iod.stop()

    def connect(self, vers=3, transport="udp", **kw):
        """(client, root handle) of the project's NFS client, its socket in the namespace."""
        return self.ns.inside(nfsclient.connect, "127.0.0.1", self.export, vers=vers,
                              transport=transport, **kw)

    def nfspd_log(self):
        return self.nfspd.log_text()

    def iod_counters(self, i):
        """iod i's counters as of now: asks for a summary (SIGUSR1) and waits
        for that new line, not an older one."""
        iod = self.iods[i]

        def summaries():
            return iod.log_text().count("counters:")
        seen = summaries()
        os.kill(iod.pid, signal.SIGUSR1)
        wait_until(lambda: summaries() > seen, 10, what=f"iod{i}'s counter summary")
        return iod.counters()

    def datafiles(self):
        """{iod index: [(ino, seed), ...]} of what each iod stores."""
        return {i: sorted(iod.held()) for i, iod in enumerate(self.iods)}
