"""pNFS side by side (issue 14): aggregate WRITE and READ of 1, 2, 4, 8
clients, in one run, against

- nfs-ganesha (Debian's, VFS back end) over NFSv4.1: the single server;
- NFSP with 4 iods over pNFS: layouts from nfspd --pnfs, the data straight
  to and from the iods' data servers (iod --ds-port);
- the same NFSP cluster over NFSv3/TCP: every byte relayed by nfspd;

first on loopback (no caps: what bounds the figures is this machine's CPUs,
so they compare CPU per byte; NFSP at two stripe units), then on the
testbed with every host's link capped at 1 Gbit/s (what bounds them is
whose links carry the bytes: ganesha's one, or the iods' four). --quick:
loopback only, 1 and 2 clients, smaller files, shorter phases.

Each client is a process of its own (tools/dev/benchmarks/pnfsload.py) with
a file of its own, 1 MiB calls (pNFS: cut at the stripe unit, as Linux's
files layout driver cuts them) and the same bytes in flight whatever the
server. The servers and all clients are started first, then each client
count is measured on every server in turn, so a change in the machine's
other load falls on all three alike. A write phase writes the files whole
(again from the start until the phase's time is up), then COMMITs (pNFS: to
every data server, then LAYOUTCOMMIT); the read phase reads them back, every
reply checked against the pattern they were written with.

Figures: aggregate MB/s over the span from the first client's start to the
last one's end; CPU time per MiB moved of the metaserver (nfspd, or
ganesha), of the iods together, and of the load generators together (from
/proc/PID/task/*/schedstat and the clients' own rusage), and how busy the
machine was: everything shares this machine's cores, so when the load
generators' CPU is near what is free the client, not the server, bounded
the figure.
"""

import glob
import json
import os
import select
import shutil
import subprocess
import sys
import time

from tools.dev import REPO
from tools.dev import testbed as tb_mod
from tools.dev.benchmarks import ganesha as ganesha_mod
from tools.dev.benchmarks.harness import MachineCpu, child_env, proc_cpu
from tools.dev.benchmarks.servers import IOD_ARGS, NFSPD_ARGS
from tools.dev.cluster import Cluster
from tools.dev.netns import Namespace

IODS = 4
DS_PORT_BASE = 3050
# 1 MiB stripes: a pNFS client's 1 MiB call goes to one data server whole;
# 64 KiB (nfspd's default before 1 MiB): Linux cuts it into 16 calls, one per stripe.
STRIPE_UNITS = (1 << 20, 64 << 10)
INFLIGHT_MIB = 8
FILE_MIB, QUICK_FILE_MIB = 32, 8
SECONDS, QUICK_SECONDS = 1.5, 0.5
QUICK_CLIENTS = (1, 2)
# The testbed (not in --quick): every host's link capped, so that ganesha's
# one link and the iods' four are what bound the aggregates.
TESTBED = True
TESTBED_NAME = "nfsppnfs"
TESTBED_RATE = "1gbit"
TESTBED_FILE_MIB = 16
KINDS = ("write", "read")


class Workers:
    """``n`` pnfsload processes of one mode, each with its file, set up and
    waiting for a phase."""

    def __init__(self, ctx, prefix, mode, server, export, n, file_mib, tag):
        """``prefix(i)``: client i's argv as run on its host."""
        self.mode, self.procs, self.logs = mode, [], []
        for i in range(n):
            argv = [sys.executable, "-m", "tools.dev.benchmarks.pnfsload", mode, server, export,
                    f"{tag}.{i}", "--file-mib", str(file_mib), "--inflight-mib",
                    str(INFLIGHT_MIB)]
            log = open(os.path.join(ctx.logs, f"pnfs-{tag}-{i}.log"), "wb")
            self.logs.append(log)
            self.procs.append(subprocess.Popen(prefix(i)(argv), stdin=subprocess.PIPE,
                                               stdout=subprocess.PIPE, stderr=log, text=True,
                                               env=child_env(), cwd=REPO, start_new_session=True))
        self.setup = [self._line(p, 120) for p in self.procs]

    def _line(self, p, timeout):
        if not select.select([p.stdout], [], [], timeout)[0]:
            raise RuntimeError(f"pnfsload {self.mode}: no answer within {timeout:.0f}s")
        line = p.stdout.readline()
        if not line:
            p.wait()
            with open(self.logs[self.procs.index(p)].name, "rb") as f:
                tail = f.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"pnfsload {self.mode} exited {p.returncode}:\n{tail}")
        if line.startswith("ready"):
            return json.loads(line.split(" ", 1)[1])
        return json.loads(line)

    def phase(self, n, kind, seconds):
        for p in self.procs[:n]:
            p.stdin.write(f"{kind} {seconds}\n")
            p.stdin.flush()
        return [self._line(p, seconds + 300) for p in self.procs[:n]]

    def close(self):
        for p in self.procs:
            try:
                p.stdin.write("quit\n")
                p.stdin.close()
                p.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                p.kill()
                p.wait()
        for log in self.logs:
            log.close()


class NfspPnfs:
    """One NFSP cluster (4 iods, each a data server; nfspd --pnfs), in a
    namespace: measured as pNFS and as the NFSv3/TCP relay."""

    def __init__(self, workdir, n_iods, stripe_unit):
        self.workdir, self.n_iods, self.stripe_unit = workdir, n_iods, stripe_unit

    def __enter__(self):
        self.ns = Namespace()
        try:
            self.cluster = Cluster(self.ns, self.workdir, n_iods=self.n_iods,
                                   stripe_unit=self.stripe_unit, iod_args=IOD_ARGS,
                                   nfspd_args=NFSPD_ARGS + ["--pnfs"])
            for i, iod in enumerate(self.cluster.iods):
                iod.extra_args += ["--ds-port", str(DS_PORT_BASE + i)]
            self.cluster.start()
        except BaseException:
            self.ns.close()
            raise
        self.export = self.cluster.export
        return self

    server = "127.0.0.1"

    def client_prefix(self, i):
        return self.ns.argv

    def cpu(self):
        # /proc/PID/stat, not the threads' schedstat: it keeps the time of
        # threads that have ended (nfspd's relay threads come and go).
        return {"server": proc_cpu(self.cluster.nfspd.pid),
                "iods": sum(proc_cpu(iod.pid) for iod in self.cluster.iods)}

    def __exit__(self, *exc):
        try:
            self.cluster.stop()
        finally:
            self.ns.close()


class GaneshaV41:
    def __init__(self, workdir):
        self.workdir = workdir
        self.export = os.path.join(workdir, "export")

    def __enter__(self):
        self.ns = Namespace()
        try:
            self.ganesha = ganesha_mod.Ganesha(self.ns.argv, self.workdir, self.export,
                                               nfsv4=True).start()
        except BaseException:
            self.ns.close()
            raise
        return self

    server = "127.0.0.1"

    def client_prefix(self, i):
        return self.ns.argv

    def cpu(self):
        return {"server": proc_cpu(self.ganesha.pid), "iods": 0.0}

    def __exit__(self, *exc):
        try:
            self.ganesha.stop()
        finally:
            self.ns.close()


def _remove_leftovers():
    """Namespaces of this benchmark's testbed an interrupted run left behind."""
    from pyroute2 import netns
    for path in glob.glob(os.path.join(tb_mod.NETNS_DIR, TESTBED_NAME + "-*")):
        netns.remove(os.path.basename(path))


class TestbedNfsp:
    """NFSP on the testbed: nfspd --pnfs on the metaserver's host, each iod a
    data server on a host of its own, ``n_clients`` client hosts."""

    def __init__(self, workdir, n_iods, n_clients, rate, stripe_unit):
        self.tb = tb_mod.Testbed(TESTBED_NAME, n_iods=n_iods, n_clients=n_clients, rate=rate,
                                 workdir=os.path.join(workdir, "nfsp"), stripe_unit=stripe_unit,
                                 nfspd_args=NFSPD_ARGS + ["--pnfs"],
                                 iod_args=IOD_ARGS + ["--ds-port", str(DS_PORT_BASE)])

    def __enter__(self):
        _remove_leftovers()
        try:
            self.tb.up(daemons=True, timeout=60)
        except BaseException:
            self.tb.down()
            raise
        self.server, self.export = self.tb.ms.ip, self.tb.export
        daemons = self.tb.status()["daemons"]
        self.pid = daemons["nfspd"]["pid"]
        self.iod_pids = [d["pid"] for role, d in daemons.items() if role.startswith("iod")]
        return self

    def client_prefix(self, i):
        return self.tb.clients[i].argv

    def cpu(self):
        return {"server": proc_cpu(self.pid), "iods": sum(proc_cpu(p) for p in self.iod_pids)}

    def __exit__(self, *exc):
        self.tb.down()


class TestbedGanesha:
    """ganesha (NFSv4.1) on the testbed's metaserver host, no iods."""

    def __init__(self, workdir, n_clients, rate):
        self.workdir = os.path.join(workdir, "ganesha")
        self.tb = tb_mod.Testbed(TESTBED_NAME, n_iods=0, n_clients=n_clients, rate=rate,
                                 workdir=os.path.join(self.workdir, "testbed"))
        self.ganesha = None

    def __enter__(self):
        _remove_leftovers()
        try:
            self.tb.up(daemons=False, timeout=60)
            self.server, self.export = self.tb.ms.ip, os.path.join(self.workdir, "export")
            self.ganesha = ganesha_mod.Ganesha(self.tb.ms.argv, self.workdir, self.export,
                                               nfsv4=True).start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def client_prefix(self, i):
        return self.tb.clients[i].argv

    def cpu(self):
        return {"server": proc_cpu(self.ganesha.pid), "iods": 0.0}

    def __exit__(self, *exc):
        try:
            if self.ganesha is not None:
                self.ganesha.stop()
        finally:
            self.tb.down()


def measure(ctx, where, name, srv, workers, n, kind, seconds):
    cpu0, machine = srv.cpu(), MachineCpu().start()
    reports = workers.phase(n, kind, seconds)
    busy, cpu1 = machine.stop(), srv.cpu()
    start, end = min(r["start"] for r in reports), max(r["end"] for r in reports)
    moved = sum(r["bytes"] for r in reports)
    mib = moved / (1 << 20)
    span = max(end - start, 1e-9)
    loadgen = sum(r["cpu_s"] for r in reports)

    def per_mib(seconds_):
        return round(seconds_ / mib * 1e3, 3) if mib else None
    errors = [e for r in reports for e in r["errors"]]
    row = {"where": where, "server": name, "clients": n, "kind": kind, "MBps": round(moved / span / 1e6, 1),
           "MiB": round(mib, 1), "seconds": round(span, 3),
           "server_cpu_s": round(cpu1["server"] - cpu0["server"], 3),
           "server_ms_per_MiB": per_mib(cpu1["server"] - cpu0["server"]),
           "iods_ms_per_MiB": per_mib(cpu1["iods"] - cpu0["iods"]) if cpu1["iods"] else None,
           "loadgen_ms_per_MiB": per_mib(loadgen),
           "loadgen_cores": round(loadgen / span, 2), "machine_busy": busy,
           "per_client_MBps": [r["MBps"] for r in reports], "errors": errors[:5],
           "error_count": len(errors)}
    ctx.log(f"pnfs {where}: {name} {n} clients {kind}: {row['MBps']} MB/s, server "
            f"{row['server_ms_per_MiB']} ms/MiB, iods {row['iods_ms_per_MiB']}, loadgen "
            f"{row['loadgen_cores']} cores, machine {busy}, {len(errors)} errors")
    return row


def _size(unit):
    return f"{unit >> 20}M" if unit >= 1 << 20 else f"{unit >> 10}K"


def side_by_side(ctx, where, ways, clients, seconds, file_mib):
    """Rows of every (client count, phase, way): ``ways`` [(name, server,
    mode, prefix)], the servers already up, their clients started here."""
    rows, setups, workers = [], {}, []
    try:
        for name, srv, mode, prefix in ways:
            tag = f"{where}-{mode}-{name.split()[-1]}"
            w = Workers(ctx, prefix, mode, srv.server, srv.export, max(clients), file_mib, tag)
            workers.append((name, srv, w))
            setups[name] = w.setup[0]
        for n in clients:
            for kind in KINDS:
                for name, srv, w in workers:
                    rows.append(measure(ctx, where, name, srv, w, n, kind, seconds))
    finally:
        for _, _, w in workers:
            w.close()
    return rows, setups


def loopback(ctx, clients, seconds, file_mib):
    why_not = ganesha_mod.unavailable(ctx.params)
    opened = []
    dirs = [f"pnfs-nfsp-{unit >> 10}k" for unit in STRIPE_UNITS] + ["pnfs-ganesha"]
    for d in dirs:      # a server restarted on old state would be in its grace period
        shutil.rmtree(os.path.join(ctx.work, d), ignore_errors=True)
    try:
        ways = []
        if why_not is None:
            gan = GaneshaV41(ctx.workdir("pnfs-ganesha")).__enter__()
            opened.append(gan)
            ways.append(("ganesha NFSv4.1", gan, "v41", gan.client_prefix))
        for unit, d in zip(STRIPE_UNITS, dirs):
            nfsp = NfspPnfs(ctx.workdir(d), IODS, unit).__enter__()
            opened.append(nfsp)
            ways += [(f"NFSP pNFS {_size(unit)}", nfsp, "pnfs", nfsp.client_prefix),
                     (f"NFSP v3 relay {_size(unit)}", nfsp, "v3", nfsp.client_prefix)]
        return side_by_side(ctx, "loopback", ways, clients, seconds, file_mib)
    finally:
        for srv in reversed(opened):
            srv.__exit__(None, None, None)
        for d in dirs:
            ctx.cleanup(os.path.join(ctx.work, d))


def testbed(ctx, clients, seconds, file_mib, rate):
    """The same on the testbed: every host its own link capped at ``rate``;
    NFSP first (its iods on hosts of their own), then ganesha on the
    metaserver's host (the same address and port: one after the other)."""
    rows, setups = [], {}
    workdir = ctx.workdir("pnfs-testbed")
    shutil.rmtree(workdir, ignore_errors=True)
    try:
        with TestbedNfsp(workdir, IODS, max(clients), rate, STRIPE_UNITS[0]) as tb:
            ways = [(f"NFSP pNFS {_size(STRIPE_UNITS[0])}", tb, "pnfs", tb.client_prefix),
                    (f"NFSP v3 relay {_size(STRIPE_UNITS[0])}", tb, "v3", tb.client_prefix)]
            r, s = side_by_side(ctx, f"testbed {rate}", ways, clients, seconds, file_mib)
            rows += r
            setups.update(s)
        if ganesha_mod.unavailable(ctx.params) is None:
            with TestbedGanesha(workdir, max(clients), rate) as tb:
                r, s = side_by_side(ctx, f"testbed {rate}",
                                    [("ganesha NFSv4.1", tb, "v41", tb.client_prefix)],
                                    clients, seconds, file_mib)
                rows += r
                setups.update(s)
    finally:
        ctx.cleanup(workdir)
    return rows, setups


def _size(unit):
    return f"{unit >> 20}M" if unit >= 1 << 20 else f"{unit >> 10}K"


def run(ctx):
    clients = QUICK_CLIENTS if ctx.quick else tuple(ctx.params.clients)
    seconds = QUICK_SECONDS if ctx.quick else SECONDS
    file_mib = QUICK_FILE_MIB if ctx.quick else FILE_MIB
    rows, setups = loopback(ctx, clients, seconds, file_mib)
    rates = [] if ctx.quick or not TESTBED else [TESTBED_RATE]
    for rate in rates:
        r, s = testbed(ctx, clients, seconds, TESTBED_FILE_MIB, rate)
        rows += r
        setups.update({f"testbed {k}": v for k, v in s.items()})
    return {"iods": IODS, "stripe_units": list(STRIPE_UNITS), "inflight_MiB": INFLIGHT_MIB,
            "file_MiB": file_mib, "testbed_file_MiB": TESTBED_FILE_MIB, "seconds": seconds,
            "ganesha": ganesha_mod.unavailable(ctx.params) or "NFSv4.1", "setup": setups,
            "rows": rows, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
