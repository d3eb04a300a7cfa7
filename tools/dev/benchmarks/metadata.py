"""Metadata rates on loopback, no link caps (issue 15's table): GETATTR,
LOOKUP (random names of a 10,000-entry directory), CREATE+REMOVE,
MKDIR+RMDIR, RENAME (a file of each worker's, back and forth), and
READDIRPLUS calls walking that directory (dircount 4 KiB, maxcount 32 KiB, as
Linux asks), with 1 and 8 concurrent clients, each one call at a time, over
UDP and over TCP. NFSP
with a ``sync`` export (the default: answered once durable) and an ``async``
one, and an ``async`` one with two worker processes (``--workers 2``: the
namespace changes over UDP go to them), against nfs-ganesha (VFS
FSAL: it answers once the system calls are made, with no flush of its own,
i.e. like an ``async`` export). The server's CPU is nfspd's and its
workers'.

8 clients run as 2 loadgen processes of 4 (one per core): a Python client
costs about as much CPU per call as nfspd does, so against a C server the
clients may be what saturates; each row says how busy they were. They run
under SCHED_BATCH (harness.as_remote_client): clients stand for other
machines, whose wake-ups never take a core from the server. They act as
an ordinary user (USER), the owner of the export's root. The
server's own CPU per call (from /proc/PID/stat) is the figure that does not
depend on who else uses the machine. Every row gives the rate of each
procedure in it (creates/s and removes/s of CREATE+REMOVE, ...); an nfspd
row also how its event loop spent the row and what its group commit did
(the flushes a ``sync`` export's replies waited for: ms each, calls each,
the share of the row spent flushing).

The exports live on a journalled file system (tools/dev/benchmarks/ground.py:
a journalled ext4 made for the run where the results directory's file system
has no journal, as on this machine). Where one without a journal is used
anyway (--meta-ground work), the kernel's inode
allocator skips every inode freed in the last ~35 s (README: troubleshooting;
perf: up to 64% of nfspd's CPU under CREATE+REMOVE, in recently_deleted), so
a server measured right after the previous one's removals (its CREATE+REMOVE,
the removal of its tree) would pay for them: each server is then measured only
once SETTLE seconds have passed since the last one's tree went, one server after
another, the rows in the same order for every server.

On a journalled ground (the default) the servers are up together and each row
is measured for each of them in turn, the order rotating from row to row: a
ratio then compares measurements taken seconds apart, not minutes, on a
machine whose speed drifts (this one's moved by a quarter within an hour: two
full runs, one server after another, gave ganesha 2,100 and 2,756 GETATTR/s
from one client, and nfspd's READDIRPLUS ratio 0.68 in one and 0.86 in the
other).

Before the rows, every server gets each row's load, unrecorded, for
``meta_warmup`` seconds (8 clients, over UDP and TCP): what a server that
has run for a while is like. nfspd on PyPy needs it (its JIT compiles the
paths it runs: CREATE+REMOVE from 8 clients over TCP cost it 233, 153 and
134 us of CPU per call in three 8 s rows one after another, from one
client 635, 303 and 237; README, Quick start); on CPython, and for
ganesha, it fills caches.
"""

import contextlib
import os
import time

from nfspd.fs.journal import parent_fsync_suffices_at
from tools.dev.benchmarks import ganesha as ganesha_mod
from tools.dev.benchmarks import ground
from tools.dev.benchmarks.harness import (
    as_remote_client,
    combine,
    loadgen_argv,
    proc_cpu,
    run_loadgens,
)
from tools.dev.benchmarks.links import CpuSampler
from tools.dev.benchmarks.servers import LoopbackGanesha, LoopbackNfsp

OPS = ("getattr", "lookup", "create_remove", "mkdir_rmdir", "rename", "readdirplus")
# The NFS procedures each workload op is made of.
PROCS = {"create_remove": ("create", "remove"), "mkdir_rmdir": ("mkdir", "rmdir")}
CLIENTS = (1, 8)
# NFSv3 over UDP (the workers' steering is UDP's) and over TCP, which is what
# Linux clients use: each connection costs nfspd a task and its wake-ups.
PROTOS = ("udp", "tcp")
NFSP_IODS = 2
WORKERS = 2
EXPORT_OPTIONS = "rw,no_root_squash,insecure"
# The clients act as an ordinary user, as a build or an untar does: a server
# then switches to that user's credentials for each change (nfspd: 4 system
# calls through ctypes, 4 us alone, 6 for a user with other groups than
# the primary one; as root it switches nothing).
USER = 1000
SETTLE = 40.0  # vm.dirty_expire_centisecs (30 s) + the allocator's 5 s, and a margin


def measure(ctx, srv, op, n_clients, entries, seconds, proto="udp"):
    procs = 1 if n_clients == 1 else 2
    specs = [(srv.client_prefix(), as_remote_client(loadgen_argv(
        srv.server, srv.export, proto=proto, workload="meta", ops=op, clients=n_clients // procs,
        client_base=i * (n_clients // procs), window=1, duration=seconds,
        dir_entries=entries, no_prepare=True, uid=USER, gid=USER))) for i in range(procs)]
    pids = srv.pids() if hasattr(srv, "pids") else [srv.pid]
    cpu0 = sum(proc_cpu(pid) for pid in pids)
    # nfspd answers on its event loop's thread, the main one: whether it was
    # busy, held back by the rest of the machine, or waiting for calls.
    loop = (srv.pid, srv.pid) if srv.kind == "nfsp" else None
    flushed0 = srv.group_commit() if srv.kind == "nfsp" else None
    with CpuSampler(thread=loop) as sampler:
        reports = run_loadgens(specs, timeout=seconds + 120, log_dir=ctx.logs,
                               tag=f"meta-{srv.label}-{op}-{n_clients}-{proto}")
    cpu = sum(proc_cpu(pid) for pid in pids) - cpu0
    flushed = srv.group_commit() if flushed0 is not None else None
    total = combine(reports)
    secs = total["seconds"]

    def count(name):
        return sum(r["per_op"].get(name, {}).get("count", 0) for r in reports)
    calls = total["calls"]
    window = (min(r["start"] for r in reports), max(r["end"] for r in reports))
    row = {"server": srv.label, "op": op, "clients": n_clients, "proto": proto,
           "ops_per_s": round(count(op) / secs, 1),
           "per_proc_per_s": {p: round(count(p) / secs, 1) for p in PROCS.get(op, (op,))},
           "p50_ms": max(r["per_op"].get(op, {}).get("p50_ms") or 0 for r in reports),
           "p99_ms": max(r["per_op"].get(op, {}).get("p99_ms") or 0 for r in reports),
           "entries_per_s": round(sum(r["entries"] for r in reports) / secs, 1),
           "server_cpu_us_per_call": round(cpu / calls * 1e6, 1) if calls else None,
           "calls_per_server_cpu_s": round(calls / cpu) if cpu else None,
           "loadgen_cpu_util": total["loadgen_cpu_util"],
           "machine_busy": sampler.busy(window[0], window[1]),
           "nfspd_loop": sampler.thread_share(window[0], window[1]),
           "group_commit": flushes(flushed0, flushed, window[1] - window[0]),
           "errors": total["error_count"], "error_samples": total["error_samples"]}
    loop, gc = row["nfspd_loop"], row["group_commit"]
    ctx.log(f"meta {srv.label} {op} x{n_clients} {proto}: {row['ops_per_s']}/s "
            f"{row['per_proc_per_s']}, {row['entries_per_s']} entries/s, server "
            f"{row['server_cpu_us_per_call']} us CPU/call"
            + (f", loop {loop['on_cpu']:.0%} on a core, {loop['waiting_for_cpu']:.0%} waiting"
               if loop else "")
            + (f", {gc['ms_per_flush']} ms per flush, {gc['calls_per_flush']} calls per flush, "
               f"flushing {gc['flushing']:.0%}" if gc and gc["flushes"] else "")
            + f", {row['errors']} errors")
    return row


def warm_up(ctx, srv, entries, seconds, ops=OPS, protos=PROTOS):
    """The load of each of ``ops`` over each of ``protos`` (every row's, by
    default) for ``seconds``, from 8 clients, not recorded (module docstring)."""
    if seconds <= 0:
        return
    ctx.log(f"meta {srv.label}: warming up, {seconds:g} s of each row's load")
    for op in ops:
        for proto in protos:
            row = measure(ctx, srv, op, max(CLIENTS), entries, seconds, proto)
            if row["errors"]:
                raise RuntimeError(f"warming up {srv.label} failed: {row['error_samples']}")


def flushes(before, after, seconds):
    """What nfspd's group commit did between two of its counters' readings
    (LoopbackNfsp.group_commit), over a row of ``seconds``: what a ``sync``
    export's rows wait for. None for a server without one."""
    if before is None or after is None:
        return None
    n = after["flushes"] - before["flushes"]
    took = after["seconds"] - before["seconds"]
    return {"flushes": n,
            "calls_per_flush": round((after["waits"] - before["waits"]) / n, 2) if n else None,
            "ms_per_flush": round(took / n * 1e3, 3) if n else None,
            "flushing": round(took / seconds, 3) if seconds > 0 else None}


class _Labelled:
    def __init__(self, label, make):
        self.label, self.make = label, make

    def __enter__(self):
        self.srv = self.make().__enter__()
        self.srv.label = self.label
        return self.srv

    def __exit__(self, *exc):
        return self.srv.__exit__(*exc)


def prepare(ctx, srv, entries, tag):
    """The tree every row works in: each client's files and a directory of
    ``entries`` entries."""
    ctx.log(f"meta {srv.label}: preparing a directory of {entries} entries")
    os.chown(srv.export, USER, USER)  # (the user's own, as a home directory is)
    prep, = run_loadgens([(srv.client_prefix(), loadgen_argv(
        srv.server, srv.export, workload="meta", dir_entries=entries,
        prepare_only=True, window=16, uid=USER, gid=USER))], timeout=3600, log_dir=ctx.logs,
        tag=tag)
    if prep.get("errors"):
        raise RuntimeError(f"preparing the metadata tree on {srv.label} failed: {prep}")


def run(ctx):
    with ground.chosen(ctx, ctx.params.meta_ground, "meta-ground") as (base, what):
        result = _run(ctx, base)
    result["ground"] = what
    return result


def _rows():
    return [(op, n, proto) for op in OPS for n in CLIENTS for proto in PROTOS]


def _in_turn(ctx, setups, workdir, entries, seconds, warmup):
    """Every server up at once; each row measured for each server, the first
    of them one further on at every row (module docstring)."""
    rows = []
    with contextlib.ExitStack() as stack:
        servers = []
        for label, make in setups:
            stack.callback(ctx.cleanup, workdir(label))
            srv = stack.enter_context(_Labelled(label, make))
            prepare(ctx, srv, entries, f"meta-{label}-prepare")
            servers.append(srv)
        for srv in servers:
            warm_up(ctx, srv, entries, warmup)
        for i, (op, n, proto) in enumerate(_rows()):
            first = i % len(servers)
            for srv in servers[first:] + servers[:first]:
                rows.append(measure(ctx, srv, op, n, entries, seconds, proto))
    return rows


def _one_server_after_another(ctx, setups, workdir, entries, seconds, warmup, settle):
    """Where a server's removals would slow the next one's creates (a ground
    without a journal): each server alone, once the last one's have settled."""
    rows = []
    removed = None  # when the last server's tree went
    for label, make in setups:
        try:
            with _Labelled(label, make) as srv:
                prepare(ctx, srv, entries, f"meta-{label}-prepare")
                if warmup > 0:
                    warm_up(ctx, srv, entries, warmup)
                    removed = time.monotonic()  # (its own removals settle too)
                if removed is not None:
                    wait = settle - (time.monotonic() - removed)
                    if wait > 0:
                        ctx.log(f"meta {label}: {wait:.0f} s for the last removals to settle")
                        time.sleep(wait)
                for op, n, proto in _rows():
                    rows.append(measure(ctx, srv, op, n, entries, seconds, proto))
        finally:
            ctx.cleanup(workdir(label))
            removed = time.monotonic()
    return rows


def _run(ctx, base):
    p = ctx.params
    seconds = 2.0 if ctx.quick else p.meta_seconds
    entries = 1000 if ctx.quick else p.dir_entries
    warmup = 0.0 if ctx.quick else p.meta_warmup

    def workdir(label):
        path = os.path.join(base, f"meta-{label}")
        os.makedirs(path, exist_ok=True)
        return path
    setups = [
        ("nfsp", lambda: LoopbackNfsp(workdir("nfsp"), NFSP_IODS, EXPORT_OPTIONS)),
        ("nfsp-async", lambda: LoopbackNfsp(workdir("nfsp-async"), NFSP_IODS,
                                            EXPORT_OPTIONS + ",async")),
        # The namespace changes (UDP, as here) made by worker processes.
        (f"nfsp-async-w{WORKERS}", lambda: LoopbackNfsp(
            workdir(f"nfsp-async-w{WORKERS}"), NFSP_IODS, EXPORT_OPTIONS + ",async",
            workers=WORKERS)),
    ]
    missing = ganesha_mod.unavailable(p)
    if missing is None:
        setups.append(("ganesha", lambda: LoopbackGanesha(workdir("ganesha"))))
    # Only where the allocator has that memory (not with --quick, which is a smoke run).
    settle = 0.0 if ctx.quick or parent_fsync_suffices_at(base) else SETTLE
    if settle:
        rows = _one_server_after_another(ctx, setups, workdir, entries, seconds, warmup,
                                        settle)
    else:
        rows = _in_turn(ctx, setups, workdir, entries, seconds, warmup)
    return {"dir_entries": entries, "seconds": seconds, "warmup_s": warmup, "nfsp_iods": NFSP_IODS,
            "settle_s": settle, "baseline_missing": missing, "rows": rows}
