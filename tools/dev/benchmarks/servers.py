"""The servers under test, each a context manager exposing the same few
things: ``server`` (address), ``export`` (path to mount), ``pid`` (the
process whose CPU is the server's cost), ``pids()`` (with nfspd's worker
processes), for nfspd ``group_commit()`` (its flushes so far),
``client_prefix(i)`` (argv run on client host i) and, in the
testbed, ``counters()`` (bytes per link).

- LoopbackNfsp / LoopbackGanesha: everything on one namespace's loopback,
  no link caps (metadata rates, CPU costs).
- TestbedServer: tools/dev/testbed hosts on a bridge with every link capped
  (figure 5, bonnie, boot storm); NFSP's iods on hosts of their own, or
  ganesha on the metaserver's host.
"""

import glob
import os

from nfspd import admin
from tools.dev import testbed as tb_mod
from tools.dev.benchmarks import ganesha as ganesha_mod
from tools.dev.cluster import Cluster
from tools.dev.netns import Namespace, wait_until

TESTBED_NAME = "nfspbench"
# The daemons' own defaults are for production; here logging stays at info
# (debug costs CPU per request) and each iod keeps its 8 I/O threads.
IOD_ARGS = ["--log-level", "info", "--threads", "8"]
NFSPD_ARGS = ["--log-level", "info"]


class LoopbackNfsp:
    kind = "nfsp"
    server = "127.0.0.1"

    def __init__(self, workdir, n_iods, export_options="rw,no_root_squash,insecure", workers=0):
        self.workdir, self.n_iods = workdir, n_iods
        self.export_options = export_options  # exports(5), e.g. with "async"
        self.workers = workers                # nfspd --workers

    def __enter__(self):
        self.ns = Namespace()
        try:
            self.cluster = Cluster(self.ns, self.workdir, n_iods=self.n_iods, stripe_unit=65536,
                                   iod_args=IOD_ARGS,
                                   nfspd_args=NFSPD_ARGS + ["--workers", str(self.workers)],
                                   clients=f"127.0.0.0/8({self.export_options})").start()
            self.pid = self.cluster.nfspd.pid
            wait_until(lambda: len(self.pids()) == 1 + self.workers, 30, what="nfspd's workers")
        except BaseException:
            self.ns.close()
            raise
        self.export = self.cluster.export
        return self

    def pids(self):
        """nfspd and its worker processes (not unlinkd: the cost of a call
        is what answering it takes)."""
        out = [self.pid]
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                children = f.read().split()
        except OSError:
            return out
        for child in children:
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    if b"nfspd.workers" in f.read():
                        out.append(int(child))
            except OSError:
                pass  # gone meanwhile
        return out

    def group_commit(self):
        """The group commit counters of nfspd and its workers so far, summed
        (flushes, the calls whose reply waited for one, the seconds they
        took), from nfspd's admin socket: a unix socket in the state
        directory, which the namespace's network does not hide."""
        reply = admin.request(admin.socket_path(self.cluster.nfspd.state), "status", timeout=10)
        if not reply.get("ok"):
            raise RuntimeError(f"nfspd: {reply.get('error', 'no status')}")
        st = reply["status"]
        parts = [st["group_commit"], (st.get("workers") or {}).get("group_commit")]
        return {k: sum(p[k] for p in parts if p) for k in ("flushes", "waits", "seconds")}

    def client_prefix(self, i=0):
        return self.ns.argv

    def __exit__(self, *exc):
        try:
            self.cluster.stop()
        finally:
            self.ns.close()


class LoopbackGanesha:
    kind = "ganesha"
    server = "127.0.0.1"
    n_iods = 0

    def __init__(self, workdir):
        self.workdir = workdir
        self.export = os.path.join(workdir, "export")

    def __enter__(self):
        self.ns = Namespace()
        try:
            self.ganesha = ganesha_mod.Ganesha(self.ns.argv, self.workdir, self.export).start()
        except BaseException:
            self.ns.close()
            raise
        self.pid = self.ganesha.pid
        return self

    def client_prefix(self, i=0):
        return self.ns.argv

    def __exit__(self, *exc):
        try:
            self.ganesha.stop()
        finally:
            self.ns.close()


def remove_leftovers():
    """Namespaces of a benchmark testbed an interrupted run left behind
    (named after TESTBED_NAME, so ours only)."""
    from pyroute2 import netns
    for path in glob.glob(os.path.join(tb_mod.NETNS_DIR, TESTBED_NAME + "-*")):
        netns.remove(os.path.basename(path))


class TestbedServer:
    """kind "nfsp" (``n_iods`` iods) or "ganesha", with ``n_clients`` client
    hosts, every link capped at ``rate``. The data stays in ``workdir``, so
    the same workdir brought up again (at another rate) keeps its files."""

    def __init__(self, kind, workdir, n_iods, n_clients, rate, ipfrag_max_dist=0):
        self.kind, self.workdir, self.rate = kind, workdir, rate
        self.ipfrag_max_dist = ipfrag_max_dist
        self.n_iods = n_iods if kind == "nfsp" else 0
        self.tb = tb_mod.Testbed(TESTBED_NAME, n_iods=self.n_iods, n_clients=n_clients, rate=rate,
                                 workdir=os.path.join(workdir, "testbed"))
        self.ganesha = None

    def __enter__(self):
        remove_leftovers()
        try:
            self.tb.up(daemons=self.kind == "nfsp", timeout=60)
            if self.ipfrag_max_dist is not None:
                self._tune_clients()
            self.server = self.tb.ms.ip
            if self.kind == "nfsp":
                self.export = self.tb.export
                self.pid = self.tb.status()["daemons"]["nfspd"]["pid"]
            else:
                self.export = os.path.join(self.workdir, "ganesha-export")
                self.ganesha = ganesha_mod.Ganesha(self.tb.ms.argv,
                                                   os.path.join(self.workdir, "ganesha"),
                                                   self.export).start()
                self.pid = self.ganesha.pid
        except BaseException:
            self.__exit__()
            raise
        return self

    def _tune_clients(self):
        """Linux drops a half-reassembled datagram once ipfrag_max_dist (64)
        fragments from the same source address arrived in between. Every iod
        sends as the metaserver, so k iods answering one client interleave
        their 23-fragment 32 KiB replies and trip it from k = 2 on (measured:
        "packet reassemblies failed" in the client's namespace, and a
        retransmission each). README's troubleshooting says to raise it;
        0 disables the check. A single server (ganesha) is not affected."""
        for h in self.tb.clients:
            h.run(["sysctl", "-q", "-w", f"net.ipv4.ipfrag_max_dist={self.ipfrag_max_dist}"],
                  check=True)

    def client_prefix(self, i):
        return self.tb.clients[i].argv

    def counters(self):
        return self.tb.counters()

    def __exit__(self, *exc):
        try:
            if self.ganesha is not None:
                self.ganesha.stop()
        finally:
            self.tb.down()
