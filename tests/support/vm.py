"""Real Linux kernel NFS clients: qemu guests on a testbed's bridge.

A guest is a busybox initramfs booted under qemu (TCG) with one virtio NIC on
a tap port of the testbed's bridge. Its /init brings the network up and then
serves the host over the second serial port (ttyS1): the host sends one
command per line, the guest runs it in a subshell and answers with its output
and exit status between markers. One boot serves many workloads; the kernel's
own console (ttyS0) goes to a log file that failures quote.

Workload commands print machine-readable lines ``R <key> <value...>``; the
host compares them with what it computed itself (``VM.results``).
"""

import base64
import dataclasses
import glob
import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE_DIR = os.environ.get("NFSP_TEST_CACHE", "/var/cache/nfsp-test")
UDP_KERNEL_ENV = "NFSP_UDP_KERNEL"
DEFAULT_UDP_KERNEL = os.path.normpath(os.path.join(REPO, "..", "shared", "testkernel",
                                                   "bzImage-nfsudp"))
STOCK_KERNEL_ENV = "NFSP_STOCK_KERNEL"
DEFAULT_STOCK_KERNEL = os.path.join(CACHE_DIR, "debian-cloud-kernel", "current")
QEMU = "qemu-system-x86_64"
BUSYBOX = "/bin/busybox"
# What the stock kernel must insmod for a virtio NIC and the NFS v2/v3/v4.x
# client; their dependencies are resolved from the modules themselves. With no
# modprobe in the guest the pNFS layout drivers (which the kernel asks for by
# the aliases nfs-layouttype4-1 and nfs-layouttype4-4) must be loaded up front.
STOCK_MODULES = ("virtio_pci", "virtio_net", "nfsv2", "nfsv3", "nfsv4",
                 "nfs_layout_nfsv41_files", "nfs_layout_flexfiles")
# A Debian client's mount stack: util-linux's mount runs nfs-utils' mount.nfs
# for `mount -t nfs`, which negotiates the version (NFSv4.2, 4.1, 4.0, then 3)
# as a real client does. (Busybox's mount hands the kernel the bare options
# and runs a helper only when that fails; the kernel alone never tries v4.)
# The NFSv3 fallback wants rpc.statd for locking, started through
# /usr/sbin/start-statd (GUEST_START_STATD), and statd wants rpcbind.
NFS_UTILS = {"bin/mount": "mount", "sbin/mount.nfs": "mount.nfs",
             "sbin/rpc.statd": "rpc.statd", "sbin/rpcbind": "rpcbind"}
NFS_UTILS_PATH = "/usr/sbin:/sbin:/usr/bin:/bin"
LOCK_TOOL_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guest_lock.c")


class VMError(AssertionError):
    pass


@dataclasses.dataclass
class Kernel:
    label: str              # shown in test ids and reports
    image: str              # bzImage / vmlinuz
    modules: list           # .ko paths in load order (empty: everything built in)
    udp: bool               # the NFS client speaks NFS over UDP


def udp_kernel():
    """The UDP-capable test kernel, or a string saying why there is none."""
    path = os.environ.get(UDP_KERNEL_ENV, DEFAULT_UDP_KERNEL)
    if not os.path.isfile(path):
        return (f"no NFS-over-UDP kernel at {path} (set {UDP_KERNEL_ENV}, or build one with "
                f"tools/dev/build-test-kernel): NFS over UDP cases skipped")
    return Kernel("nfsudp", path, [], True)


def stock_kernel():
    """Debian's cloud kernel as tools/install-deps --test unpacked it, or why not."""
    root = os.environ.get(STOCK_KERNEL_ENV, DEFAULT_STOCK_KERNEL)
    images = sorted(glob.glob(os.path.join(root, "boot", "vmlinuz-*")))
    if not images:
        return (f"no Debian cloud kernel unpacked under {root} (run tools/install-deps --test, "
                f"or set {STOCK_KERNEL_ENV}): stock-kernel cases skipped")
    version = os.path.basename(images[-1])[len("vmlinuz-"):]
    moddir = os.path.join(root, "lib", "modules", version)
    return Kernel(f"debian-{version}", images[-1], module_order(moddir, STOCK_MODULES), False)


def module_order(moddir, wanted):
    """Paths of ``wanted`` modules and everything they depend on, each after
    its dependencies (modinfo reads the dependency list from the .ko)."""
    paths = {}
    for path in glob.glob(os.path.join(moddir, "kernel", "**", "*.ko"), recursive=True):
        paths[os.path.basename(path)[:-3].replace("-", "_")] = path
    order, seen = [], set()

    def visit(name, chain):
        name = name.replace("-", "_")
        if name in seen:
            return
        if name in chain:
            raise RuntimeError(f"module dependency cycle: {' -> '.join(chain + [name])}")
        if name not in paths:
            raise RuntimeError(f"module {name} not found under {moddir}")
        deps = subprocess.run(["modinfo", "-F", "depends", paths[name]], capture_output=True,
                              text=True, check=True, timeout=30).stdout.strip()
        for dep in filter(None, deps.split(",")):
            visit(dep, chain + [name])
        seen.add(name)
        order.append(paths[name])
    for name in wanted:
        visit(name, [])
    return order


def missing_tools():
    """Why VMs cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (tap devices, network namespaces)"
    for tool, pkg in ((QEMU, "qemu-system-x86"), (BUSYBOX, "busybox-static"),
                      ("modinfo", "kmod"), ("nsenter", "util-linux")):
        if not (shutil.which(tool) or os.path.exists(tool)):
            return f"{tool} missing (apt-get install {pkg}, or run tools/install-deps --test)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun missing"
    return None


# -- initramfs ------------------------------------------------------------------------

class Cpio:
    """A newc ("070701") archive, written here so that device nodes need no
    mknod on the host and archives are byte-for-byte reproducible."""

    def __init__(self):
        self.out = io.BytesIO()
        self.ino = 1000

    def _entry(self, name, mode, data=b"", rdev=(0, 0), nlink=1):
        self.ino += 1
        name_b = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(name_b), 0)
        self.out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        self.out.write(name_b)
        self.out.write(b"\0" * (-(110 + len(name_b)) % 4))
        self.out.write(data)
        self.out.write(b"\0" * (-len(data) % 4))

    def dir(self, name, mode=0o755):
        self._entry(name, 0o040000 | mode, nlink=2)

    def file(self, name, data, mode=0o644):
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name, target):
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name, major, minor, mode=0o600):
        self._entry(name, 0o020000 | mode, rdev=(major, minor))

    def bytes(self):
        self._entry("TRAILER!!!", 0)
        return self.out.getvalue()


# The guest's /init. Kernel command-line words name=value arrive as variables.
INIT = r"""#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
# Busybox sh runs its own applets before anything on PATH: `mount` is
# util-linux's when the initramfs has it (see NFS_UTILS), as on Debian.
if [ -x /bin/mount ] && [ ! -L /bin/mount ]; then mount() { /bin/mount "$@"; }; fi
export PATH=/bin:/sbin TZ=UTC
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /tmp /mnt /run && mount -t tmpfs tmp /tmp
for m in $(cat /etc/modules); do
    insmod "/lib/modules/$m" || echo "nfsp-vm: insmod $m failed" >/dev/console
done
echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 2>/dev/null
echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6 2>/dev/null
hostname "$nfsp_host"
ip link set lo up
i=0
while ! ip link set eth0 up 2>/dev/null; do
    i=$((i + 1)); [ $i -gt 100 ] && break; sleep 0.1
done
ip addr add "$nfsp_ip" dev eth0
echo 0 > /proc/sys/net/ipv4/conf/all/rp_filter
echo 0 > /proc/sys/net/ipv4/conf/eth0/rp_filter
# As on a Debian client, rpcbind runs from boot: the kernel binds its rpcbind
# client (lockd's and statd's registrations) on first use, and finds it then.
[ -x /sbin/rpcbind ] && rpcbind
stty -F /dev/ttyS1 raw -echo
exec 3</dev/ttyS1 4>/dev/ttyS1
. /lib/wl.sh
echo "@@READY $(uname -r)" >&4
while IFS= read -r line <&3; do
    id=${line%% *}
    [ "$id" = "@@EXIT" ] && break
    echo "${line#* }" | base64 -d > /tmp/cmd
    ( . /tmp/cmd ) > /tmp/out 2>&1 </dev/null
    rc=$?
    echo "@@$id@@BEGIN" >&4
    cat /tmp/out >&4
    printf '\n@@%s@@END %d\n' "$id" "$rc" >&4
done
sync
umount -a -r -f -t nfs,nfs4 2>/dev/null
echo "@@BYE" >&4
reboot -f
"""

WL_SH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guest_wl.sh")

# What mount.nfs finds on a Debian client and needs at run time: the transports
# libtirpc may use, mtab as the kernel's mount table, the users rpcbind and
# statd look up, statd's state directories.
GUEST_ETC = {
    "etc/passwd": "root:x:0:0:root:/:/bin/sh\n_rpc:x:103:65534::/run/rpcbind:/bin/false\n"
                  "statd:x:104:65534::/var/lib/nfs:/bin/false\n"
                  "nobody:x:65534:65534:nobody:/:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\nprotocols: files\n",
    "etc/hosts": "127.0.0.1 localhost\n",
    "etc/protocols": "ip 0 IP\nicmp 1 ICMP\ntcp 6 TCP\nudp 17 UDP\n",
    "etc/netconfig": "udp tpi_clts v inet udp - -\ntcp tpi_cots_ord v inet tcp - -\n"
                     "local tpi_cots_ord - loopback - - -\nunix tpi_cots_ord - loopback - - -\n",
}
# mount.nfs runs this when a mount with locking finds no statd (Debian's
# start-statd without systemd, less its flock, which busybox lacks).
GUEST_START_STATD = """#!/bin/sh
PATH=/sbin:/bin
[ -e /run/rpcbind.sock ] || rpcbind || exit 1
exec rpc.statd --no-notify
"""


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def shared_libraries(program):
    """The files ``ldd`` resolves for ``program`` (the loader included), as
    the paths the loader will look them up at."""
    r = subprocess.run(["ldd", program], capture_output=True, text=True, timeout=30,
                       check=False)
    if r.returncode != 0:       # "not a dynamic executable"
        return []
    return re.findall(r"^\s*(?:\S+ => )?(/\S+) \(0x", r.stdout, re.MULTILINE)


def nfs_utils():
    """{guest path: host path} of nfs-utils' programs and their libraries;
    empty when nfs-common is not installed (guests mount with busybox only)."""
    found = {}
    for guest, name in NFS_UTILS.items():
        path = shutil.which(name, path=NFS_UTILS_PATH)
        if path is None:
            return {}
        found[guest] = path
        for lib in shared_libraries(path):
            found[lib.lstrip("/")] = lib
    return found


def build_lock_tool(out_dir):
    """nfsp-lock (guest_lock.c) linked static, or None without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    out = os.path.join(out_dir, "nfsp-lock")
    r = subprocess.run([cc, "-static", "-Os", "-o", out, LOCK_TOOL_SRC], capture_output=True,
                       text=True, timeout=120, check=False)
    if r.returncode != 0:      # e.g. no static libc (libc6-dev)
        return None
    return _read(out)


def _parents(names):
    dirs = set()
    for name in names:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return sorted(dirs)


def build_initramfs(kernel, cache_dir=CACHE_DIR):
    """The guest's base initramfs (gzip), cached by content under cache_dir."""
    busybox = _read(BUSYBOX)
    modules = [(os.path.basename(p), _read(p)) for p in kernel.modules]
    wl = _read(WL_SH)
    host_files = {guest: _read(host) for guest, host in sorted(nfs_utils().items())}
    h = hashlib.sha256(busybox + INIT.encode() + wl + GUEST_START_STATD.encode())
    h.update(repr(sorted(GUEST_ETC.items())).encode() + _read(LOCK_TOOL_SRC))
    for name, data in modules + sorted(host_files.items()):
        h.update(name.encode() + hashlib.sha256(data).digest())
    h.update(repr(bool(shutil.which("cc") or shutil.which("gcc"))).encode())
    path = os.path.join(cache_dir, "initramfs", f"{kernel.label}-{h.hexdigest()[:16]}.cpio.gz")
    if os.path.exists(path):
        return path
    files = {"bin/busybox": (busybox, 0o755), "init": (INIT.encode(), 0o755),
             "lib/wl.sh": (wl, 0o644),
             "etc/modules": ("".join(f"{n}\n" for n, _ in modules).encode(), 0o644)}
    files.update({f"lib/modules/{name}": (data, 0o644) for name, data in modules})
    if host_files:
        files.update({name: (data, 0o755) for name, data in host_files.items()})
        files.update({name: (text.encode(), 0o644) for name, text in GUEST_ETC.items()})
        files["sbin/start-statd"] = (GUEST_START_STATD.encode(), 0o755)
    with tempfile.TemporaryDirectory() as tmp:
        lock_tool = build_lock_tool(tmp)
    if lock_tool is not None:
        files["bin/nfsp-lock"] = (lock_tool, 0o755)
    dirs = set(_parents(files)) | {"bin", "dev", "etc", "lib", "lib/modules", "proc", "sys",
                                   "tmp", "mnt", "data", "run", "sbin", "usr", "var",
                                   "var/lib/nfs/sm", "var/lib/nfs/sm.bak"}
    c = Cpio()
    for d in sorted(set(_parents([d + "/x" for d in dirs]))):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    c.symlink("etc/mtab", "/proc/mounts")
    # Where Debian has them: mount.nfs runs /usr/sbin/start-statd.
    c.symlink("usr/sbin", "../sbin")
    # libtirpc and the kernel reach rpcbind at /var/run/rpcbind.sock.
    c.symlink("var/run", "../run")
    if host_files:
        c.symlink("sbin/mount.nfs4", "mount.nfs")
    for name, (data, mode) in sorted(files.items()):
        c.file(name, data, mode)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    packed = gzip.compress(c.bytes(), compresslevel=6, mtime=0)
    with open(tmp, "wb") as f:
        # The kernel takes a following uncompressed archive only at a 4-byte
        # boundary (zero bytes in between are skipped).
        f.write(packed + b"\0" * (-len(packed) % 4))
    os.replace(tmp, path)
    for old in glob.glob(os.path.join(cache_dir, "initramfs", f"{kernel.label}-*.cpio.gz")):
        if old != path:  # built from an older /init, workload library or kernel
            os.unlink(old)
    return path


def data_archive(files):
    """An uncompressed cpio of /data files, appended to the base initramfs
    (the kernel unpacks concatenated archives in turn)."""
    c = Cpio()
    c.dir("data")
    for name, data in sorted(files.items()):
        c.file(f"data/{name}", data)
    return c.bytes()


# -- the VM -----------------------------------------------------------------------------

class VM:
    """One client host: ``testbed``'s tap port ``vm{index}``, address
    testbed.vm_address(index)."""

    def __init__(self, testbed, index, kernel, workdir, data=None, mem=512, boot_timeout=120):
        self.testbed = testbed
        self.index = index
        self.kernel = kernel
        self.workdir = workdir
        self.port = f"vm{index}"
        self.ip = testbed.vm_address(index)
        self.data = data or {}
        self.mem = mem
        self.boot_timeout = boot_timeout
        self.proc = None
        self.console_path = os.path.join(workdir, f"{self.port}-console.log")
        self.qemu_log_path = os.path.join(workdir, f"{self.port}-qemu.log")
        self.transcript_path = os.path.join(workdir, f"{self.port}-agent.log")
        self.release = None
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._eof = False
        self._killed = None
        self._next_id = 0

    def _initrd(self):
        base = build_initramfs(self.kernel)
        path = os.path.join(self.workdir, f"{self.port}-initrd")
        with open(path, "wb") as out, open(base, "rb") as f:
            shutil.copyfileobj(f, out)
            out.write(data_archive(self.data))
        return path

    def argv(self):
        mac = "52:54:00:4e:%02x:%02x" % (self.index >> 8, self.index & 0xFF)
        append = (f"console=ttyS0 panic=-1 quiet nfsp_ip={self.ip}/{self.testbed.prefixlen} "
                  f"nfsp_host={self.port}")
        return [QEMU, "-accel", "tcg", "-m", str(self.mem), "-smp", "1", "-nodefaults",
                "-display", "none", "-no-reboot",
                "-kernel", self.kernel.image, "-initrd", self._initrd(), "-append", append,
                "-serial", f"file:{self.console_path}", "-serial", "stdio",
                "-netdev", f"tap,id=n0,ifname={self.port},script=no,downscript=no",
                "-device", f"virtio-net-pci,netdev=n0,mac={mac}"]

    def start(self):
        os.makedirs(self.workdir, exist_ok=True)
        self.testbed.add_tap(self.port)
        argv = self.testbed.bridge_argv(self.argv())
        self._qemu_log = open(self.qemu_log_path, "wb")
        self._transcript = open(self.transcript_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._qemu_log, start_new_session=True)
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        m = self._wait_for(rb"@@READY ([^\n]*)\n", self.boot_timeout, "the guest to boot")
        self.release = m.group(1).decode()
        return self

    def _read_loop(self):
        while True:
            chunk = self.proc.stdout.read1(65536)
            self._transcript.write(chunk)
            self._transcript.flush()
            with self._cond:
                if not chunk:
                    self._eof = True
                    self._cond.notify_all()
                    return
                self._buf += chunk
                self._cond.notify_all()

    def _wait_for(self, pattern, timeout, what):
        """Wait (bounded) for ``pattern`` in the guest's output; consume up to it."""
        rx = re.compile(pattern, re.S)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                m = rx.search(bytes(self._buf))
                if m:
                    del self._buf[:m.end()]
                    return m
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    why = "qemu exited" if self._eof else f"timed out after {timeout}s"
                    break
                self._cond.wait(min(left, 1.0))
        if not self._eof:
            # A guest stuck in a command would hold every later one for as
            # long: power it off, so later commands fail at once.
            self.proc.kill()
            self._killed = why
        raise VMError(f"{self.port} ({self.kernel.label}): waiting for {what}: {why}\n"
                      f"{self.diagnostics()}")

    def diagnostics(self):
        def tail(path, n=3000):
            try:
                with open(path, "rb") as f:
                    return f.read().decode(errors="replace")[-n:]
            except OSError:
                return ""
        return (f"--- guest console (tail) ---\n{tail(self.console_path)}\n"
                f"--- qemu ---\n{tail(self.qemu_log_path, 1000)}")

    def sh(self, script, timeout=120):
        """Run ``script`` (sh) in the guest; (exit status, output)."""
        if self._killed:
            raise VMError(f"{self.port}: not running (powered off: an earlier command "
                          f"{self._killed})")
        if self.proc is None or self.proc.poll() is not None:
            raise VMError(f"{self.port}: not running\n{self.diagnostics()}")
        self._next_id += 1
        cid = f"c{self._next_id}"
        line = f"{cid} {base64.b64encode(script.encode()).decode()}\n"
        self.proc.stdin.write(line.encode())
        self.proc.stdin.flush()
        m = self._wait_for(rb"@@" + cid.encode() + rb"@@BEGIN\n(.*?)\n@@" + cid.encode()
                           + rb"@@END (\d+)\n", timeout, f"command {script[:200]!r}")
        return int(m.group(2)), m.group(1).decode(errors="replace")

    def check(self, script, timeout=120):
        """Run ``script`` under ``set -e``; its output, or VMError quoting it
        when a step fails."""
        rc, out = self.sh("set -e\n" + script, timeout)
        if rc != 0:
            raise VMError(f"{self.port} ({self.kernel.label}): exit status {rc} from\n"
                          f"{script}\n--- output ---\n{out}\n--- guest dmesg ---\n"
                          f"{self.sh('dmesg | grep -v drop_caches | tail -n 30', 30)[1]}")
        return out

    def results(self, script, timeout=120):
        """Run a workload (under ``set -e``); its ``R key value...`` lines as
        {key: value}."""
        out = self.check(script, timeout)
        res = {}
        for line in out.splitlines():
            if line.startswith("R "):
                _, key, *value = line.split(" ", 2)
                if key in res:
                    raise VMError(f"result {key} reported twice:\n{out}")
                res[key] = value[0] if value else ""
        return res

    def kill(self):
        """Power the guest off at once, as a client host crashes: no unmount,
        no lock given back, nothing said to the server."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._killed = "killed by the test"

    def stop(self, timeout=30):
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                try:
                    self.proc.stdin.write(b"@@EXIT\n")
                    self.proc.stdin.flush()
                    self.proc.wait(timeout=timeout)
                except (BrokenPipeError, subprocess.TimeoutExpired):
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            self.proc = None
            self._qemu_log.close()
            self.testbed.remove_tap(self.port)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
