"""An emulated NFSP cluster on one machine: one network namespace per host.

    metaserver   iod0 .. iodN-1   c0 .. cM-1      (each a named netns, `eth0`)
        |            |               |
        +------------+---------------+----- br0 in NAME-br (plus VM taps)

Every host's `eth0` is one end of a veth pair whose other end is a port of the
bridge; the bridge lives in a namespace of its own, so the test subnet never
touches the machine's real network. Reverse-path filtering is off everywhere:
an iod's spoofed reply carries the metaserver's source address but arrives on
the iod's link, which a LAN accepts and a strict rp_filter would not.

`Testbed` is the Python API (tests, benchmarks); `cli` is the developers'
command, `python3 -m tools.dev.testbed up|down|status`. The namespaces,
daemons and their pids are recorded in WORKDIR/testbed.json, so `down` (or a
second `up`) works from another process and touches only what this testbed
created.
"""

import concurrent.futures
import contextlib
import dataclasses
import fcntl
import ipaddress
import json
import os
import pwd
import signal
import socket
import struct
import subprocess
import sys
import time

import click

from tools.dev import REPO, daemon_python
from tools.dev.netns import setns

NETNS_DIR = "/run/netns"
DEFAULT_SUBNET = "10.77.0.0/16"
DEFAULT_WORKDIR = "/var/lib/nfsp-testbed"
NFS_PORT = 2049
IOD_PORT = 2050
TUNSETIFF, TUNSETPERSIST = 0x400454CA, 0x400454CB
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000

# Host addresses inside the subnet: one /24-sized block per role, so the
# address says which kind of host it is (10.77.1.3 is iod2).
_ROLE_BLOCK = {"ms": 0, "iod": 1, "c": 2, "vm": 3}


class TestbedError(RuntimeError):
    pass


def _ifreq(name, flags):
    return struct.pack("16sH22x", name.encode(), flags)


def _process_start(pid):
    """The kernel's start time of ``pid`` (clock ticks since boot), or None
    when it is gone or a zombie; with the pid it identifies a process even
    after the pid is reused."""
    _reap(pid)
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] in ("Z", "X"):
        # It died after the first _reap. A multithreaded process shows Z as
        # soon as its main thread is gone, and can be collected only once its
        # last thread is: wait for that, or it lingers as our zombie.
        _reap(pid, wait=5.0)
        return None
    return int(fields[19])


def _alive(record):
    return record is not None and _process_start(record["pid"]) == record["start"]


class Host:
    """One emulated host: a named network namespace with ``eth0`` at ``ip``."""

    def __init__(self, testbed, role, ip):
        self.testbed = testbed
        self.role = role            # "ms", "iod0", "c1", ...: also its bridge port's name
        self.ip = ip
        self.netns = f"{testbed.name}-{role}"
        self.path = os.path.join(NETNS_DIR, self.netns)
        self._pool = None

    def __repr__(self):
        return f"<Host {self.role} {self.ip} netns={self.netns}>"

    def argv(self, argv):
        return ["nsenter", f"--net={self.path}", "--"] + [str(a) for a in argv]

    def run(self, argv, timeout=60, check=False, **kw):
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.argv(argv), timeout=timeout, check=check, **kw)

    def popen(self, argv, **kw):
        kw.setdefault("start_new_session", True)
        return subprocess.Popen(self.argv(argv), **kw)

    def inside(self, fn, *args, **kwargs):
        """Run fn in a thread living in this host's namespace: sockets it
        creates (an RpcClient, say) belong to this host."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                1, initializer=setns, initargs=(self.path,))
        return self._pool.submit(fn, *args, **kwargs).result()

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


@dataclasses.dataclass
class Shape:
    """Per-link traffic shaping, applied on both directions of every link."""
    rate: str | None = None      # e.g. "100mbit" (tc tbf)
    delay: str | None = None     # e.g. "0.1ms", one way (tc netem)
    loss: float | None = None    # percent (tc netem)

    def __bool__(self):
        return bool(self.rate or self.delay or self.loss)


def _parse_time_us(text):
    text = str(text).strip()
    for suffix, mult in (("us", 1), ("ms", 1000), ("s", 1000000)):
        if text.endswith(suffix):
            return int(float(text[:-len(suffix)]) * mult)
    return int(float(text) * 1000)  # bare number: milliseconds, as tc reads it


def _rate_bits(rate):
    text = str(rate).strip().lower()
    for suffix, mult in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3), ("bit", 1)):
        if text.endswith(suffix):
            return int(float(text[:-len(suffix)]) * mult)
    raise TestbedError(f"rate {rate!r}: expected e.g. 100mbit")


class Testbed:
    """The emulated cluster named ``name`` (a prefix of its namespaces).

    ``n_iods`` 0 runs the metaserver on its local data store; otherwise iods
    run in their own hosts and the metaserver stripes over them."""

    def __init__(self, name="nfsp", n_iods=0, n_clients=1, rate=None, delay=None, loss=None,
                 workdir=None, subnet=DEFAULT_SUBNET, stripe_unit=65536, log_level="info",
                 nfspd_args=(), iod_args=()):
        if not name or len(name) > 24 or not all(c.isalnum() or c in "-_" for c in name):
            raise TestbedError(f"testbed name {name!r}: use up to 24 letters, digits, - or _")
        self.name = name
        self.n_iods = n_iods
        self.n_clients = n_clients
        self.shape = Shape(rate, delay, loss)
        self.subnet = ipaddress.ip_network(subnet)
        if self.subnet.prefixlen > 16:
            raise TestbedError(f"subnet {subnet}: needs at least a /16")
        self.workdir = os.path.abspath(workdir or os.path.join(DEFAULT_WORKDIR, name))
        self.stripe_unit = stripe_unit
        self.log_level = log_level
        self.nfspd_args = [str(a) for a in nfspd_args]   # more options for nfspd, as given
        self.iod_args = [str(a) for a in iod_args]       # and for every iod
        self.bridge_netns = f"{name}-br"
        self.bridge_path = os.path.join(NETNS_DIR, self.bridge_netns)
        self.ms = Host(self, "ms", self.address("ms", 0))
        self.iods = [Host(self, f"iod{i}", self.address("iod", i)) for i in range(n_iods)]
        self.clients = [Host(self, f"c{i}", self.address("c", i)) for i in range(n_clients)]
        self.export = os.path.join(self.workdir, "ms", "export")
        self._bridge_pool = None

    # -- layout ---------------------------------------------------------------

    def address(self, kind, i):
        base = int(self.subnet.network_address)
        return str(ipaddress.ip_address(base + (_ROLE_BLOCK[kind] << 8) + i + 1))

    @property
    def hosts(self):
        return [self.ms] + self.iods + self.clients

    @property
    def prefixlen(self):
        return self.subnet.prefixlen

    @property
    def state_path(self):
        return os.path.join(self.workdir, "testbed.json")

    def host(self, role):
        for h in self.hosts:
            if h.role == role:
                return h
        raise KeyError(role)

    # -- state file -----------------------------------------------------------

    def _load_state(self):
        try:
            with open(self.state_path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def _save_state(self, state):
        os.makedirs(self.workdir, exist_ok=True)
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f, indent=1, sort_keys=True)
        os.replace(tmp, self.state_path)

    def _shape_record(self):
        return {"n_iods": self.n_iods, "n_clients": self.n_clients, "subnet": str(self.subnet),
                "rate": self.shape.rate, "delay": self.shape.delay, "loss": self.shape.loss,
                "stripe_unit": self.stripe_unit}

    @classmethod
    def attach(cls, name="nfsp", workdir=None):
        """The testbed an earlier `up` (maybe another process) recorded."""
        workdir = os.path.abspath(workdir or os.path.join(DEFAULT_WORKDIR, name))
        try:
            with open(os.path.join(workdir, "testbed.json")) as f:
                state = json.load(f)
        except FileNotFoundError:
            raise TestbedError(f"no testbed {name!r} recorded in {workdir}") from None
        s = state["shape"]
        return cls(name, s["n_iods"], s["n_clients"], s["rate"], s["delay"], s["loss"],
                   workdir, s["subnet"], s["stripe_unit"])

    # -- network --------------------------------------------------------------

    def _ipr(self, path_or_name):
        from pyroute2 import NetNS
        name = os.path.basename(path_or_name)
        return NetNS(name, flags=0)

    def _create_netns(self, name, created):
        from pyroute2 import netns
        if os.path.exists(os.path.join(NETNS_DIR, name)):
            return
        netns.create(name)
        created.append(name)

    def _sysctls(self, path, values):
        """Write /proc/sys entries as seen from the namespace at ``path``."""
        def write():
            for key, value in values.items():
                with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                    f.write(str(value))
        with concurrent.futures.ThreadPoolExecutor(1, initializer=setns, initargs=(path,)) as p:
            p.submit(write).result()

    def _shape_link(self, ipr, index):
        """tc on one egress: netem (delay/loss) at the root with tbf (rate)
        under it, or just the one that is asked for."""
        sh = self.shape
        if any(q.get_attr("TCA_KIND") in ("tbf", "netem") and q["parent"] == 0xFFFFFFFF
               for q in ipr.get_qdiscs(index=index)):
            ipr.tc("del", index=index, root=True)  # ours, from an earlier up: apply afresh
        tbf = None
        if sh.rate:
            bits = _rate_bits(sh.rate)
            # burst must hold at least one jiffy of traffic and a GSO packet.
            tbf = dict(rate=sh.rate, burst=max(65536, bits // 8 // 100), latency="50ms")
        if sh.delay or sh.loss:
            try:
                ipr.tc("add", "netem", index=index, handle="1:",
                       delay=_parse_time_us(sh.delay or 0), loss=float(sh.loss or 0))
            except Exception as e:
                raise TestbedError(f"tc netem failed ({e}): this kernel may lack sch_netem "
                                   f"(CONFIG_NET_SCH_NETEM); delay/loss need it") from None
            if tbf:
                ipr.tc("add", "tbf", index=index, parent="1:1", handle="10:", **tbf)
        elif tbf:
            ipr.tc("add", "tbf", index=index, handle="1:", **tbf)

    def _build_network(self, created):
        no_rpf = {"net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.default.rp_filter": 0,
                  # Only the test's IPv4 traffic on the links: byte counters stay readable.
                  "net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1}
        self._create_netns(self.bridge_netns, created)
        self._sysctls(self.bridge_path, no_rpf)
        with self._ipr(self.bridge_netns) as br:
            if not br.link_lookup(ifname="br0"):
                br.link("add", ifname="br0", kind="bridge", br_stp_state=0, br_forward_delay=0)
            br.link("set", index=br.link_lookup(ifname="lo")[0], state="up")
            br.link("set", index=br.link_lookup(ifname="br0")[0], state="up")
        for h in self.hosts:
            self._create_netns(h.netns, created)
            self._sysctls(h.path, no_rpf)
            with self._ipr(h.netns) as ipr:
                if not ipr.link_lookup(ifname="eth0"):
                    ipr.link("add", ifname="eth0", kind="veth",
                             peer={"ifname": h.role, "net_ns_fd": self.bridge_netns})
                eth0 = ipr.link_lookup(ifname="eth0")[0]
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=eth0, family=2)}
                if h.ip not in have:
                    ipr.addr("add", index=eth0, address=h.ip, prefixlen=self.prefixlen)
                ipr.link("set", index=eth0, state="up")
                self._shape_link(ipr, eth0)
            self._sysctls(h.path, {"net.ipv4.conf.eth0.rp_filter": 0})
            with self._ipr(self.bridge_netns) as br:
                self._attach_port(br, h.role)

    def _attach_port(self, br, port):
        idx = br.link_lookup(ifname=port)
        if not idx:
            raise TestbedError(f"bridge port {port} missing in {self.bridge_netns}")
        br.link("set", index=idx[0], master=br.link_lookup(ifname="br0")[0], state="up")
        self._shape_link(br, idx[0])

    def add_tap(self, port):
        """A persistent tap device ``port`` on the bridge, for a VM (qemu run
        in the bridge's namespace opens it by name)."""
        def make():
            fd = os.open("/dev/net/tun", os.O_RDWR)
            try:
                fcntl.ioctl(fd, TUNSETIFF, _ifreq(port, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
                fcntl.ioctl(fd, TUNSETPERSIST, 1)
            finally:
                os.close(fd)
        with self._ipr(self.bridge_netns) as br:
            if not br.link_lookup(ifname=port):
                self._in_bridge(make)
            self._attach_port(br, port)

    def remove_tap(self, port):
        with self._ipr(self.bridge_netns) as br:
            idx = br.link_lookup(ifname=port)
            if idx:
                br.link("del", index=idx[0])

    def _in_bridge(self, fn):
        if self._bridge_pool is None:
            self._bridge_pool = concurrent.futures.ThreadPoolExecutor(
                1, initializer=setns, initargs=(self.bridge_path,))
        return self._bridge_pool.submit(fn).result()

    def bridge_argv(self, argv):
        """argv run inside the bridge's namespace (where VMs' taps live)."""
        return ["nsenter", f"--net={self.bridge_path}", "--"] + [str(a) for a in argv]

    def vm_address(self, i):
        return self.address("vm", i)

    # -- counters -------------------------------------------------------------

    def counters(self):
        """Bytes and packets per host (and per VM tap), as the host sees its
        own link: rx is what reached the host. Read from the bridge's ports,
        so a host cannot hide traffic it sent with a raw socket."""
        out = {}
        with self._ipr(self.bridge_netns) as br:
            for link in br.get_links():
                name = link.get_attr("IFLA_IFNAME")
                stats = link.get_attr("IFLA_STATS64")
                if name in ("lo", "br0") or stats is None:
                    continue
                # The port transmits what the host receives and vice versa.
                out[name] = {"rx_bytes": stats["tx_bytes"], "tx_bytes": stats["rx_bytes"],
                             "rx_packets": stats["tx_packets"], "tx_packets": stats["rx_packets"]}
        return out

    # -- daemons --------------------------------------------------------------

    def _daemon_env(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    def _spawn(self, host, role, argv):
        logdir = os.path.join(self.workdir, "logs")
        os.makedirs(logdir, exist_ok=True)
        log = open(os.path.join(logdir, f"{role}.log"), "ab")
        try:
            p = host.popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           env=self._daemon_env(), cwd=REPO)
        finally:
            log.close()
        return {"pid": p.pid, "start": _wait_start(p.pid), "argv": argv, "host": host.role}, p

    def log_text(self, role):
        try:
            with open(os.path.join(self.workdir, "logs", f"{role}.log"), "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    @staticmethod
    def iod_built():
        return os.path.exists(os.path.join(REPO, "iod", "daemon.py"))

    def _nfspd_help(self):
        r = subprocess.run([daemon_python(), "-m", "nfspd.cli", "--help"], capture_output=True,
                           text=True, env=self._daemon_env(), cwd=REPO, timeout=60)
        return r.stdout

    def _prepare_files(self):
        from common import keyfile
        ms = os.path.join(self.workdir, "ms")
        for d in (self.export, os.path.join(ms, "state")):
            os.makedirs(d, exist_ok=True)
        exports = os.path.join(ms, "exports")
        with open(exports, "w") as f:
            f.write(f"# written by the testbed: every host of the test subnet\n"
                    f"{self.export} {self.subnet}(rw,no_root_squash,insecure)\n")
        files = {"exports": exports, "state": os.path.join(ms, "state")}
        if self.n_iods:
            key = os.path.join(self.workdir, "cluster.key")
            if not os.path.exists(key):
                keyfile.generate(key)
            conf = os.path.join(self.workdir, "iods.conf")
            with open(conf, "w") as f:
                f.write("# written by the testbed\n")
                for h in self.iods:
                    f.write(f"{h.ip}:{IOD_PORT}\n")
            files.update(key=key, iods=conf)
        return files

    def _nfspd_argv(self, files):
        argv = [daemon_python(), "-m", "nfspd.cli", "--exports", files["exports"],
                "--state-dir", files["state"], "--bind", "0.0.0.0", "--portmap", "embedded",
                "--log-level", self.log_level]
        if self.n_iods:
            help_text = self._nfspd_help()
            if "--iods" not in help_text:
                raise TestbedError("nfspd has no --iods option yet: run the testbed with 0 iods")
            argv += ["--iods", files["iods"], "--key", files["key"],
                     "--stripe-unit", str(self.stripe_unit)]
            if "--unlinkd" in help_text:
                argv += ["--unlinkd", "spawn"]
        return argv + self.nfspd_args

    def _iod_argv(self, i, files):
        data = os.path.join(self.workdir, f"iod{i}", "data")
        os.makedirs(data, exist_ok=True)
        nobody = pwd.getpwnam("nobody")
        os.chown(data, nobody.pw_uid, nobody.pw_gid)
        # --init: the directory made just above is a new store (the iod
        # refuses an existing unmarked one by itself: a failed mount's look).
        return [daemon_python(), "-m", "iod.cli", "--data-dir", data, "--init",
                "--key", files["key"], "--listen", self.iods[i].ip, "--port", str(IOD_PORT),
                "--user", "nobody", "--ip-id-slot", f"{i}/{self.n_iods}",
                "--log-level", self.log_level] + self.iod_args

    def _wait_iod(self, i, rec, timeout):
        host = self.iods[i]

        def connects():
            with socket.create_connection((host.ip, IOD_PORT), timeout=1):
                return True
        self._wait(lambda: host.inside(connects), rec, f"iod{i}", timeout)

    def _wait_nfspd(self, rec, timeout):
        from tools.rpcclient import RpcClient, getport

        def answers():
            with RpcClient(self.ms.ip, NFS_PORT, "tcp", timeout=1) as c:
                if not c.call(100003, 3, 0).accepted:
                    return False
            return getport(self.ms.ip, 100005, 3, "udp", timeout=1) != 0
        self._wait(lambda: self.ms.inside(answers), rec, "nfspd", timeout)

    def _wait(self, predicate, rec, role, timeout):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not _alive(rec):
                raise TestbedError(f"{role} exited at start:\n{self.log_text(role)[-4000:]}")
            try:
                if predicate():
                    return
            except Exception as e:  # not listening yet
                last = e
            time.sleep(0.05)
        raise TestbedError(f"{role} not answering within {timeout}s (last error: {last}):\n"
                           f"{self.log_text(role)[-4000:]}")

    def start_daemons(self, timeout=30):
        """Start whichever daemon is not running (iods first, then nfspd)."""
        state = self._load_state() or self._new_state()
        if self.n_iods and not self.iod_built():
            raise TestbedError("iod is not built yet (no iod/daemon.py): "
                               "run the testbed with 0 iods")
        files = self._prepare_files()
        daemons = state["daemons"]
        started = []
        for i in range(self.n_iods):
            role = f"iod{i}"
            if not _alive(daemons.get(role)):
                daemons[role], _ = self._spawn(self.iods[i], role, self._iod_argv(i, files))
                self._save_state(state)
                started.append(i)
        for i in started:  # they start in parallel; nfspd needs them all answering
            self._wait_iod(i, daemons[f"iod{i}"], timeout)
        if not _alive(daemons.get("nfspd")):
            daemons["nfspd"], _ = self._spawn(self.ms, "nfspd", self._nfspd_argv(files))
            self._save_state(state)
            self._wait_nfspd(daemons["nfspd"], timeout)
        return state

    def stop_daemon(self, role, timeout=10):
        """SIGTERM (SIGKILL past the bound) the daemon this testbed started as
        ``role``; a pid since reused by another process is left alone."""
        state = self._load_state()
        if not state:
            return None
        rec = state["daemons"].pop(role, None)
        self._save_state(state)
        return _terminate(rec, timeout)

    def stop_daemons(self, timeout=10):
        state = self._load_state()
        if not state:
            return
        # The metaserver first: it must not see its iods vanish under it.
        roles = sorted(state["daemons"], key=lambda r: (r != "nfspd", r))
        for role in roles:
            self.stop_daemon(role, timeout)

    def restart_nfspd(self, timeout=30):
        self.stop_daemon("nfspd")
        return self.start_daemons(timeout)

    # -- lifecycle ------------------------------------------------------------

    def _new_state(self):
        return {"name": self.name, "shape": self._shape_record(), "netns": [], "daemons": {}}

    def up(self, daemons=True, timeout=30):
        """Build what is missing (namespaces, links, daemons); a second call
        on a complete testbed changes nothing."""
        state = self._load_state()
        if state and state["shape"] != self._shape_record():
            raise TestbedError(f"testbed {self.name!r} exists with another shape "
                               f"({state['shape']}); run `down` first")
        state = state or self._new_state()
        self._save_state(state)
        created = []
        try:
            self._build_network(created)
        finally:
            state["netns"] = sorted(set(state["netns"]) | set(created))
            self._save_state(state)
        if daemons:
            self.start_daemons(timeout)
        return self

    def down(self):
        """Stop the daemons and remove the namespaces this testbed recorded
        (with them go every veth, tap and bridge inside). Data stays in
        the workdir."""
        from pyroute2 import netns
        state = self._load_state()
        if state is None:
            return False
        self.stop_daemons()
        for h in self.hosts:
            h.close()
        if self._bridge_pool is not None:
            self._bridge_pool.shutdown(wait=True)
            self._bridge_pool = None
        for name in state["netns"]:
            if os.path.exists(os.path.join(NETNS_DIR, name)):
                netns.remove(name)
        os.unlink(self.state_path)
        return True

    def status(self):
        state = self._load_state()
        if state is None:
            return {"name": self.name, "up": False}
        hosts = {}
        for h in self.hosts:
            hosts[h.role] = {"ip": h.ip, "netns": h.netns,
                             "netns_exists": os.path.exists(h.path)}
        daemons = {role: {"pid": rec["pid"], "alive": _alive(rec), "host": rec["host"]}
                   for role, rec in state["daemons"].items()}
        counters = self.counters() if os.path.exists(self.bridge_path) else {}
        return {"name": self.name, "up": True, "workdir": self.workdir, "export": self.export,
                "shape": state["shape"], "hosts": hosts, "daemons": daemons,
                "counters": counters}

    def __enter__(self):
        # A testbed half built (a namespace made, a daemon that would not
        # start) is taken down again: `with` has no __exit__ for it.
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(self, *exc):
        self.down()


def _wait_start(pid, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        start = _process_start(pid)
        if start is not None:
            return start
        time.sleep(0.01)
    return None


def _terminate(rec, timeout):
    if not _alive(rec):
        return None
    pid = rec["pid"]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(rec):
            return "terminated"
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while _alive(rec) and time.monotonic() < deadline:
        time.sleep(0.05)
    return "killed"


def _reap(pid, wait=0.0):
    """Collect the exit status if ``pid`` is our own child (a daemon started
    by another process is not), so that it does not linger as a zombie;
    ``wait``: for up to that many seconds, when it is known to be exiting."""
    deadline = time.monotonic() + wait
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(pid, os.WNOHANG) == (0, 0) and time.monotonic() < deadline:
            time.sleep(0.01)


# -- `python3 -m tools.dev.testbed` --------------------------------------------------

_name_opt = click.option("--name", default="nfsp", show_default=True,
                         help="Testbed name: the prefix of its network namespaces.")
_workdir_opt = click.option("--workdir", type=click.Path(file_okay=False),
                            help="Where data, logs and state live "
                                 f"[default: {DEFAULT_WORKDIR}/NAME].")


def _fail(e):
    raise click.ClickException(str(e))


@click.group("testbed", context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """An emulated NFSP cluster on this machine (one network namespace per host)."""


@cli.command()
@_name_opt
@_workdir_opt
@click.option("--iods", "n_iods", default=0, show_default=True, type=click.IntRange(0, 64),
              help="Number of iod hosts (0: the metaserver keeps data locally).")
@click.option("--clients", "n_clients", default=1, show_default=True, type=click.IntRange(0, 64))
@click.option("--rate", help="Per-link rate limit (tc tbf), e.g. 100mbit.")
@click.option("--delay", help="Per-link one-way delay (tc netem), e.g. 0.1ms.")
@click.option("--loss", type=float, help="Per-link loss percentage (tc netem).")
@click.option("--subnet", default=DEFAULT_SUBNET, show_default=True,
              help="Test subnet; it exists only inside the testbed's namespaces.")
@click.option("--no-daemons", is_flag=True, help="Build the network only.")
def up(name, workdir, n_iods, n_clients, rate, delay, loss, subnet, no_daemons):
    """Build the cluster and start its daemons (again: completes what is missing)."""
    try:
        tb = Testbed(name, n_iods, n_clients, rate, delay, loss, workdir, subnet)
        tb.up(daemons=not no_daemons)
    except TestbedError as e:
        _fail(e)
    click.echo(f"testbed {name} up: metaserver {tb.ms.ip}, export {tb.export}")
    for h in tb.hosts:
        click.echo(f"  {h.role:6} {h.ip:15} ip netns exec {h.netns} ...")
    if tb.clients:
        click.echo(f"try: ip netns exec {tb.clients[0].netns} nfs-ls nfs://{tb.ms.ip}{tb.export}/")


@cli.command()
@_name_opt
@_workdir_opt
def down(name, workdir):
    """Stop the daemons and remove the namespaces (data stays in the workdir)."""
    try:
        tb = Testbed.attach(name, workdir)
    except TestbedError as e:
        click.echo(f"{e}: nothing to do")
        return
    tb.down()
    click.echo(f"testbed {name} down")


@cli.command()
@_name_opt
@_workdir_opt
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(name, workdir, as_json):
    """Hosts, daemons and per-host byte counters."""
    try:
        st = Testbed.attach(name, workdir).status()
    except TestbedError as e:
        st = {"name": name, "up": False, "error": str(e)}
    if as_json:
        click.echo(json.dumps(st, indent=1, sort_keys=True))
        return
    if not st["up"]:
        click.echo(f"testbed {name}: down")
        sys.exit(1)
    click.echo(f"testbed {name}: workdir {st['workdir']}, export {st['export']}")
    for role, h in st["hosts"].items():
        c = st["counters"].get(role, {})
        click.echo(f"  {role:6} {h['ip']:15} {'ok' if h['netns_exists'] else 'MISSING':7} "
                   f"rx {c.get('rx_bytes', 0):>14,} B  tx {c.get('tx_bytes', 0):>14,} B")
    for role, d in st["daemons"].items():
        click.echo(f"  daemon {role:6} pid {d['pid']:<8} {'running' if d['alive'] else 'DEAD'}")


if __name__ == "__main__":
    cli()
