"""Where nfspd spends its time (the issue: where a target is missed,
profile): py-spy samples the running nfspd while a loadgen drives it with
forwarded UDP READs, relayed TCP READs, and GETATTRs; the report lists the
functions holding most samples, by their own time and with their callees.

A separate run from the cost figures: sampling slows the process it samples.
"""

import collections
import os
import re
import shutil
import subprocess

from tools.dev import REPO
from tools.dev.benchmarks.harness import loadgen_argv, run_loadgens
from tools.dev.benchmarks.servers import LoopbackNfsp

IODS = 4
_LINE = re.compile(r":\d+\)$")


def frame_name(frame):
    """'handle (/work/main/nfspd/nfs3.py:120)' -> 'handle (nfspd/nfs3.py)'."""
    frame = _LINE.sub(")", frame.strip())
    return frame.replace(REPO + os.sep, "")


PROJECT = ("nfspd/", "common/", "iod/", "unlinkd/")
# Where trio's loop waits for the network: py-spy counts a thread blocked in
# epoll_wait as active, so these samples are set apart as idle.
IDLE = ("EpollIOManager.get_events",)


def top(raw_path, n=15):
    """py-spy's raw (folded) output -> the frames holding most samples: by
    their own time (any code), and with their callees (the project's code
    only: the entry points hold everything). Percentages are of the samples
    not idle in the event loop's wait."""
    own = collections.Counter()
    incl = collections.Counter()
    total = idle = 0
    with open(raw_path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            count = int(count)
            frames = [frame_name(x) for x in stack.split(";") if x]
            # py-spy puts the thread (and process) first; skip those pseudo-frames.
            frames = [x for x in frames if "(" in x]
            if not frames:
                continue
            if frames[-1].startswith(IDLE):
                idle += count
                continue
            total += count
            own[frames[-1]] += count
            for x in set(frames):
                if any(f"({p}" in x for p in PROJECT):
                    incl[x] += count
    pct = (lambda c: round(100 * c / total, 1)) if total else (lambda c: 0)
    return {"samples": total, "idle_samples": idle,
            "self": [[name, pct(c)] for name, c in own.most_common(n)],
            "inclusive": [[name, pct(c)] for name, c in incl.most_common(n)]}


def profile_run(ctx, srv, name, seconds, **load):
    raw = os.path.join(ctx.logs, f"pyspy-{name}.txt")
    spy = subprocess.Popen(["py-spy", "record", "--pid", str(srv.pid), "--duration",
                            str(int(seconds)), "--rate", "250", "--format", "raw", "--output", raw,
                            "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=open(raw + ".log", "wb"))
    try:
        r, = run_loadgens([(srv.client_prefix(), loadgen_argv(
            srv.server, srv.export, duration=seconds, no_prepare=True, **load))],
            timeout=seconds + 120, log_dir=ctx.logs, tag=f"profile-{name}")
    finally:
        spy.wait(timeout=seconds + 60)
    result = top(raw) if os.path.exists(raw) else {"samples": 0, "self": [], "inclusive": []}
    result.update(load={k: v for k, v in load.items()}, calls_per_s=r["calls_per_s"],
                  MBps=r["MBps"], errors=r["error_count"])
    ctx.log(f"profile {name}: {result['samples']} samples; top: "
            f"{', '.join(f'{f} {p}%' for f, p in result['self'][:3])}")
    return result


def run(ctx):
    if not shutil.which("py-spy"):
        return {"missing": "py-spy not installed (pip: py-spy)", "profiles": {}}
    seconds = 3 if ctx.quick else 10
    profiles = {}
    workdir = ctx.workdir("profile")
    try:
        with LoopbackNfsp(workdir, IODS) as srv:
            prep, = run_loadgens([(srv.client_prefix(), loadgen_argv(
                srv.server, srv.export, proto="tcp", workload="seqread", file_size="64M",
                prepare_only=True))], timeout=3600, log_dir=ctx.logs, tag="profile-prepare")
            meta, = run_loadgens([(srv.client_prefix(), loadgen_argv(
                srv.server, srv.export, workload="meta", dir_entries=100, prepare_only=True))],
                timeout=3600, log_dir=ctx.logs, tag="profile-prepare-meta")
            if prep.get("errors") or meta.get("errors"):
                raise RuntimeError(f"preparing the profile runs failed: {prep} {meta}")
            profiles["udp_read"] = profile_run(ctx, srv, "udp-read", seconds, proto="udp",
                                               workload="seqread", file_size="64M", passes=0,
                                               window=16)
            profiles["tcp_read"] = profile_run(ctx, srv, "tcp-read", seconds, proto="tcp",
                                               workload="seqread", file_size="64M", passes=0,
                                               window=16)
            profiles["getattr"] = profile_run(ctx, srv, "getattr", seconds, proto="udp",
                                              workload="meta", ops="getattr", dir_entries=100,
                                              clients=16, window=1)
    finally:
        ctx.cleanup(workdir)
    return {"iods": IODS, "seconds": seconds, "profiles": profiles}
