"""Fault injection on the testbed (tools/dev/testbed.py), for tests/faults.

Network. This machine's kernel has no sch_netem (and no act_gact), so loss
and reordering come from netfilter in the testbed's bridge namespace, where
every link meets: br_netfilter passes each bridged IPv4 packet through that
namespace's iptables FORWARD chain, which ``NetFaults`` points at a chain of
its own:

    -m statistic --mode random --probability LOSS   -j DROP
    -m statistic --mode random --probability HOLD   -j NFQUEUE --queue-num Q --queue-bypass

A packet is counted by the link to its destination only (one pass through the
bridge), so LOSS is the loss of each packet on its way from one host to
another, whatever the direction and whoever sent it (an iod's spoofed reply
as much as the metaserver's). The queued packets go to ``Delayer`` (run as
``python -m tests.support.faults delay``, in the bridge namespace), which
holds each one for a random time before it accepts it: the packets behind it
overtake it. That is reordering (and jitter) made by the kernel's own queue,
released by verdicts in another order than the packets came (nfnetlink_queue
allows that). The queue fails open: a full queue lets packets through rather
than drop them, so the only losses are the counted DROPs.

Daemons: kill -9 of the testbed's iods and nfspd (restarted with the same
arguments by Testbed.start_daemons), and of nfspd's supervised unlinkd (which
nfspd restarts itself). Disks: ``SmallDisk`` mounts a tmpfs of a given size
under a path before the testbed starts, and fills it (a filler file next to,
not inside, what a daemon reads) to leave a chosen amount free.
"""

import argparse
import contextlib
import errno
import hashlib
import heapq
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

from tools.dev.netns import wait_until

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The project's modules are imported where they are used: the delayer (`python
# -m tests.support.faults delay`, in the bridge's namespace) needs none of them.

# --- nfnetlink_queue (linux/netfilter/nfnetlink_queue.h) ----------------------------

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_CFG_F_FAIL_OPEN = 1
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR = 2
NLA_F_NESTED = 1 << 15
NLA_TYPE_MASK = ~(NLA_F_NESTED | (1 << 14)) & 0xFFFF


def _attr(kind, payload):
    return struct.pack("=HH", 4 + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)


def _attrs(data):
    out, off = {}, 0
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, off)
        if length < 4:
            break
        out[kind & NLA_TYPE_MASK] = data[off + 4:off + length]
        off += (length + 3) & ~3
    return out


class NfQueue:
    """A bound nfnetlink queue: ``packets()`` yields the ids the kernel queued,
    ``accept(id)`` lets one go. Create it in the namespace whose packets it
    takes (netfilter queues are per network namespace)."""

    def __init__(self, num, maxlen=4096):
        self.num = num
        self.seq = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((0, 0))
        self._config(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)))
        self._config(_attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
                     + _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen))
                     + _attr(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN))
                     + _attr(NFQA_CFG_FLAGS, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN)))

    def _send(self, msg_type, payload, flags=NLM_F_REQUEST):
        self.seq += 1
        body = struct.pack("!BBH", socket.AF_UNSPEC, 0, self.num) + payload
        header = struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type,
                             flags, self.seq, 0)
        self.sock.send(header + body)
        return self.seq

    def _config(self, payload):
        seq = self._send(NFQNL_MSG_CONFIG, payload, NLM_F_REQUEST | NLM_F_ACK)
        self.sock.settimeout(5)
        try:
            while True:
                data = self.sock.recv(65536)
                for msg_type, msg_seq, body in self._messages(data):
                    if msg_type == NLMSG_ERROR and msg_seq == seq:
                        (err,) = struct.unpack_from("=i", body)
                        if err:
                            raise OSError(-err, f"nfqueue {self.num} config: "
                                                f"{os.strerror(-err)}")
                        return
        finally:
            self.sock.settimeout(None)

    @staticmethod
    def _messages(data):
        off = 0
        while off + 16 <= len(data):
            length, msg_type, _, seq, _ = struct.unpack_from("=IHHII", data, off)
            if length < 16:
                break
            yield msg_type, seq, data[off + 16:off + length]
            off += (length + 3) & ~3

    def fileno(self):
        return self.sock.fileno()

    def packets(self):
        """The ids of the packets in one read from the socket (non-blocking)."""
        try:
            data = self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError as e:  # ENOBUFS: we fell behind; fail-open let them pass
            if e.errno == errno.ENOBUFS:
                return []
            raise
        ids = []
        for msg_type, _, body in self._messages(data):
            if msg_type == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                hdr = _attrs(body[4:]).get(NFQA_PACKET_HDR)
                if hdr:
                    ids.append(struct.unpack_from("!I", hdr)[0])
        return ids

    def accept(self, packet_id):
        self._send(NFQNL_MSG_VERDICT, _attr(NFQA_VERDICT_HDR,
                                            struct.pack("!II", NF_ACCEPT, packet_id)))

    def close(self):
        self.sock.close()


class Delayer:
    """Holds every packet of queue ``num`` for a random time in
    [min_ms, max_ms], then accepts it; counts what it held."""

    def __init__(self, num, min_ms, max_ms, seed):
        self.queue = NfQueue(num)
        self.min_s, self.max_s = min_ms / 1000, max_ms / 1000
        self.rng = random.Random(seed)
        self.held = 0
        self.stopping = False

    def run(self, ready=None):
        pending = []
        if ready:
            ready()
        while not self.stopping or pending:
            now = time.monotonic()
            while pending and pending[0][0] <= now:
                self.queue.accept(heapq.heappop(pending)[1])
            if self.stopping:
                # Let everything still held go at once: nothing is lost by stopping.
                for _, pid in sorted(pending):
                    self.queue.accept(pid)
                break
            wait = (pending[0][0] - now) if pending else 0.5
            try:
                readable, _, _ = select.select([self.queue], [], [], max(wait, 0))
            except InterruptedError:
                continue
            if readable:
                now = time.monotonic()
                for pid in self.queue.packets():
                    self.held += 1
                    heapq.heappush(pending, (now + self.rng.uniform(self.min_s, self.max_s), pid))
        self.queue.close()


def _delay_main(args):
    d = Delayer(args.queue, args.min_ms, args.max_ms, args.seed)

    def stop(*_):
        d.stopping = True
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    d.run(ready=lambda: print("ready", flush=True))
    with open(args.stats, "w") as f:
        json.dump({"held": d.held}, f)


# --- loss and reordering on every link ---------------------------------------------------

CHAIN = "NFSP-FAULTS"


class NetFaults:
    """``with NetFaults(testbed, loss=0.05, hold=0.05):`` every IPv4 packet
    between two hosts of ``testbed`` (VMs included) is dropped with
    probability ``loss``, and held back for hold_ms with probability
    ``hold``. ``counters()`` tells how many were (the tests assert that the
    faults happened, not only that the workload survived)."""

    QUEUE = 7

    def __init__(self, testbed, loss=0.05, hold=0.05, hold_ms=(2, 30), seed=1, workdir=None):
        self.tb = testbed
        self.loss, self.hold, self.hold_ms, self.seed = loss, hold, hold_ms, seed
        self.workdir = workdir or testbed.workdir
        self.stats_path = os.path.join(self.workdir, "delayer-stats.json")
        self.log_path = os.path.join(self.workdir, "delayer.log")
        self.proc = None
        self.final = None

    @staticmethod
    def missing():
        """Why the mechanism cannot run here, or None."""
        if not _which("iptables"):
            return "iptables missing (apt-get install iptables): no packet loss or reordering"
        return None

    def iptables(self, *args, check=True):
        r = subprocess.run(self.tb.bridge_argv(["iptables", "-w", "5"] + list(args)),
                           capture_output=True, text=True, timeout=30)
        if check and r.returncode:
            raise RuntimeError(f"iptables {' '.join(args)}: {r.stderr.strip()}")
        return r

    def _sysctl(self):
        # br_netfilter hands bridged IPv4 to iptables only when this is set
        # (per namespace; it defaults to 1, but say so rather than assume).
        r = subprocess.run(self.tb.bridge_argv(
            ["sh", "-c", "echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables"]),
            capture_output=True, text=True, timeout=30)
        if r.returncode:
            raise RuntimeError(f"bridge-nf-call-iptables: {r.stderr.strip()} "
                               f"(kernel without br_netfilter?)")

    def start(self):
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self):
        self._sysctl()
        if self.hold:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.stats_path)
            self._log = open(self.log_path, "ab")
            argv = [sys.executable, "-m", "tests.support.faults", "delay",
                    "--queue", str(self.QUEUE), "--min-ms", str(self.hold_ms[0]),
                    "--max-ms", str(self.hold_ms[1]), "--seed", str(self.seed),
                    "--stats", self.stats_path]
            self.proc = subprocess.Popen(self.tb.bridge_argv(argv), stdout=subprocess.PIPE,
                                         stderr=self._log, cwd=REPO, start_new_session=True,
                                         env=dict(os.environ, PYTHONPATH=REPO))
            line = self.proc.stdout.readline()
            if line.strip() != b"ready":
                self.proc.wait(10)
                raise RuntimeError(f"delayer did not start: {_tail(self.log_path)}")
        self.iptables("-N", CHAIN)
        if self.loss:
            self.iptables("-A", CHAIN, "-m", "statistic", "--mode", "random",
                          "--probability", f"{self.loss}", "-j", "DROP")
        if self.hold:
            self.iptables("-A", CHAIN, "-m", "statistic", "--mode", "random",
                          "--probability", f"{self.hold}", "-j", "NFQUEUE",
                          "--queue-num", str(self.QUEUE), "--queue-bypass")
        self.iptables("-I", "FORWARD", "-j", CHAIN)
        return self

    def counters(self):
        """{"seen", "dropped", "queued"} packets so far (from iptables), and
        "held" (from the delayer, once stopped)."""
        r = self.iptables("-L", CHAIN, "-v", "-x", "-n", check=False)
        out = {"dropped": 0, "queued": 0}
        for line in r.stdout.splitlines():
            f = line.split()
            if len(f) > 2 and f[0].isdigit():
                if f[2] == "DROP":
                    out["dropped"] = int(f[0])
                elif f[2] == "NFQUEUE":
                    out["queued"] = int(f[0])
        r = self.iptables("-L", "FORWARD", "-v", "-x", "-n", check=False)
        for line in r.stdout.splitlines():
            f = line.split()
            if len(f) > 2 and f[0].isdigit() and f[2] == CHAIN:
                out["seen"] = int(f[0])
        if self.final:
            out.update(self.final)
        return out

    def stop(self):
        """Remove the rules (the network is clean again), then release what
        the delayer still holds."""
        before = self.counters()
        self.iptables("-D", "FORWARD", "-j", CHAIN, check=False)
        self.iptables("-F", CHAIN, check=False)
        self.iptables("-X", CHAIN, check=False)
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc.stdout.close()
            self._log.close()
            self.proc = None
            try:
                with open(self.stats_path) as f:
                    before.update(json.load(f))
            except FileNotFoundError:
                pass
        self.final = before
        return before

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# --- daemons ------------------------------------------------------------------------------


def daemon_pid(testbed, role):
    """The pid of the testbed's daemon ``role`` ("nfspd", "iod0", ...), alive."""
    rec = testbed._load_state()["daemons"].get(role)
    if rec is None or not _alive(rec):
        raise AssertionError(f"{role} is not running")
    return rec["pid"]


def _alive(rec):
    from tools.dev.testbed import _alive as alive   # (imported late: click, pyroute2)
    return alive(rec)


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except FileNotFoundError:
        return []


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except FileNotFoundError:
        return []


def unlinkd_pid(testbed):
    """nfspd's supervised unlinkd, or None while there is none."""
    for pid in children(daemon_pid(testbed, "nfspd")):
        if b"unlinkd.cli" in cmdline(pid):
            return pid
    return None


def age(pid):
    """Seconds since process ``pid`` started."""
    with open(f"/proc/{pid}/stat") as f:
        start = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    with open("/proc/uptime") as f:
        return float(f.read().split()[0]) - start


def kill9(pid):
    """SIGKILL and wait (bounded) until the process is gone."""
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: _zombie_or_gone(pid), 10, what=f"pid {pid} gone")


def _zombie_or_gone(pid):
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


# --- disks -------------------------------------------------------------------------------


class SmallDisk:
    """A tmpfs of ``size`` bytes mounted at ``path`` (in this mount namespace,
    which the testbed's daemons share); ``fill(leave)`` takes all but
    ``leave`` bytes with a filler file at the top, and with ``inodes`` (the
    tmpfs has that many) every inode left too, with empty fillers; ``free()``
    gives them back."""

    def __init__(self, path, size, inodes=None):
        self.path = path
        self.size = size
        self.inodes = inodes
        self.filler = os.path.join(path, "filler")
        self.mounted = False

    def mount(self):
        os.makedirs(self.path, exist_ok=True)
        options = f"size={self.size},mode=755" + (f",nr_inodes={self.inodes}" if self.inodes else "")
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs",
                        self.path], check=True, capture_output=True, timeout=30)
        self.mounted = True
        return self

    def _inode_fillers(self):
        return [os.path.join(self.path, n) for n in os.listdir(self.path)
                if n.startswith("filler-")]

    def available(self):
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, leave=0):
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            extra = self.available() - leave
            if extra > 0:
                os.posix_fallocate(fd, os.fstat(fd).st_size, extra)
        finally:
            os.close(fd)
        if self.inodes:
            for i in range(os.statvfs(self.path).f_favail):
                try:
                    os.close(os.open(f"{self.filler}-{i}", os.O_WRONLY | os.O_CREAT, 0o600))
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
            assert os.statvfs(self.path).f_favail == 0
        return self.available()

    def free(self):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.filler)
        for path in self._inode_fillers():
            os.unlink(path)
        return self.available()

    def umount(self):
        if self.mounted:
            subprocess.run(["umount", "-l", self.path], capture_output=True, timeout=30)
            self.mounted = False


# --- workloads ---------------------------------------------------------------------------


def sha(data):
    return hashlib.sha256(data).hexdigest()


# Shell functions the guest workloads use on top of tests/support/guest_wl.sh
# (R, h, dropcaches). Data comes from /data/rand, the bytes the host holds too.
GUEST_FUNCS = r"""
# fw_put OFF N: N bytes of /data/rand from OFF.
fw_put() { if [ "$2" -gt 0 ]; then head -c $(($1 + $2)) /data/rand | tail -c "$2"; fi; }
fw_write() { fw_put "$1" "$2" > "$3"; }
fw_append() { fw_put "$1" "$2" >> "$3"; }
fw_patch() { fw_put "$1" "$2" | dd of="$4" bs=4096 seek="$3" conv=notrunc 2>/dev/null; }
fw_check() { R "$1" "$(stat -c %s "$2")" "$(h "$2")"; }
"""


class Workload:
    """A deterministic mix of writes, overwrites, appends, truncations, reads
    and removals in one directory of a guest's mount, rendered as a guest
    script, with a model of what every file must hold (computed here, from
    the same random bytes the guest has as /data/rand)."""

    def __init__(self, rand, directory, seed, label="w"):
        self.rand = rand
        self.dir = directory
        self.rng = random.Random(seed)
        self.label = label
        self.files = {}        # name -> bytearray
        self.lines = [f"mkdir -p {directory}"]
        self.want = {}         # R key -> expected value
        self._checks = 0

    def _chunk(self, n):
        off = self.rng.randrange(0, len(self.rand) - n)
        return off, self.rand[off:off + n]

    def write(self, name, size):
        off, data = self._chunk(size)
        self.files[name] = bytearray(data)
        self.lines.append(f"fw_write {off} {size} {self.dir}/{name}")
        return self

    def append(self, name, size):
        off, data = self._chunk(size)
        self.files[name] += data
        self.lines.append(f"fw_append {off} {size} {self.dir}/{name}")
        return self

    def patch(self, name, block, size):
        """Overwrite ``size`` bytes at 4 KiB block ``block`` (may extend)."""
        off, data = self._chunk(size)
        f = self.files[name]
        at = block * 4096
        if len(f) < at:
            f += bytes(at - len(f))
        f[at:at + size] = data
        self.lines.append(f"fw_patch {off} {size} {block} {self.dir}/{name}")
        return self

    def truncate(self, name, size):
        f = self.files[name]
        if size < len(f):
            del f[size:]
        else:
            f += bytes(size - len(f))
        self.lines.append(f"truncate -s {size} {self.dir}/{name}")
        return self

    def remove(self, name):
        del self.files[name]
        self.lines.append(f"rm {self.dir}/{name}")
        return self

    def check(self, name, drop=False):
        """Read ``name`` back in the guest (after dropping its caches: from the
        server) and compare with the model."""
        self._checks += 1
        key = f"{self.label}.{self._checks}.{name}"
        if drop:
            self.lines.append("dropcaches")
        self.lines.append(f"fw_check {key} {self.dir}/{name}")
        data = bytes(self.files[name])
        self.want[key] = f"{len(data)} {sha(data)}"
        return self

    def check_all(self):
        """Every file from the server, and the directory's listing."""
        self.lines.append("dropcaches")
        for name in sorted(self.files):
            self.check(name)
        key = f"{self.label}.list"
        self.lines.append(f"R {key} $(ls {self.dir} | tr '\\n' ' ')")
        self.want[key] = "".join(f"{n} " for n in sorted(self.files)).rstrip()
        return self

    def mixed(self, n_files, sizes, rounds=1):
        """A generic mixed workload over ``n_files`` files."""
        names = [f"{self.label}{i:02d}" for i in range(n_files)]
        for name in names:
            self.write(name, self.rng.choice(sizes))
        for _ in range(rounds):
            for name in list(names):
                op = self.rng.randrange(6)
                if op == 0:
                    self.append(name, self.rng.choice(sizes) // 3 + 1)
                elif op == 1:
                    size = len(self.files[name])
                    self.patch(name, self.rng.randrange(0, size // 4096 + 2),
                               self.rng.randrange(1, 20000))
                elif op == 2 and self.files[name]:
                    # Never an empty file grown by truncation alone: no iod
                    # would hold any of its data, which scrub rightly reports
                    # as a file "without data" (it cannot tell it from a loss).
                    self.truncate(name, self.rng.randrange(1, len(self.files[name]) + 50000))
                elif op == 2:
                    self.append(name, self.rng.randrange(1, 5000))
                elif op == 3:
                    self.check(name, drop=True)
                elif op == 4:
                    self.remove(name)
                    names.remove(name)
                    new = name + "n"
                    self.write(new, self.rng.choice(sizes))
                    names.append(new)
                else:
                    self.check(name)
        return self

    def churn(self, k):
        """Remove ``k`` files and write as many new ones (removals the
        purge path must finish, whatever fails meanwhile)."""
        for name in sorted(self.files)[:k]:
            self.remove(name)
            self.write(name + "c", self.rng.choice((4097, 70000, 150000)))
        return self

    def script(self):
        return "\n".join(self.lines) + "\n"


def concurrently(*scripts):
    """One guest script running ``scripts`` at the same time; it fails if any does."""
    out = [GUEST_FUNCS]
    for i, s in enumerate(scripts):
        out.append(f"( set -e\n{s}) & p{i}=$!")
    for i in range(len(scripts)):
        out.append(f"wait $p{i}")
    return "\n".join(out) + "\n"


# --- the shared bed: testbed, small disks, one kernel-client guest ----------------------


class Bed:
    """A testbed with ``n_iods`` iods, iod0's disk and the metaserver's disk
    each a SmallDisk, and one qemu guest (the Linux kernel NFS client)."""

    def __init__(self, name, workdir, kernel, rand, n_iods=2, stripe_unit=32768,
                 iod_disk=256 << 20, ms_disk=64 << 20):
        from tools.dev import testbed as tblib
        self.workdir = workdir
        self.kernel = kernel
        self.rand = rand
        self.tb = tblib.Testbed(name, n_iods=n_iods, n_clients=1, workdir=workdir,
                                stripe_unit=stripe_unit)
        # The testbed keeps iod i's data in WORKDIR/iod{i}/data and the
        # metaserver's export, state and exports file in WORKDIR/ms: the
        # fillers go next to them, on the same file system.
        self.iod_disk = SmallDisk(os.path.join(workdir, "iod0"), iod_disk)
        # A metafile takes an inode and no block (its record is an
        # attribute): the metaserver's disk is full when it has neither.
        self.ms_disk = SmallDisk(os.path.join(workdir, "ms"), ms_disk, inodes=4096)
        self.vm = None
        self.mounts = set()

    def up(self):
        from tests.support import vm as vmlib
        self.iod_disk.mount()
        self.ms_disk.mount()
        self.tb.up()
        self.vm = vmlib.VM(self.tb, 0, self.kernel, os.path.join(self.workdir, "guest"),
                           data={"rand": self.rand})
        self.vm.start()
        return self

    def down(self):
        try:
            if self.vm is not None:
                self.vm.stop()
        finally:
            try:
                self.tb.down()
            finally:
                self.iod_disk.umount()
                self.ms_disk.umount()

    # -- guest mounts ------------------------------------------------------------------

    @property
    def udp(self):
        return self.kernel.udp

    def mount(self, name, proto, options="hard"):
        mnt = f"/mnt/{name}"
        self.vm.check(f"nfs_mount 3 {proto} udp {self.tb.ms.ip} {self.tb.export} {mnt} "
                      f"{options}", timeout=120)
        opts = self.vm.check(f"grep ' {mnt} ' /proc/mounts")
        assert f"proto={proto}" in opts and "soft" not in opts, opts
        self.mounts.add(mnt)
        return mnt

    def umount(self, mnt):
        self.mounts.discard(mnt)
        self.vm.sh(f"umount {mnt}", timeout=120)

    @contextlib.contextmanager
    def mounted(self, name, udp_options="hard,timeo=3", tcp_options="hard"):
        """[(proto, mount point)]: the export mounted over UDP (when the
        guest's kernel can) and over TCP, unmounted at the end."""
        from tests.support.vm import VMError
        mounts = []
        try:
            if self.udp:
                mounts.append(("udp", self.mount(f"{name}-u", "udp", udp_options)))
            mounts.append(("tcp", self.mount(f"{name}-t", "tcp", tcp_options)))
            yield mounts
        finally:
            for _, mnt in mounts:
                # A guest already powered off (a hung command) has nothing to unmount.
                with contextlib.suppress(VMError):
                    self.umount(mnt)

    # -- the server's side -------------------------------------------------------------

    @property
    def export(self):
        return self.tb.export

    @property
    def state_dir(self):
        return os.path.join(self.workdir, "ms", "state")

    def iod_data(self, i):
        return os.path.join(self.workdir, f"iod{i}", "data")

    def on_client(self, fn, transport="tcp", timeout=10.0):
        """fn(client, root handle) with the project's NFSv3 client on host c0
        (its sockets there); its result."""
        from tools.dev import nfsclient

        def run():
            c, root = nfsclient.connect(self.tb.ms.ip, self.export, vers=3, transport=transport,
                                        timeout=timeout)
            try:
                return fn(c, root)
            finally:
                c.rpc.close()
        return self.tb.clients[0].inside(run)

    def read_tree(self, rel):
        """{name: bytes} of every file in export directory ``rel``, read over
        TCP by the project's client from host c0 (not the guest that wrote them)."""
        def read(c, root):
            d = c.walk(root, rel)
            out = {}
            for name in c.listdir(d):
                if name not in (b".", b".."):
                    out[name.decode()] = c.read_all(c.lookup(d, name), chunk=1 << 20)
            return out
        return self.on_client(read)

    def stored(self):
        """{(ino, seed)} of every datafile on every iod (read from their disks)."""
        out = set()
        for i in range(self.tb.n_iods):
            for _, _, names in os.walk(self.iod_data(i)):
                for name in names:
                    ino, _, seed = name.partition(".")
                    if len(ino) == 16 and len(seed) == 16:
                        out.add((int(ino, 16), int(seed, 16)))
        return out

    def owned(self):
        from tools import scrub
        walk = scrub.walk_exports([self.export])
        assert not walk.bad, walk.bad
        return set(walk.owned)

    def wait_purged(self, timeout=90):
        """Wait (bounded) until the iods hold no datafile that no metafile
        owns: unlinkd has purged every removed file."""
        last = {}

        def done():
            last["left"] = self.stored() - self.owned()
            return not last["left"]
        try:
            wait_until(done, timeout, interval=0.5, what="every removed file purged")
        except TimeoutError:
            raise AssertionError(f"datafiles of removed files still on the iods after "
                                 f"{timeout}s: {sorted(last['left'])[:10]}\n"
                                 f"{self.tb.log_text('nfspd')[-3000:]}") from None

    def scrub(self):
        """`nfsp scrub` run on the metaserver's host: (exit status, output)."""
        files = os.path.join(self.workdir, "iods.conf"), os.path.join(self.workdir, "cluster.key")
        r = self.tb.ms.run([sys.executable, "-m", "tools.nfsp", "scrub", self.export,
                            "--iods", files[0], "--key", files[1], "--state-dir", self.state_dir],
                           timeout=120, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
        return r.returncode, r.stdout + r.stderr

    def assert_tree(self, rel, files, others=False):
        """The export directory ``rel`` holds ``files`` ({name: bytes}), and
        nothing else unless ``others``."""
        got = self.read_tree(rel)
        missing = sorted(set(files) - set(got))
        assert not missing, f"{rel}: missing {missing}"
        assert others or sorted(got) == sorted(files), \
            f"{rel}: names {sorted(got)} != {sorted(files)}"
        wrong = [n for n in files if got[n] != bytes(files[n])]
        assert not wrong, (f"{rel}: wrong content in {wrong}: " + ", ".join(
            f"{n} {len(got[n])} bytes sha {sha(got[n])[:12]}, expected {len(files[n])} "
            f"sha {sha(bytes(files[n]))[:12]}" for n in wrong[:5]))

    # -- daemons -----------------------------------------------------------------------

    def pid(self, role):
        return daemon_pid(self.tb, role)

    def restart(self):
        """Start every testbed daemon that is not running, with its own arguments."""
        self.tb.start_daemons(timeout=60)

    def log(self, role):
        return self.tb.log_text(role)


def _which(tool):
    return shutil.which(tool) or next(
        (p for p in (f"/usr/sbin/{tool}", f"/sbin/{tool}") if os.path.exists(p)), None)


def _tail(path, n=2000):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")[-n:]
    except OSError:
        return ""


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tests.support.faults")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("delay", help="hold the packets of an nfqueue for a random time")
    d.add_argument("--queue", type=int, required=True)
    d.add_argument("--min-ms", type=float, required=True)
    d.add_argument("--max-ms", type=float, required=True)
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--stats", required=True)
    args = p.parse_args(argv)
    if args.cmd == "delay":
        _delay_main(args)


if __name__ == "__main__":
    main()
