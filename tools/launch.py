"""`nfsp launch` and `nfsp stop-iods`: the iods of an iods.conf started and
stopped on their hosts over ssh, every host at once (ClusterShell).

    admin host    nfsp launch --iods iods.conf
                    |  one ssh per iods.conf line, up to --fanout at a time
                    v
    line i of N   nfsp node-iod start --port PORT --ip-id-slot i/N --data-dir D --key K ...
    (HOST:PORT)   nfsp node-iod stop  --port PORT --run-dir R        (for `nfsp stop-iods`)

`nfsp node-iod` is the node side, in this module too (an admin may also run it
by hand). `start` runs `iod` detached -- a session of its own, stdin
/dev/null, stdout and stderr appended to LOG_DIR/iod-PORT.log -- writes
RUN_DIR/iod-PORT.pid, and answers only once the iod answers a PING on
127.0.0.1:PORT (or has died, quoting its log), so ssh returns with a verdict
and the iod outlives it. A pid file naming a live iod of that port means it
is already running: nothing is started. `stop` signals exactly the process the
pid file names, after checking that its command line is an iod of that port
(a pid reused by something else is left alone), SIGTERM and a bounded wait.

Each node answers with one line. `launch` prints one line per iods.conf entry,
in file order: the node's answer, ssh's own error when ssh failed, or the
timeout; its exit status is 1, naming the failed entries, if any failed.
"""

import contextlib
import dataclasses
import fcntl
import itertools
import os
import shlex
import signal
import subprocess
import sys
import time

import click

from common.runtime import logs

DEFAULT_IODS_CONF = "/etc/nfsp/iods.conf"
DEFAULT_KEY = "/etc/nfsp/cluster.key"
DEFAULT_DATA_DIR = "/var/lib/nfsp-iod/{port}"
DEFAULT_RUN_DIR = "/run/nfsp"
DEFAULT_LOG_DIR = "/var/log/nfsp"
READY_SECONDS = 20.0         # node side: iod start-up to its first PONG
STOP_SECONDS = 10.0          # node side: SIGTERM to exit, before SIGKILL
KILL_SECONDS = 5.0
SSH_MARGIN_SECONDS = 30.0    # ssh connection and the remote nfsp's start, on top of the above
SSH_FAILED = 255             # ssh's own exit status when it could not run the command
NOT_FOUND = 127              # the remote shell's, when the command does not exist
LOG_TAIL_BYTES = 4096


# -- node side: `nfsp node-iod start|stop` --------------------------------------------

def _pid_path(run_dir, port):
    return os.path.join(run_dir, f"iod-{port}.pid")


def _read_pid(path):
    try:
        with open(path) as f:
            text = f.read(64).strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else 0   # 0: there, but garbage


def is_iod(pid, port):
    """Whether ``pid`` is a live (not zombie) iod serving ``port``, as
    `node-iod start` runs it: python -m iod.cli ... --port PORT."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except (OSError, IndexError):
        return False
    if state in (b"Z", b"X"):
        return False
    pairs = set(itertools.pairwise(argv))
    return (b"-m", b"iod.cli") in pairs and (b"--port", str(port).encode()) in pairs


def running_iod(run_dir, port):
    """The pid of the iod `node-iod start` left running on ``port``, or None."""
    pid = _read_pid(_pid_path(run_dir, port))
    return pid if pid and is_iod(pid, port) else None


@contextlib.contextmanager
def _exclusive(run_dir, port):
    """One `node-iod` at a time per iod: two admins starting the same iod at
    once would otherwise both see no pid file."""
    os.makedirs(run_dir, 0o755, exist_ok=True)
    fd = os.open(os.path.join(run_dir, f"iod-{port}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise click.ClickException(f"another `nfsp node-iod` is starting or stopping the "
                                       f"iod on port {port} right now") from None
        yield
    finally:
        os.close(fd)


def _answers(port, keys, timeout):
    from tools.iod_ping import ping, resolve
    target = resolve("iod", "127.0.0.1", port)
    ping([target], keys, timeout)
    return target.pong is not None


def _log_tail(path, since):
    """The last line the iod wrote to its log since ``since`` (a byte offset)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(since, os.fstat(f.fileno()).st_size - LOG_TAIL_BYTES))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    return lines[-1] if lines else "(nothing logged)"


def _wait_gone(pid, port, timeout):
    deadline = time.monotonic() + timeout
    while is_iod(pid, port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _terminate(pid, port, timeout):
    """SIGTERM, then SIGKILL past ``timeout``; "stopped" or "killed"."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, port, timeout):
        return "stopped"
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, port, KILL_SECONDS)
    return "killed"


def _describe_exit(rc):
    return f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"status {rc}"


@click.group("node-iod", context_settings={"help_option_names": ["-h", "--help"]})
def node_iod():
    """This node's iod, run detached (what `nfsp launch` and `nfsp stop-iods` run over ssh)."""


_port_opt = click.option("--port", required=True, type=click.IntRange(1, 65535),
                         help="The iod's port (UDP and TCP): it names the iod on this node.")
_run_dir_opt = click.option("--run-dir", default=DEFAULT_RUN_DIR, show_default=True,
                            type=click.Path(file_okay=False),
                            help="Where the pid file iod-PORT.pid lives.")


@node_iod.command("start")
@_port_opt
@click.option("--ip-id-slot", default="0/1", show_default=True, metavar="I/N",
              help="Passed to iod: this iod's slice of the IPv4 identification space.")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False))
@click.option("--key", "key_path", default=DEFAULT_KEY, show_default=True,
              type=click.Path(dir_okay=False))
@click.option("--user", default="nobody", show_default=True,
              help="The unprivileged user the iod runs as once started.")
@_run_dir_opt
@click.option("--log-dir", default=DEFAULT_LOG_DIR, show_default=True,
              type=click.Path(file_okay=False), help="The iod's output goes to iod-PORT.log here.")
@click.option("--log-level", type=click.Choice(logs.LEVELS), default="info", show_default=True)
@click.option("--ready-timeout", default=READY_SECONDS, show_default=True,
              type=click.FloatRange(0.5, 600), help="Seconds the iod has to answer a PING.")
@click.option("--pong-allow", multiple=True, metavar="CIDR",
              help="Passed to iod (repeatable): who may ask for a spoofed PONG, e.g. the "
                   "metaserver's network for `iod_ping --spoof-from` (iod's default: loopback).")
def node_start(port, ip_id_slot, data_dir, key_path, user, run_dir, log_dir, log_level,
               ready_timeout, pong_allow):
    """Start this node's iod on PORT, detached; answer once it answers a PING.

    Prints one line: "started (...)" or "already running (...)"; exit status 1
    with the reason (the iod's last log line if it died) otherwise."""
    from common import keyfile
    try:
        keys = keyfile.load(key_path)
    except keyfile.KeyFileError as e:
        raise click.ClickException(str(e)) from None
    log_path = os.path.join(log_dir, f"iod-{port}.log")
    pid_path = _pid_path(run_dir, port)
    with _exclusive(run_dir, port):
        pid = running_iod(run_dir, port)
        if pid is not None:
            if not _answers(port, keys, 1.0):
                raise click.ClickException(f"already running (pid {pid}) but not answering "
                                           f"PING on 127.0.0.1:{port}; see {log_path}")
            click.echo(f"already running (pid {pid})")
            return
        os.makedirs(log_dir, 0o755, exist_ok=True)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        since = os.fstat(log_fd).st_size
        argv = [sys.executable, "-m", "iod.cli", "--data-dir", data_dir, "--key", key_path,
                "--port", str(port), "--user", user, "--ip-id-slot", ip_id_slot,
                "--log-level", log_level]
        for cidr in pong_allow:
            argv += ["--pong-allow", cidr]
        os.write(log_fd, f"--- nfsp node-iod start, {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                         f"{shlex.join(argv)}\n".encode())
        try:
            # Its own session, and no descriptor of ours: ssh sees EOF and
            # returns, and hanging up the session does not reach the iod.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_fd,
                                    stderr=subprocess.STDOUT, cwd="/", start_new_session=True,
                                    close_fds=True)
        finally:
            os.close(log_fd)
        tmp = f"{pid_path}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{proc.pid}\n")
        os.replace(tmp, pid_path)
        deadline = time.monotonic() + ready_timeout
        while True:
            rc = proc.poll()
            if rc is not None:
                os.unlink(pid_path)
                raise click.ClickException(f"iod exited at start ({_describe_exit(rc)}): "
                                           f"{_log_tail(log_path, since)}")
            if _answers(port, keys, 0.25):
                click.echo(f"started (pid {proc.pid}; log {log_path})")
                return
            if time.monotonic() >= deadline:
                how = _terminate(proc.pid, port, STOP_SECONDS)
                proc.poll()
                os.unlink(pid_path)
                raise click.ClickException(f"iod (pid {proc.pid}) did not answer PING within "
                                           f"{ready_timeout:g} s; {how} it. Last log line: "
                                           f"{_log_tail(log_path, since)}")


@node_iod.command("stop")
@_port_opt
@_run_dir_opt
@click.option("--timeout", default=STOP_SECONDS, show_default=True,
              type=click.FloatRange(0.1, 600),
              help="Seconds between SIGTERM and SIGKILL.")
def node_stop(port, run_dir, timeout):
    """Stop the iod that `node-iod start` left running on PORT (and only it).

    Prints one line: "stopped", "killed" (it ignored SIGTERM for --timeout
    seconds) or "not running"; each leaves no iod of that port behind."""
    pid_path = _pid_path(run_dir, port)
    with _exclusive(run_dir, port):
        pid = _read_pid(pid_path)
        if pid is None:
            click.echo(f"not running (no {pid_path})")
            return
        if not pid or not is_iod(pid, port):
            os.unlink(pid_path)
            click.echo(f"not running (stale {pid_path}, removed)")
            return
        how = _terminate(pid, port, timeout)
        os.unlink(pid_path)
        if how == "stopped":
            click.echo(f"stopped (pid {pid})")
        else:
            click.echo(f"killed (pid {pid}: still running {timeout:g} s after SIGTERM)")


# -- admin side: `nfsp launch`, `nfsp stop-iods` ----------------------------------------

@dataclasses.dataclass
class Entry:
    index: int
    host: str
    port: int

    @property
    def name(self):
        return f"{self.host}:{self.port}"


@dataclasses.dataclass
class Outcome:
    ok: bool
    message: str


class Remote:
    """Commands and copies on many hosts at once through ClusterShell's ssh
    worker: one worker per job, so each job has its own buffers and exit
    status even when two jobs go to the same host."""

    def __init__(self, user, options, connect_timeout, fanout):
        try:
            from ClusterShell.Task import task_self
        except ImportError:
            raise click.ClickException("ClusterShell is not installed "
                                       "(pip install ClusterShell)") from None
        self.task = task_self()
        self.task.set_info("ssh_user", user)
        self.task.set_info("ssh_options", shlex.join(options))
        self.task.set_info("connect_timeout", connect_timeout)
        self.task.set_info("fanout", fanout)

    def _collect(self, workers, timeout):
        out = {}
        for job, (worker, host) in workers.items():
            if host in set(worker.iter_keys_timeout()):
                out[job] = Outcome(False, f"no answer within {timeout:g} s")
                continue
            try:
                rc = worker.node_retcode(host)
            except KeyError:   # never started (e.g. the task was aborted)
                out[job] = Outcome(False, "not run")
                continue
            stdout = _lines(worker.node_buffer(host))
            stderr = _lines(worker.node_error(host))
            if rc == 0:
                out[job] = Outcome(True, stdout[-1] if stdout else "done")
            else:
                why = (stderr or stdout or [f"exit status {rc}"])[-1]
                out[job] = Outcome(False, why.removeprefix("Error: "))
                if rc == NOT_FOUND:
                    out[job].message += " (is NFSP installed there? see --remote-nfsp)"
        self.task.flush_buffers()
        self.task.flush_errors()
        return out

    def shell(self, jobs, timeout):
        """jobs: {job: (host, command)} -> {job: Outcome}."""
        workers = {job: (self.task.shell(cmd, nodes=host, timeout=timeout, stderr=True,
                                         stdin=False, tree=False), host)
                   for job, (host, cmd) in jobs.items()}
        self.task.run()
        return self._collect(workers, timeout)

    def copy(self, jobs, timeout):
        """jobs: {job: (host, local source, remote dest)} -> {job: Outcome}.
        Modes are preserved (scp -p): a key stays 0600."""
        workers = {job: (self.task.copy(src, dest, nodes=host, timeout=timeout, stderr=True,
                                        preserve=True, tree=False), host)
                   for job, (host, src, dest) in jobs.items()}
        self.task.run()
        return self._collect(workers, timeout)


def _lines(buf):
    if buf is None:
        return []
    text = buf.decode(errors="replace") if isinstance(buf, bytes) else str(buf)
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def _entries(iods_conf):
    from common.iodsconf import IodsConfError, load_iods
    try:
        iods = load_iods(iods_conf)
    except IodsConfError as e:
        raise click.ClickException(str(e)) from None
    return [Entry(i, host, port) for i, (host, port) in enumerate(iods)]


def _expand(template, entry, option):
    try:
        path = template.format(host=entry.host, port=entry.port)
    except (KeyError, IndexError, ValueError):
        raise click.BadParameter(f"{template!r}: the only fields are {{host}} and {{port}}",
                                 param_hint=option) from None
    if not os.path.isabs(path):
        raise click.BadParameter(f"{template!r}: the node needs an absolute path",
                                 param_hint=option)
    return path


def _ssh_options(ssh_config, identity, options):
    out = []
    if ssh_config:
        out += ["-F", ssh_config]
    if identity:
        out += ["-i", identity]
    for opt in options:
        out += ["-o", opt]
    return out


def _report(entries, outcomes, done_word):
    width = max(len(e.name) for e in entries)
    failed = []
    for e in entries:
        o = outcomes[e.index]
        click.echo(f"{e.name:<{width}}  {o.message if o.ok else 'FAILED: ' + o.message}")
        if not o.ok:
            failed.append(e.name)
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(entries)} iods failed: "
                                   f"{', '.join(failed)}")
    click.echo(f"all {len(entries)} iods {done_word}")


def _ssh_opts(f):
    for opt in reversed([
        click.option("--iods", "iods_conf", default=DEFAULT_IODS_CONF, show_default=True,
                     type=click.Path(dir_okay=False),
                     help="The iods, host[:port] per line: ssh goes to each host as written."),
        click.option("--ssh-user", help="Log in as this user (default: ssh's choice).  The "
                                        "iod needs root at start (raw socket, then it drops "
                                        "to --user): with another user, use --remote-nfsp "
                                        "'sudo nfsp'."),
        click.option("--ssh-config", type=click.Path(exists=True, dir_okay=False),
                     help="ssh configuration file (ssh -F)."),
        click.option("--identity", type=click.Path(exists=True, dir_okay=False),
                     help="Private key to log in with (ssh -i)."),
        click.option("--ssh-option", "ssh_options", multiple=True, metavar="KEY=VALUE",
                     help="An ssh -o option, e.g. UserKnownHostsFile=FILE; repeatable."),
        click.option("--connect-timeout", default=10, show_default=True,
                     type=click.IntRange(1, 3600), help="Seconds for each ssh to connect."),
        click.option("--fanout", default=64, show_default=True, type=click.IntRange(1, 4096),
                     help="ssh connections at once."),
        click.option("--remote-nfsp", default="nfsp", show_default=True,
                     help="The nfsp command on the nodes, as their shell reads it "
                          "(e.g. '/opt/nfsp/bin/nfsp' or 'sudo nfsp')."),
        _run_dir_opt,
    ]):
        f = opt(f)
    return f


@click.command("launch", context_settings={"help_option_names": ["-h", "--help"]})
@_ssh_opts
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True,
              help="Each iod's data directory on its node. {host} and {port} are replaced by "
                   "the iods.conf entry's (e.g. /scratch/nfsp/{host} on a shared file system).")
@click.option("--key", "key_path", default=DEFAULT_KEY, show_default=True,
              help="The cluster key's path on the nodes ({host} and {port} replaced too).")
@click.option("--copy-key", type=click.Path(exists=True, dir_okay=False), metavar="LOCAL_KEY",
              help="First copy this local key file to --key on every node (scp, mode 0600 "
                   "kept; its directory is created). Without it the key must be there.")
@click.option("--log-dir", default=DEFAULT_LOG_DIR, show_default=True,
              help="Where each iod's output goes on its node (iod-PORT.log).")
@click.option("--user", default="nobody", show_default=True,
              help="The unprivileged user the iods run as.")
@click.option("--log-level", type=click.Choice(logs.LEVELS), default="info", show_default=True)
@click.option("--ready-timeout", default=READY_SECONDS, show_default=True,
              type=click.FloatRange(0.5, 600),
              help="Seconds each iod has to answer a PING on its node.")
@click.option("--pong-allow", multiple=True, metavar="CIDR",
              help="Passed to iod (repeatable): who may ask for a spoofed PONG, e.g. the "
                   "metaserver's network for `iod_ping --spoof-from` (iod's default: loopback).")
def launch(iods_conf, ssh_user, ssh_config, identity, ssh_options, connect_timeout, fanout,
           remote_nfsp, run_dir, data_dir, key_path, copy_key, log_dir, user, log_level,
           ready_timeout, pong_allow):
    """Start the iods listed in iods.conf, on their hosts, over ssh (all at once).

    On each host runs `nfsp node-iod start`: iod detached, its pid in
    RUN_DIR/iod-PORT.pid, its output in LOG_DIR/iod-PORT.log, IP-ID slot i/N
    from its position in iods.conf; the answer comes once the iod answers a
    PING there. An iod already running is left as it is. Prints one line per
    iod; exit status 1 if any failed (the last line names them)."""
    entries = _entries(iods_conf)
    n = len(entries)
    paths = {e.index: {"data": _expand(data_dir, e, "--data-dir"),
                       "key": _expand(key_path, e, "--key"),
                       "run": _expand(run_dir, e, "--run-dir"),
                       "log": _expand(log_dir, e, "--log-dir")} for e in entries}
    remote = Remote(ssh_user, _ssh_options(ssh_config, identity, ssh_options), connect_timeout,
                    fanout)
    outcomes = {}
    pending = list(entries)
    if copy_key:
        from common import keyfile
        try:
            keyfile.load(copy_key)   # a readable, private key file: scp -p keeps its mode
        except keyfile.KeyFileError as e:
            raise click.ClickException(str(e)) from None
        pending = _copy_key(remote, pending, paths, copy_key, outcomes, connect_timeout)
    timeout = ready_timeout + STOP_SECONDS + SSH_MARGIN_SECONDS
    jobs = {}
    for e in pending:
        p = paths[e.index]
        jobs[e.index] = (e.host, remote_nfsp + " " + shlex.join([
            "node-iod", "start", "--port", str(e.port), "--ip-id-slot", f"{e.index}/{n}",
            "--data-dir", p["data"], "--key", p["key"], "--user", user, "--run-dir", p["run"],
            "--log-dir", p["log"], "--log-level", log_level,
            "--ready-timeout", f"{ready_timeout:g}",
            *(arg for cidr in pong_allow for arg in ("--pong-allow", cidr))]))
    if jobs:
        outcomes.update(remote.shell(jobs, timeout))
    _report(entries, outcomes, "running")


def _copy_key(remote, entries, paths, local_key, outcomes, connect_timeout):
    """Put the key on every node (once per host and path); the entries whose
    copy worked, the others' outcomes recorded.

    The copy goes to a temporary name and is then renamed over the key: when
    a node is this host (or shares its file system), scp straight onto the
    key would truncate the very file it reads from."""
    timeout = connect_timeout + SSH_MARGIN_SECONDS
    targets = {}
    for e in entries:
        targets.setdefault((e.host, paths[e.index]["key"]), []).append(e)
    tmp = {t: f"{t[1]}.nfsp-new-{t[0]}-{os.getpid()}" for t in targets}
    steps = [
        ("creating the key's directory", lambda todo: remote.shell(
            {t: (t[0], shlex.join(["mkdir", "-p", "--", os.path.dirname(t[1])])) for t in todo},
            timeout)),
        ("copying the key", lambda todo: remote.copy(
            {t: (t[0], local_key, tmp[t]) for t in todo}, timeout)),
        ("installing the key", lambda todo: remote.shell(
            {t: (t[0], shlex.join(["mv", "-f", "--", tmp[t], t[1]])) for t in todo}, timeout)),
    ]
    failures = {}
    for what, step in steps:
        todo = [t for t in targets if t not in failures]
        if not todo:
            break
        for t, o in step(todo).items():
            if not o.ok:
                failures[t] = f"{what} ({t[1]}): {o.message}"
    kept = []
    for t, group in targets.items():
        for e in group:
            if t in failures:
                outcomes[e.index] = Outcome(False, failures[t])
            else:
                kept.append(e)
    return sorted(kept, key=lambda e: e.index)


@click.command("stop-iods", context_settings={"help_option_names": ["-h", "--help"]})
@_ssh_opts
@click.option("--stop-timeout", default=STOP_SECONDS, show_default=True,
              type=click.FloatRange(0.1, 600),
              help="Seconds each iod has to exit after SIGTERM before it is killed.")
def stop_iods(iods_conf, ssh_user, ssh_config, identity, ssh_options, connect_timeout, fanout,
              remote_nfsp, run_dir, stop_timeout):
    """Stop the iods `nfsp launch` started on the hosts of iods.conf (over ssh, all at once).

    On each host runs `nfsp node-iod stop`: SIGTERM to the process named by
    RUN_DIR/iod-PORT.pid if it is an iod of that port, then a bounded wait
    (SIGKILL past --stop-timeout). An iod not running counts as stopped.
    Prints one line per iod; exit status 1 if any host failed."""
    entries = _entries(iods_conf)
    remote = Remote(ssh_user, _ssh_options(ssh_config, identity, ssh_options), connect_timeout,
                    fanout)
    jobs = {e.index: (e.host, remote_nfsp + " " + shlex.join([
        "node-iod", "stop", "--port", str(e.port), "--run-dir", _expand(run_dir, e, "--run-dir"),
        "--timeout", f"{stop_timeout:g}"])) for e in entries}
    timeout = stop_timeout + KILL_SECONDS + SSH_MARGIN_SECONDS
    _report(entries, remote.shell(jobs, timeout), "stopped")
