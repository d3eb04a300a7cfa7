"""What every benchmark needs: loadgen processes started inside namespaces
and their reports gathered, CPU time of a process and of the machine, and
the facts about the machine that bound every figure."""

import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time

from tools.dev import REPO, daemon_python


@dataclasses.dataclass
class Params:
    """The scale of a run: the default fits this 2-core machine in well under
    an hour; --full is the issue's (256 MiB files, longer runs)."""
    file_mib: int = 64
    rates: tuple = ("100mbit", "1gbit")
    clients: tuple = (1, 2, 4, 8)
    iods: tuple = (1, 2, 4, 8)
    mscost_iods: tuple = (1, 2, 4, 8, 16)
    run_seconds: float = 20.0      # cap on one figure-5 point
    nfsp_protos: tuple = ("udp",)
    # ganesha over UDP drops replies once its socket's send buffer is full
    # (no flow control, "send buffer errors" in its namespace): TCP is what
    # its users would run, so both are measured.
    ganesha_protos: tuple = ("udp", "tcp")
    window: int = 16
    meta_seconds: float = 5.0
    # Unrecorded load on each metadata server before its rows (metadata.py).
    meta_warmup: float = 3.0
    dir_entries: int = 10000
    # Where the metadata benchmark's exports live: "journalled" (a journalled
    # ext4 made for the run where the results' file system has no journal,
    # ground.py) or "work" (the results' file system, whatever it is).
    meta_ground: str = "journalled"
    ganesha: bool = True
    # Testbed clients' net.ipv4.ipfrag_max_dist (None: the kernel's 64); see
    # servers.TestbedServer._tune_clients.
    ipfrag_max_dist: int | None = 0


class Context:
    """One `run`: where results, logs and scratch data go."""

    def __init__(self, out, params, quick=False, keep=False):
        self.out = os.path.abspath(out)
        self.params = params
        self.quick = quick
        self.keep = keep
        self.logs = os.path.join(self.out, "logs")
        self.work = os.path.join(self.out, "work")
        os.makedirs(self.logs, exist_ok=True)
        os.makedirs(self.work, exist_ok=True)
        self.t0 = time.monotonic()

    def log(self, message):
        line = f"[{time.monotonic() - self.t0:7.1f}s] {message}"
        print(line, file=sys.stderr, flush=True)
        with open(os.path.join(self.logs, "run.log"), "a") as f:
            f.write(line + "\n")

    def workdir(self, name):
        path = os.path.join(self.work, name)
        os.makedirs(path, exist_ok=True)
        return path

    def cleanup(self, path):
        if not self.keep:
            shutil.rmtree(path, ignore_errors=True)


def loadgen_argv(server, export, **opts):
    """``python3 -m tools.dev.loadgen`` with options given as keywords
    (``per_client=True`` -> ``--per-client``, ``file_size="64M"``)."""
    argv = [sys.executable, "-m", "tools.dev.loadgen", "--server", server, "--export", export, "--json"]
    for key, value in opts.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        else:
            argv += [flag, str(value)]
    return argv


def as_remote_client(argv):
    """``argv`` run as a client that stands for another machine: under
    SCHED_BATCH, which keeps its share of the CPU but lets it preempt no one
    when it wakes. A client on its own machine never takes the server's core
    from it; here, on 2 shared cores, each reply woke a load generator that
    preempted the server on its way out (nfspd, one thread: 10,400 involuntary
    switches in 8 s and 35% of its time waiting for a core under
    CREATE+REMOVE, 8 clients, TCP; with this, 2,800 and 15-24%). ganesha's rates
    do not move (its other threads go on on the other core)."""
    return ["chrt", "--batch", "0", *argv]


def child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class LoadgenError(RuntimeError):
    pass


def run_loadgens(specs, timeout, log_dir, tag):
    """Start every ``(argv_prefix, argv)`` at once (argv_prefix turns argv
    into one that runs inside a namespace) and return their JSON reports,
    in order. A process that prints no report raises LoadgenError with its
    stderr; one that reports errors is returned as is (its exit status 1
    only says there were errors)."""
    procs = []
    for i, (prefix, argv) in enumerate(specs):
        err = open(os.path.join(log_dir, f"loadgen-{tag}-{i}.log"), "wb")
        procs.append((subprocess.Popen(prefix(argv), stdout=subprocess.PIPE, stderr=err,
                                       stdin=subprocess.DEVNULL, env=child_env(), cwd=REPO,
                                       start_new_session=True), err))
    reports = []
    deadline = time.monotonic() + timeout
    try:
        for i, (p, err) in enumerate(procs):
            try:
                out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise LoadgenError(
                    f"loadgen {tag}-{i} still running after {timeout:.0f}s") from None
            err.close()
            try:
                reports.append(json.loads(out.decode().strip().splitlines()[-1]))
            except (ValueError, IndexError):
                with open(err.name, "rb") as f:
                    text = f.read().decode(errors="replace")[-2000:]
                raise LoadgenError(f"loadgen {tag}-{i} exited {p.returncode} without a report:\n"
                                   f"{text}") from None
    finally:
        for p, err in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            err.close()
    return reports


def combine(reports):
    """Several processes' reports as one: aggregate MB/s over the span from
    the first start to the last end (the paper's 'total bandwidth')."""
    start = min(r["start"] for r in reports)
    end = max(r["end"] for r in reports)
    span = max(end - start, 1e-9)
    moved = sum(r["bytes_read"] + r["bytes_written"] for r in reports)
    errors = {}
    for r in reports:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return {
        "seconds": round(span, 3),
        "start_skew_s": round(max(r["start"] for r in reports) - start, 3),
        "bytes": moved,
        "MBps": round(moved / span / 1e6, 2),
        "ops": sum(r["ops"] for r in reports),
        "ops_per_s": round(sum(r["ops"] for r in reports) / span, 1),
        "calls": sum(r["calls"] for r in reports),
        "errors": errors, "error_count": sum(errors.values()),
        "error_samples": [s for r in reports for s in r["error_samples"]][:5],
        "retransmits": sum(r["retransmits"] for r in reports),
        "jukebox": sum(r.get("jukebox", 0) for r in reports),
        "reconnects": sum(r.get("reconnects", 0) for r in reports),
        "p50_ms": max((r["latency_ms"]["p50"] or 0) for r in reports),
        "p99_ms": max((r["latency_ms"]["p99"] or 0) for r in reports),
        "loadgen_cpu_util": [r["cpu_util"] for r in reports],
        "per_process_MBps": [r["MBps"] for r in reports],
    }


def proc_cpu(pid):
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class MachineCpu:
    """How busy the machine's CPUs were between start() and stop(): 1.0 is
    every core busy (whoever used it: other work on the machine counts)."""

    @staticmethod
    def _sample():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    def start(self):
        self.t0 = self._sample()
        return self

    def stop(self):
        total, idle = self._sample()
        dt = total - self.t0[0]
        return round(1 - (idle - self.t0[1]) / dt, 3) if dt else None


def rate_MBps(rate):
    """'100mbit' -> 12.5 (MB/s on the wire)."""
    text = rate.lower()
    for suffix, mult in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if text.endswith(suffix):
            return float(text[:-len(suffix)]) * mult / 8 / 1e6
    raise ValueError(rate)


CPUIDLE = "/sys/devices/system/cpu/cpuidle/current_driver"
HALT_POLL = "/sys/module/haltpoll/parameters/guest_halt_poll_ns"


def cpuidle():
    """How an idle CPU waits here: the cpuidle driver, and for a VM's
    haltpoll how long it polls before it halts the vCPU (0: at once, and
    each wake-up is then a trip through the host). With one client a server
    waits between every two calls: measured here with 0 against the
    kernel's default of 200000, nfspd's and ganesha's CPU per GETATTR
    doubled (README, issue 15). None where the kernel does not say."""
    def read(path):
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            return None
    driver = read(CPUIDLE)
    if driver is None:
        return None
    poll = read(HALT_POLL) if driver == "haltpoll" else None
    return {"driver": driver, "guest_halt_poll_ns": int(poll) if poll is not None else None}


def _first_line(argv):
    """The first line a command prints (a version), or None."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return None


def daemons_python():
    """The daemons' interpreter where it is not the harness's own (NFSP_PYTHON,
    tools/dev.daemon_python): its path, implementation (CPython, PyPy) and
    version; else None."""
    python = daemon_python()
    if python == sys.executable:
        return None
    line = _first_line([python, "-c", "import platform; print(platform.python_implementation(), "
                                      "platform.python_version())"]) or ""
    implementation, _, version = line.partition(" ")
    return {"path": python, "implementation": implementation or None, "version": version or None}


def environment():
    return {
        "cpus": os.cpu_count(), "loadavg": os.getloadavg(), "kernel": platform.release(),
        "python": platform.python_version(), "machine": platform.machine(),
        "daemons_python": daemons_python(),
        "cpuidle": cpuidle(),
        "ganesha": _first_line(["ganesha.nfsd", "-v"]) if shutil.which("ganesha.nfsd") else None,
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def limited_by(link_util, machine_busy, retransmits=0, calls=1):
    """A one-phrase guess at what bounds a throughput figure."""
    if link_util is not None and link_util >= 0.85:
        return "link"
    if machine_busy is not None and machine_busy >= 0.9:
        return "CPU"
    if calls and retransmits / max(calls, 1) > 0.01:
        return "losses"
    return "latency"
