"""Soak (issue 8): many clients with a mixed workload for minutes against a
real embedded cluster, watching the daemons' memory and file descriptors.

    python3 -m tools.dev.soak --minutes 10 --clients 64 --iods 4 --proto both --out soak-out

The system under test is the admin's path, `nfsp up DIR --iods N` (nfspd, N
iods, nfspd's unlinkd), run in a private network namespace of its own so that
its ports (111, 2049, 2050...) collide with nothing. The load is
tools/dev/loadgen's `mixed` workload, N logical clients in one process, every
reply checked there. For each protocol:

1. warm-up round: the same clients, for ``--warmup`` seconds (preparing the
   files first); once they have gone, the daemons' open fds are the
   reference;
2. the soak: the clients again for ``--minutes``; RSS (VmRSS) and open fds
   of nfspd, each iod and unlinkd sampled every ``--interval`` seconds;
3. after it: fds once the clients are gone, the files the workload leaves
   byte-checked through NFS against loadgen's pattern, the scratch directory
   empty, and `nfsp scrub` finding no leaked data.

Both rounds touch the same objects, so the daemons' descriptor caches
(nfspd's handle cache, each iod's datafile LRU) hold the same files after
each; still, what a short warm-up round touched depends on timing, so the fd
verdict is on what cannot be a cache: sockets, pipes and other non-file fds
back to exactly the reference, no fd on a deleted file (a leak that also pins
disk space), no file held by more descriptors than before. Total counts,
files included, are reported.

Criteria (each a verdict in the report; exit status 1 if one fails, 2 if the
soak could not run): zero loadgen errors; RSS growth over the soak (median of
its first 3 samples to median of its last 3) under ``--rss-bound-mib`` or
``--rss-bound-pct``; no fd leak as above; files intact; no leak of data on
the iods; no daemon died, restarted, or logged an ERROR or a traceback;
`nfsp up` stops cleanly.

Writes DIR/soak.json (everything, the whole RSS/fd curve) and DIR/soak.txt
(the summary printed at the end); DIR/cluster is the cluster's directory and
DIR/up.log its log.
"""

import json
import os
import statistics
import subprocess
import sys
import time

import click

from tools.dev import REPO
from tools.dev.daemons import NfspUp
from tools.dev.loadgen import PATTERN
from tools.dev.netns import wait_until

ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(
    p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
HOST = "127.0.0.1"
UP_READY_SECONDS = 60.0     # `nfsp up` answering MOUNT (it bounds each daemon's start itself)
UP_STOP_SECONDS = 60.0      # its own bounds: 20 s for nfspd, 10 s for the iods
FD_SETTLE_SECONDS = 40.0    # nfspd seeing TCP clients go; a restarted unlinkd reconnecting
LOADGEN_GRACE = 300.0       # past the duration: mounting, preparing, winding down
EDGE_SAMPLES = 3            # samples whose median is the RSS at the soak's start and end
PAGE = 4096


class SoakError(click.ClickException):
    """The soak could not run (the cluster did not start, loadgen could not
    mount): exit status 2; 1 means it ran and a criterion failed."""

    exit_code = 2


# -- the processes under watch ---------------------------------------------------


def _children(pid):
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:   # a child belongs to the thread that forked it
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def role_of(argv):
    """'nfspd', 'unlinkd', 'iodN' (N from its data directory DIR/iodN), or None."""
    if b"nfspd.cli" in argv:
        return "nfspd"
    if b"unlinkd.cli" in argv:
        return "unlinkd"
    if b"iod.cli" in argv and b"--data-dir" in argv:
        i = argv.index(b"--data-dir")
        if i + 1 < len(argv):
            return os.path.basename(argv[i + 1].decode(errors="replace").rstrip("/"))
    return None


def daemons(root_pid):
    """{role: pid} of the daemons descending from ``root_pid`` (nsenter ->
    `nfsp up` -> iods and nfspd -> unlinkd)."""
    found, todo = {}, [root_pid]
    while todo:
        pid = todo.pop()
        todo += _children(pid)
        role = role_of(_cmdline(pid))
        if role:
            found[role] = pid
    return found


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise OSError(f"no VmRSS for {pid}")


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS   # utime + stime


def measure(procs):
    """{role: {pid, rss_kib, fds, cpu_s}} of those still alive."""
    out = {}
    for role, pid in procs.items():
        try:
            out[role] = {"pid": pid, "rss_kib": rss_kib(pid),
                         "fds": len(os.listdir(f"/proc/{pid}/fd")), "cpu_s": cpu_seconds(pid)}
        except OSError:
            pass   # gone: the verdict on deaths says so
    return out


def socket_kinds(pid):
    """{socket inode: protocol} from the tables of ``pid``'s network namespace."""
    kinds = {}
    for proto in ("tcp", "tcp6", "udp", "udp6", "raw", "unix", "netlink", "packet"):
        try:
            with open(f"/proc/{pid}/net/{proto}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        column = {"unix": 6, "netlink": -1, "packet": -1}.get(proto, 9)
        for row in rows:
            fields = row.split()
            if len(fields) > max(column, 0):
                kinds[fields[column]] = proto.rstrip("6")
    return kinds


def fd_table(pid):
    """A process's fds by kind: ``files`` (fds on paths), ``inodes`` (distinct
    files among them), ``deleted`` (paths of files with no link left),
    ``other`` {kind: count}: "socket/tcp", "socket/netlink", "pipe",
    "anon_inode:[eventpoll]"..."""
    files, inodes, deleted, other = 0, set(), [], {}
    sockets = None
    for fd in os.listdir(f"/proc/{pid}/fd"):
        link = f"/proc/{pid}/fd/{fd}"
        try:
            target = os.readlink(link)
            if not target.startswith("/"):
                kind, _, ino = target.partition(":[")
                if kind == "socket":
                    sockets = socket_kinds(pid) if sockets is None else sockets
                    kind = "socket/" + sockets.get(ino.rstrip("]"), "unlisted")
                elif kind == "anon_inode":
                    kind = target
                other[kind] = other.get(kind, 0) + 1
                continue
            # Through the magic link: the open inode, whatever its name now (a
            # file made with O_TMPFILE and linked in keeps its "#ino (deleted)").
            st = os.stat(link)
        except FileNotFoundError:
            continue   # closed meanwhile
        files += 1
        inodes.add((st.st_dev, st.st_ino))
        if st.st_nlink == 0:
            deleted.append(target)
    return {"fds": files + sum(other.values()), "files": files, "inodes": len(inodes),
            "deleted": sorted(deleted), "other": other}


def fd_tables(procs):
    out = {}
    for role, pid in procs.items():
        try:
            out[role] = fd_table(pid)
        except OSError:
            pass
    return out


# pyroute2 (0.9) opens a netlink socket for each thread that makes a route
# query: an iod's RouteMtu gains one per I/O thread, lazily, up to --threads.
# Bounded, and never per client: reported, not a leak.
PER_THREAD_KINDS = ("socket/netlink",)


def fd_leaks(reference, now):
    """What in ``now`` (fd_tables) is more than in ``reference`` and cannot be
    a cache: {role: description}."""
    leaks = {}
    for role, ref in reference.items():
        cur = now.get(role)
        if cur is None:
            leaks[role] = "not running"
            continue
        found = []
        for kind in sorted(set(ref["other"]) | set(cur["other"])):
            a, b = ref["other"].get(kind, 0), cur["other"].get(kind, 0)
            if a != b and not (kind in PER_THREAD_KINDS and b > a):
                found.append(f"{kind} {a}->{b}")
        if len(cur["deleted"]) > len(ref["deleted"]):
            new = sorted(set(cur["deleted"]) - set(ref["deleted"])) or cur["deleted"]
            found.append(f"fds on deleted files {len(ref['deleted'])}->{len(cur['deleted'])}, "
                         f"e.g. {new[0]}")
        if cur["files"] - cur["inodes"] > ref["files"] - ref["inodes"]:
            found.append(f"files held twice {ref['files'] - ref['inodes']}->"
                         f"{cur['files'] - cur['inodes']}")
        if found:
            leaks[role] = ", ".join(found)
    return leaks


def fd_changes(reference, now):
    """Every count that changed, leaks or not: {role: "kind a->b, ..."}."""
    out = {}
    for role, ref in reference.items():
        cur = now.get(role)
        if cur is None:
            continue
        keys = sorted(set(ref["other"]) | set(cur["other"]))
        changed = [f"{k} {ref['other'].get(k, 0)}->{cur['other'].get(k, 0)}" for k in keys
                   if ref["other"].get(k, 0) != cur["other"].get(k, 0)]
        if ref["files"] != cur["files"]:
            changed.append(f"files {ref['files']}->{cur['files']}")
        if changed:
            out[role] = ", ".join(changed)
    return out


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


# -- the cluster -----------------------------------------------------------------


class Cluster(NfspUp):
    """`nfsp up DIR --iods N` in namespace ``ns``, with its daemons by role."""

    def __init__(self, ns, directory, n_iods, log_path):
        super().__init__(ns, directory, log_path, ["--iods", str(n_iods)], env=ENV)
        self.dir = directory
        self.n_iods = n_iods

    def start(self):
        try:
            super().start(UP_READY_SECONDS)
            wait_until(lambda: set(self.daemons()) == set(self.roles()), UP_READY_SECONDS,
                       what=f"nfspd, unlinkd and {self.n_iods} iods running",
                       abort=lambda: self.proc.poll() is not None and "`nfsp up` exited")
        except (RuntimeError, TimeoutError) as e:
            raise SoakError(f"{str(e).splitlines()[0]} {self.log_tail()} (log: {self.log_path})"
                            ) from None
        return self

    def daemons(self):
        return daemons(self.proc.pid) if self.proc else {}

    def roles(self):
        return ["nfspd", "unlinkd"] + [f"iod{i}" for i in range(self.n_iods)]

    def stop(self):
        """`nfsp up`'s exit status after SIGTERM (negative: killed past the bound)."""
        return super().stop(UP_STOP_SECONDS)

    def log_tail(self, n=3):
        with open(self.log_path, "rb") as f:
            return " | ".join(f.read().decode(errors="replace").strip().splitlines()[-n:])

    def scrub(self):
        """(exit status, output) of `nfsp scrub` (read-only)."""
        r = self.ns.run([sys.executable, "-m", "tools.nfsp", "scrub",
                         "--exports", os.path.join(self.dir, "exports"),
                         "--iods", os.path.join(self.dir, "iods.conf"),
                         "--key", os.path.join(self.dir, "cluster.key"),
                         "--state-dir", os.path.join(self.dir, "state")],
                        timeout=300, env=ENV)
        return r.returncode, (r.stdout + r.stderr).strip()


def log_problems(path, offset):
    """(ERROR lines, traceback count, WARNING lines) logged since ``offset``."""
    with open(path, "rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").splitlines()
    errors = [line for line in lines if " ERROR " in line or " CRITICAL " in line]
    warnings = [line for line in lines if " WARNING " in line]
    return errors, sum("Traceback (most recent call last)" in line for line in lines), warnings


# -- the load --------------------------------------------------------------------


def loadgen_argv(cfg, proto, seconds, prepare):
    return [sys.executable, "-m", "tools.dev.loadgen", "--server", HOST, "--export", cfg.export,
            "--proto", proto, "--workload", "mixed", "--clients", str(cfg.clients),
            "--window", str(cfg.window), "--duration", str(seconds), "--dir", cfg.dir,
            "--file", cfg.file, "--file-size", str(cfg.file_size),
            "--dir-entries", str(cfg.dir_entries), "--prepare" if prepare else "--no-prepare",
            "--json"]


def run_loadgen(ns, argv, timeout, on_tick=None, interval=None):
    """loadgen's JSON report; ``on_tick(proc)`` every ``interval`` seconds
    while it runs."""
    proc = ns.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    deadline = time.monotonic() + timeout
    try:
        while on_tick is not None and proc.poll() is None and time.monotonic() < deadline:
            on_tick(proc)
            try:
                proc.wait(timeout=interval)
            except subprocess.TimeoutExpired:
                pass
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise SoakError(f"loadgen still running after {timeout:g} s") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out, err = out.decode(errors="replace").strip(), err.decode(errors="replace").strip()
    if proc.returncode == 2:   # loadgen's "no load could be generated"
        raise SoakError(f"loadgen: {err.splitlines()[-1] if err else out}")
    try:
        return json.loads(out.splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise SoakError(f"loadgen (exit {proc.returncode}) gave no report: "
                        f"{(err or out)[-500:]}") from None


def loadgen_pid(proc):
    """The loadgen's own pid (the popen'd process is nsenter, which may fork)."""
    for pid in [proc.pid] + _children(proc.pid):
        if b"tools.dev.loadgen" in _cmdline(pid):
            return pid
    return None


# -- data check ------------------------------------------------------------------


def _read(c, fh, off, n):
    out = bytearray()
    while len(out) < n:
        data, eof = c.read(fh, off + len(out), min(n - len(out), 1 << 20))
        out += data
        if eof or not data:
            break
    return bytes(out)


def check_own_file(c, fh, name, size, wsize):
    """(problem or None, blocks not written whole) of a per-client file of
    the mixed workload: rewritten in place with its pattern, wsize bytes at a
    time. Every page must be the pattern or zeros: a WRITE that never
    arrived (cut by the end of the run) or failed (a JUKEBOX may come after
    some of its stripes were written) leaves a hole, never other bytes."""
    shift = PATTERN.shift(name)
    unwritten = 0
    for off in range(0, size, wsize):
        n = min(wsize, size - off)
        data = _read(c, fh, off, n)
        if data == PATTERN.data(shift, off, n):
            continue
        if len(data) != n:
            return f"{name}: {len(data)} bytes read at {off}, {n} expected", unwritten
        for p in range(0, n, PAGE):
            page = data[p:p + PAGE]
            if page != PATTERN.data(shift, off + p, len(page)) and page.count(0) != len(page):
                return f"{name}: bytes at {off + p} are neither its pattern nor a hole", unwritten
        unwritten += 1
    return None, unwritten


def verify_files(export, cfg, wsize, write_errors):
    """Byte-check what the mixed workload leaves (call it in the namespace):
    the shared file whole, every per-client file, the scratch directory
    empty. A client's file may have a hole for each WRITE its workers held
    when the run ended (``cfg.window``) and for each that failed."""
    from tools.dev import nfsclient
    c, root = nfsclient.connect(HOST, export, vers=3, transport="tcp", timeout=60.0)
    try:
        d = c.walk(root, cfg.dir)
        problems = []
        shared = f"{cfg.dir}/{cfg.file}"
        fh = c.lookup(d, cfg.file.encode())
        size = c.getattr(fh).size
        data = _read(c, fh, 0, size)
        shift = PATTERN.shift(shared)
        if size != cfg.file_size or len(data) != size:
            problems.append(f"{shared}: {size} bytes ({len(data)} read), expected {cfg.file_size}")
        else:
            bad = next((o for o in range(0, size, PAGE)
                        if data[o:o + PAGE] != PATTERN.data(shift, o, min(PAGE, size - o))), None)
            if bad is not None:
                problems.append(f"{shared}: bytes at {bad} differ from its pattern")
        unwritten, checked = 0, size
        for cid in range(cfg.clients):
            name = f"{cfg.file}.w{cid}"
            fh = c.lookup(d, name.encode())
            fsize = c.getattr(fh).size
            if fsize > cfg.file_size:
                problems.append(f"{cfg.dir}/{name}: {fsize} bytes, more than {cfg.file_size}")
                continue
            problem, holes = check_own_file(c, fh, f"{cfg.dir}/{name}", fsize, wsize)
            if problem:
                problems.append(problem)
            elif holes > cfg.window + write_errors:
                problems.append(f"{cfg.dir}/{name}: {holes} blocks not written whole, more than "
                                f"{cfg.window} cut by the end of the run and {write_errors} "
                                f"failed WRITEs")
            unwritten += holes
            checked += fsize
        left = [n for n in c.listdir(c.lookup(d, b"scratch")) if n not in (b".", b"..")]
        if left:
            problems.append(f"{len(left)} files left in {cfg.dir}/scratch "
                            f"(CREATE+REMOVE should leave none): {left[:3]}")
        return {"files": 1 + cfg.clients, "bytes": checked, "unwritten_blocks": unwritten,
                "problems": problems}
    finally:
        c.rpc.close()


# -- figures and verdicts ----------------------------------------------------------


def _mib(kib):
    return round(kib / 1024, 2)


def rss_figures(samples, start, end, roles, bound_mib, bound_pct):
    """Per role, over the samples taken while the load ran: RSS at its start
    and end (each the median of EDGE_SAMPLES samples), growth and whether it
    is within the bound (under bound_mib OR bound_pct), peak, least-squares
    slope, and about 12 points of the curve."""
    out = {}
    for role in roles:
        mine = [s["procs"][role] for s in samples if role in s["procs"] and start <= s["t"] <= end]
        pids = list(dict.fromkeys(m.get("pid") for m in mine))
        # A restarted daemon's RSS starts again: only its last process counts.
        pts = [(s["t"], s["procs"][role]["rss_kib"]) for s in samples
               if role in s["procs"] and start <= s["t"] <= end
               and s["procs"][role].get("pid") == (pids[-1] if pids else None)]
        if len(pts) < 2 * EDGE_SAMPLES:
            out[role] = {"ok": False, "why": f"{len(pts)} samples while the load ran"
                         + (f" (restarted: pids {pids})" if len(pids) > 1 else "")}
            continue
        first = statistics.median(v for _, v in pts[:EDGE_SAMPLES])
        last = statistics.median(v for _, v in pts[-EDGE_SAMPLES:])
        growth = last - first
        t_mean = statistics.fmean(t for t, _ in pts)
        v_mean = statistics.fmean(v for _, v in pts)
        var = sum((t - t_mean) ** 2 for t, _ in pts)
        slope = sum((t - t_mean) * (v - v_mean) for t, v in pts) / var if var else 0.0
        step = max(1, len(pts) // 12)
        curve = [[round(t - start), _mib(v)] for t, v in pts[::step]]
        if (pts[-1][0] - pts[0][0]) and curve[-1][0] != round(pts[-1][0] - start):
            curve.append([round(pts[-1][0] - start), _mib(pts[-1][1])])
        out[role] = {"first_mib": _mib(first), "last_mib": _mib(last), "growth_mib": _mib(growth),
                     "growth_pct": round(100 * growth / first, 2),
                     "peak_mib": _mib(max(v for _, v in pts)),
                     "slope_mib_per_min": round(slope * 60 / 1024, 3), "curve_s_mib": curve,
                     "processes": len(pids),
                     "ok": growth < bound_mib * 1024 or growth < first * bound_pct / 100}
    return out


def cpu_utilisation(samples, roles):
    """Per role, CPU seconds per second between its first and last sample
    (one process: at most 1 per thread running; 2 cores here)."""
    out = {}
    for role in roles:
        pts = [(s["t"], s["procs"][role]) for s in samples if role in s["procs"]]
        pts = [(t, m) for t, m in pts if m["pid"] == pts[-1][1]["pid"]] if pts else []
        if len(pts) >= 2 and pts[-1][0] > pts[0][0]:
            out[role] = round((pts[-1][1]["cpu_s"] - pts[0][1]["cpu_s"])
                              / (pts[-1][0] - pts[0][0]), 3)
    return out


class Phase:
    """One protocol: warm-up round, soak, checks."""

    def __init__(self, cfg, ns, cluster, proto, samples, echo):
        self.cfg, self.ns, self.cluster, self.proto = cfg, ns, cluster, proto
        self.samples = samples
        self.echo = echo
        self.result = {"proto": proto}
        self.launched = time.time()
        self.ticks = 0

    def tick(self, proc=None):
        procs = self.cluster.daemons()
        pid = loadgen_pid(proc) if proc is not None else None
        if pid:
            procs["loadgen"] = pid
        s = {"t": round(time.time(), 3), "proto": self.proto, "loadavg": loadavg()[0],
             "procs": measure(procs)}
        self.samples.append(s)
        self.ticks += 1
        if proc is not None and self.ticks % self.cfg.print_every == 0:
            self.echo(f"  {self.proto} +{s['t'] - self.launched:5.0f}s load {s['loadavg']:.2f} "
                      + " ".join(f"{r} {_mib(m['rss_kib'])}M/{m['fds']}"
                                 for r, m in sorted(s["procs"].items())))

    def settle(self, reference):
        """fd tables once the clients are gone: waited for (bounded) until
        every daemon runs and nothing but caches differs from ``reference``
        (None: until every daemon runs), else the last ones."""
        deadline = time.monotonic() + FD_SETTLE_SECONDS
        while True:
            now = fd_tables(self.cluster.daemons())
            ready = set(now) >= set(self.cluster.roles())
            if ready and (reference is None or not fd_leaks(reference, now)) \
                    or time.monotonic() > deadline:
                return now
            time.sleep(0.2)

    def run(self):
        log_offset = os.path.getsize(self.cluster.log_path)
        before = self.settle(None)
        pids = self.cluster.daemons()
        reference = self.warm_up(before)
        report = self.soak(reference)
        self.check(report, pids, log_offset)
        self.result["verdicts"] = self.verdicts()
        return self.result

    def warm_up(self, before):
        """The warm-up round; returns the reference fd tables (its clients gone)."""
        cfg, r = self.cfg, self.result
        self.echo(f"{self.proto}: warm-up round, {cfg.clients} clients for {cfg.warmup:g} s")
        warm = run_loadgen(self.ns, loadgen_argv(cfg, self.proto, cfg.warmup, True),
                           timeout=cfg.warmup + LOADGEN_GRACE, on_tick=self.tick,
                           interval=cfg.interval)
        r["warmup_round"] = {k: warm.get(k) for k in (
            "seconds", "calls", "error_count", "prepare_errors", "errors", "error_samples",
            "jukebox")}
        r["fds_reference"] = reference = self.settle(before)
        return reference

    def soak(self, reference):
        """The soak itself, sampled; its figures. Returns loadgen's report."""
        cfg, r = self.cfg, self.result
        self.echo(f"{self.proto}: soak, {cfg.clients} clients for {cfg.seconds:g} s "
                  f"(fds, no client: {({k: v['fds'] for k, v in reference.items()})})")
        self.launched = time.time()
        report = run_loadgen(self.ns, loadgen_argv(cfg, self.proto, cfg.seconds, False),
                             timeout=cfg.seconds + LOADGEN_GRACE, on_tick=self.tick,
                             interval=cfg.interval)
        self.tick()
        r["load"] = {k: report.get(k) for k in (
            "seconds", "clients", "window", "rsize", "wsize", "ops", "calls", "calls_per_s",
            "bytes_read", "bytes_written", "MBps", "latency_ms", "per_op", "errors", "error_count",
            "error_samples", "prepare_errors", "retransmits", "duplicate_replies", "reconnects",
            "jukebox", "cpu_util")}
        r["start"], r["end"] = report["start"], report["end"]
        r["fds_after"] = self.settle(reference)
        during = [s for s in self.samples if s["proto"] == self.proto
                  and r["start"] <= s["t"] <= r["end"]]
        r["fds_peak"] = {role: max((s["procs"][role]["fds"] for s in during
                                    if role in s["procs"]), default=None)
                         for role in reference}
        r["rss"] = rss_figures(self.samples, r["start"], r["end"], sorted(reference),
                               cfg.rss_bound_mib, cfg.rss_bound_pct)
        r["cpu_util"] = cpu_utilisation(during, sorted(reference) + ["loadgen"])
        loads = [s["loadavg"] for s in during] or [None]
        r["loadavg"] = {"min": min(loads), "max": max(loads),
                        "mean": round(statistics.fmean(loads), 2) if during else None}
        return report

    def check(self, report, pids, log_offset):
        """After the soak: restarts, the files, data leaks, the log."""
        r = self.result
        seen = [s["procs"] for s in self.samples if s["proto"] == self.proto]
        r["restarted"] = sorted({role for p in seen for role, m in p.items()
                                 if role in pids and m["pid"] != pids[role]}
                                | {role for role in pids if any(role not in p for p in seen)})
        self.echo(f"{self.proto}: checking the files")
        write_errors = sum(n for kind, n in (report.get("errors") or {}).items()
                           if kind.startswith("write"))
        r["data"] = self.ns.inside(verify_files, self.cluster.export, self.cfg, report["wsize"],
                                   write_errors)
        rc, out = self.cluster.scrub()
        r["scrub"] = {"status": rc, "output": out.splitlines()[-5:]}
        errors, tracebacks, warnings = log_problems(self.cluster.log_path, log_offset)
        r["log"] = {"errors": len(errors), "tracebacks": tracebacks, "warnings": len(warnings),
                    "samples": (errors + warnings)[:6]}

    def verdicts(self):
        r, cfg = self.result, self.cfg
        load, warm = r["load"], r["warmup_round"]
        errs = sum((x.get(k) or 0) for x in (load, warm) for k in ("error_count", "prepare_errors"))
        # Not errors to loadgen, which retries them as a hard mount would, but
        # not what a healthy cluster does: a TCP client that had to connect
        # again (the server dropped it), NFS3ERR_JUKEBOX (an iod did not answer).
        reconnects = load.get("reconnects") or 0
        jukebox = sum((x.get("jukebox") or 0) for x in (load, warm))
        leaks = fd_leaks(r["fds_reference"], r["fds_after"])
        rss_bad = {role: f.get("growth_mib", f.get("why")) for role, f in r["rss"].items()
                   if not f["ok"]}
        changes = fd_changes(r["fds_reference"], r["fds_after"])
        data = r["data"]
        return {
            "zero_errors": {"ok": not (errs or reconnects or jukebox) and bool(load["calls"]),
                            "detail": f"{load['calls']} calls checked, {errs} errors "
                                      f"{load['errors'] or ''}, {jukebox} JUKEBOX, "
                                      f"{reconnects} reconnections".replace(" ,", ",")},
            "rss_flat": {"ok": not rss_bad,
                         "detail": f"growth over the soak < {cfg.rss_bound_mib:g} MiB or "
                                   f"< {cfg.rss_bound_pct:g}%"
                                   + (f"; exceeded: {rss_bad}" if rss_bad else "")},
            "no_fd_leak": {"ok": not leaks,
                           "detail": (f"{leaks}; " if leaks else "sockets/pipes back to the "
                                      "reference, none on a deleted file; ")
                           + f"changes with no client: {changes or 'none'}"},
            "data_intact": {"ok": not data["problems"],
                            "detail": f"{data['files']} files, {data['bytes']} bytes, "
                                      f"{data['unwritten_blocks']} unwritten blocks"
                                      + (f"; {data['problems'][:3]}" if data["problems"] else "")},
            "no_data_leak": {"ok": r["scrub"]["status"] == 0,
                             "detail": f"nfsp scrub exit {r['scrub']['status']}"},
            "daemons_healthy": {"ok": not r["restarted"] and not r["log"]["errors"]
                                and not r["log"]["tracebacks"],
                                "detail": f"restarted or gone: {r['restarted'] or 'none'}, "
                                          f"{r['log']['errors']} ERROR lines, "
                                          f"{r['log']['tracebacks']} tracebacks"},
        }


# -- report ------------------------------------------------------------------------


def text_report(result):
    cfg = result["config"]
    lines = [f"soak: {cfg['clients']} clients x window {cfg['window']}, mixed, {cfg['iods']} iods; "
             f"per protocol {cfg['warmup']:g} s warm-up round + {cfg['seconds']:g} s; "
             f"{result['machine']['cpus']} CPUs, load average at start "
             f"{result['machine']['loadavg_start'][0]}"]
    for r in result["phases"]:
        load = r["load"]
        lat = load["latency_ms"]
        lines.append(f"{r['proto']}: {load['calls']} calls ({load['calls_per_s']}/s), "
                     f"{load['MBps']} MB/s, {load['error_count']} errors, "
                     f"{load.get('jukebox') or 0} JUKEBOX, "
                     f"{load['retransmits']} retransmissions; latency p50 {lat['p50']} ms, "
                     f"p99 {lat['p99']} ms, max {lat['max']} ms; load average mean "
                     f"{r['loadavg']['mean']}, max {r['loadavg']['max']}")
        lines.append("  CPU (s/s): " + ", ".join(f"{k} {v}" for k, v in r["cpu_util"].items()))
        lines.append("  p50/p99 ms: " + ", ".join(
            f"{op} {v['p50_ms']}/{v['p99_ms']}" for op, v in sorted(load["per_op"].items())))
        for role, f in sorted(r["rss"].items()):
            fds = f"fds {r['fds_reference'][role]['fds']} -> peak {r['fds_peak'].get(role)} -> " \
                  f"{r['fds_after'].get(role, {}).get('fds')}"
            if "first_mib" not in f:
                lines.append(f"  {role:8} RSS: {f['why']}; {fds}")
                continue
            lines.append(f"  {role:8} RSS {f['first_mib']} -> {f['last_mib']} MiB "
                         f"({f['growth_mib']:+} MiB, {f['growth_pct']:+}%, "
                         f"{f['slope_mib_per_min']:+} MiB/min, peak {f['peak_mib']}); {fds}")
        for role in ("nfspd", "iod0", "unlinkd"):
            if r["rss"].get(role, {}).get("curve_s_mib"):
                lines.append(f"  {role} RSS curve (s:MiB): " + " ".join(
                    f"{t}:{v}" for t, v in r["rss"][role]["curve_s_mib"]))
        for name, v in r["verdicts"].items():
            lines.append(f"  [{'PASS' if v['ok'] else 'FAIL'}] {name}: {v['detail']}")
    stop = result["stop"]
    lines.append(f"[{'PASS' if stop['ok'] else 'FAIL'}] clean_stop: `nfsp up` exit "
                 f"{stop['status']}")
    lines.append(f"verdict: {'PASS' if result['ok'] else 'FAIL'}")
    return "\n".join(lines)


# -- CLI ---------------------------------------------------------------------------


class Config:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def _size(ctx, param, value):
    from tools.dev.loadgen import parse_size
    return parse_size(value)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--minutes", default=10.0, show_default=True, type=click.FloatRange(0.05),
              help="Length of the soak, per protocol (after the warm-up round).")
@click.option("--clients", default=64, show_default=True, type=click.IntRange(1, 4096),
              help="Concurrent logical clients (one loadgen process).")
@click.option("--window", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Calls outstanding per client.")
@click.option("--iods", "n_iods", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--proto", type=click.Choice(["udp", "tcp", "both"]), default="both",
              show_default=True, help="both: UDP, then TCP, against the same cluster.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for the cluster, its log and the reports (not one a "
                   "previous soak used).")
@click.option("--warmup", default=120.0, show_default=True, type=click.FloatRange(0.5),
              help="Seconds of the warm-up round before each soak (nfspd's duplicate "
                   "request cache keeps replies 120 s: it is full only after that).")
@click.option("--interval", default=5.0, show_default=True, type=click.FloatRange(0.2),
              help="Seconds between samples of RSS and fd counts.")
@click.option("--rss-bound-mib", default=8.0, show_default=True, type=click.FloatRange(0),
              help="RSS growth allowed over the soak, in MiB ...")
@click.option("--rss-bound-pct", default=5.0, show_default=True, type=click.FloatRange(0),
              help="... or in percent of the RSS at its start (either suffices).")
@click.option("--file-size", default="4M", show_default=True, callback=_size,
              help="Size of the shared file and of each client's own file.")
@click.option("--dir-entries", default=1000, show_default=True, type=click.IntRange(1),
              help="Entries of the directory READDIRPLUS lists.")
def main(minutes, clients, window, n_iods, proto, out_dir, warmup, interval, rss_bound_mib,
         rss_bound_pct, file_size, dir_entries):
    """Run a real cluster (`nfsp up --iods N`) under loadgen's mixed workload;
    check every reply, the daemons' memory and fds, the data. Exit status 1
    if a criterion fails, 2 if the soak could not run."""
    from tools.dev import netns
    if not netns.available():
        raise SoakError("needs root, unshare and nsenter (a private network namespace)")
    out_dir = os.path.abspath(out_dir)
    cluster_dir = os.path.join(out_dir, "cluster")
    if os.path.exists(cluster_dir):
        raise SoakError(f"{cluster_dir} exists (a previous soak's cluster); use another --out")
    os.makedirs(out_dir, exist_ok=True)
    cfg = Config(clients=clients, window=window, iods=n_iods, seconds=minutes * 60,
                 warmup=warmup, interval=interval, rss_bound_mib=rss_bound_mib,
                 rss_bound_pct=rss_bound_pct, file_size=file_size, dir_entries=dir_entries,
                 dir="soak", file="data", export=os.path.join(cluster_dir, "export"),
                 print_every=max(1, round(60 / interval)))
    protos = ["udp", "tcp"] if proto == "both" else [proto]
    result = {"config": dict(cfg.__dict__, protos=protos),
              "machine": {"cpus": os.cpu_count(), "loadavg_start": loadavg()},
              "phases": [], "samples": []}
    del result["config"]["print_every"]
    with netns.Namespace() as ns:
        cluster = Cluster(ns, cluster_dir, n_iods, os.path.join(out_dir, "up.log"))
        try:
            cluster.start()
            click.echo(f"cluster up in {cluster_dir}: {cluster.daemons()}")
            for p in protos:
                result["phases"].append(
                    Phase(cfg, ns, cluster, p, result["samples"], click.echo).run())
        finally:
            rc = cluster.stop()
    result["stop"] = {"status": rc, "ok": rc == 0}
    result["machine"]["loadavg_end"] = loadavg()
    result["ok"] = result["stop"]["ok"] and all(
        v["ok"] for r in result["phases"] for v in r["verdicts"].values())
    text = text_report(result)
    with open(os.path.join(out_dir, "soak.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(out_dir, "soak.txt"), "w") as f:
        f.write(text + "\n")
    click.echo(text)
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
