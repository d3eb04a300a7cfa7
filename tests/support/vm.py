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
# What the stock kernel must insmod for a virtio NIC and the NFS v2/v3 client;
# their dependencies are resolved from the modules themselves.
STOCK_MODULES = ("virtio_pci", "virtio_net", "nfsv2", "nfsv3")


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
export PATH=/bin TZ=UTC
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /tmp /mnt && mount -t tmpfs tmp /tmp
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
umount -a -r -f -t nfs 2>/dev/null
echo "@@BYE" >&4
reboot -f
"""

WL_SH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guest_wl.sh")


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def build_initramfs(kernel, cache_dir=CACHE_DIR):
    """The guest's base initramfs (gzip), cached by content under cache_dir."""
    busybox = _read(BUSYBOX)
    modules = [(os.path.basename(p), _read(p)) for p in kernel.modules]
    wl = _read(WL_SH)
    h = hashlib.sha256(busybox + INIT.encode() + wl)
    for name, data in modules:
        h.update(name.encode() + hashlib.sha256(data).digest())
    path = os.path.join(cache_dir, "initramfs", f"{kernel.label}-{h.hexdigest()[:16]}.cpio.gz")
    if os.path.exists(path):
        return path
    c = Cpio()
    for d in ("bin", "dev", "etc", "lib", "lib/modules", "proc", "sys", "tmp", "mnt", "data"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    c.file("bin/busybox", busybox, 0o755)
    c.file("init", INIT.encode(), 0o755)
    c.file("lib/wl.sh", wl)
    c.file("etc/modules", "".join(f"{n}\n" for n, _ in modules).encode())
    for name, data in modules:
        c.file(f"lib/modules/{name}", data)
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
