"""The embedded cluster of `nfsp up`: where its directory keeps each file, and
how the admin commands (`nfsp status`, `nfsp scrub`, `iod_ping`) find it.

A running `nfsp up` leaves a record in RUN_DIR naming its directory (removed
when it stops; one left by a killed `nfsp up` is recognised as stale by its
pid's start time). A command given no option naming the cluster's files uses,
in this order: the directory of ``--dir DIR``; the system's cluster (/etc/nfsp,
/var/lib/nfsp) when this host has one configured; the one `nfsp up` runs.
"""

import dataclasses
import json
import os

import click

RUN_DIR = "/run/nfsp"
RECORD_PREFIX = "up-"


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a cluster keeps what nfspd's --exports, --iods, --key and
    --state-dir name."""
    exports: str
    iods_conf: str
    key: str
    state: str


SYSTEM = Layout(exports="/etc/nfsp/exports", iods_conf="/etc/nfsp/iods.conf",
                key="/etc/nfsp/cluster.key", state="/var/lib/nfsp")


@dataclasses.dataclass(frozen=True)
class Directory(Layout):
    """The directory of `nfsp up DIR`: the files of Layout, plus the exported
    tree and one data directory per iod."""
    path: str
    export: str

    def data_dir(self, i):
        return os.path.join(self.path, f"iod{i}")


def directory(path):
    path = os.path.abspath(path)
    return Directory(exports=os.path.join(path, "exports"),
                     iods_conf=os.path.join(path, "iods.conf"),
                     key=os.path.join(path, "cluster.key"),
                     state=os.path.join(path, "state"),
                     path=path, export=os.path.join(path, "export"))


# --- the record of a running `nfsp up` ------------------------------------------------


def _start_time(pid):
    """The process's start time (clock ticks since boot, /proc/PID/stat field
    22), which tells it from a later process given the same pid; None if there
    is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from its end.
    return int(stat[stat.rindex(b")") + 2:].split()[19])


@dataclasses.dataclass(frozen=True)
class Running:
    path: str      # the directory
    pid: int
    bind: str
    port: int

    def describe(self):
        return f"the cluster `nfsp up` runs in {self.path} (pid {self.pid})"


def record(path, bind, port):
    """Say that this process runs the embedded cluster in ``path``; returns the
    record's file name, for forget()."""
    os.makedirs(RUN_DIR, mode=0o755, exist_ok=True)
    pid = os.getpid()
    name = os.path.join(RUN_DIR, f"{RECORD_PREFIX}{pid}.json")
    tmp = name + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"directory": os.path.abspath(path), "pid": pid,
                   "start_time": _start_time(pid), "bind": bind, "port": port}, f)
    os.rename(tmp, name)
    return name


def forget(name):
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass


def running():
    """The embedded clusters running on this host, by directory. Stale
    records (their `nfsp up` was killed) are skipped."""
    try:
        names = sorted(os.listdir(RUN_DIR))
    except OSError:
        return []
    found = []
    for name in names:
        if not (name.startswith(RECORD_PREFIX) and name.endswith(".json")):
            continue
        try:
            with open(os.path.join(RUN_DIR, name)) as f:
                r = json.load(f)
            if _start_time(r["pid"]) != r["start_time"]:
                continue
            found.append(Running(r["directory"], r["pid"], r["bind"], r["port"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue   # half written, or not ours
    return sorted(found, key=lambda r: r.path)


# --- the daemons `nfsp up` supervises ------------------------------------------------


DAEMONS_FILE = "nfsp-up.json"


class DaemonsFile:
    """STATE_DIR/nfsp-up.json: each daemon `nfsp up` runs (pid, state, uptime,
    restarts, down time, recent starts and exits), rewritten at every change,
    for `nfsp status`. It names the `nfsp up` that wrote it, so one left by a
    killed `nfsp up` is known stale."""

    def __init__(self, state_dir):
        self.path = os.path.join(state_dir, DAEMONS_FILE)
        pid = os.getpid()
        self.writer = {"pid": pid, "start_time": _start_time(pid)}

    def write(self, supervisor):
        tmp = f"{self.path}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(dict(self.writer, daemons=supervisor.status()), f)
            os.rename(tmp, self.path)
        except OSError:
            pass   # status only: serving goes on without it

    def remove(self):
        forget(self.path)


def daemons(state_dir):
    """What a running `nfsp up` says of its daemons (a list of dicts), or None
    when no live `nfsp up` serves that state directory."""
    try:
        with open(os.path.join(state_dir, DAEMONS_FILE)) as f:
            doc = json.load(f)
        if _start_time(doc["pid"]) != doc["start_time"]:
            return None
        return list(doc["daemons"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --- which cluster a command talks to -------------------------------------------------


def system_configured():
    return any(os.path.exists(p) for p in (SYSTEM.exports, SYSTEM.iods_conf, SYSTEM.key))


def choose(dir_option):
    """(Layout, note) of the cluster a command uses for the files no option of
    its own names: --dir's directory; else the system's if this host has one
    configured; else the one `nfsp up` runs, with a note that says so (for
    stderr). With none of them, the system's: the command's error then names
    the file it misses. Several `nfsp up` running: a usage error."""
    if dir_option is not None:
        return directory(dir_option), None
    if system_configured():
        return SYSTEM, None
    ups = running()
    if len(ups) > 1:
        raise click.UsageError(
            "several `nfsp up` are running (" + ", ".join(f"{r.path}, pid {r.pid}" for r in ups)
            + "): say which with --dir DIR")
    if ups:
        return directory(ups[0].path), f"using {ups[0].describe()}"
    return SYSTEM, None


DIR_HELP = ("The directory of `nfsp up DIR`: use its cluster. [default: the system's cluster "
            "(/etc/nfsp, /var/lib/nfsp) if this host has one, else the one `nfsp up` runs]")


def dir_option(f):
    """The --dir option, the same for every command that talks to a cluster."""
    return click.option("--dir", "up_dir", type=click.Path(file_okay=False),
                        help=DIR_HELP)(f)
