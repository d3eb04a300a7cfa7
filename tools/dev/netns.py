"""Private network namespaces for the harness: a host of our own with only loopback.

A holder process (`unshare --net --mount`, lo up, a private tmpfs on /run) keeps
the namespace alive; daemons and real client tools join it with nsenter, and
the test's own sockets are created inside it from a thread that setns()'d (a
socket stays in the namespace it was created in, whichever thread uses it).
Each test's (or benchmark's) daemons can then own ports 111 and 2049 and rpcbind's socket in
/run without colliding with anything else on the machine.
"""

import concurrent.futures
import ctypes
import os
import shutil
import signal
import subprocess
import time

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def setns(path):
    """Move the calling thread into the network namespace at ``path`` (a
    /proc/PID/ns/net or a bound /run/netns/NAME)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns {path}: {os.strerror(e)}")
    finally:
        os.close(fd)


def available():
    return os.geteuid() == 0 and shutil.which("unshare") and shutil.which("nsenter")


class Namespace:
    def __init__(self):
        script = ("ip link set lo up && mount -t tmpfs -o mode=755 tmpfs /run && "
                  "mkdir -p /run/lock && echo ready && exec sleep 86400")
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", script],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        line = self.holder.stdout.readline()
        if line.strip() != b"ready":
            err = self.holder.stderr.read().decode(errors="replace")
            raise RuntimeError(f"cannot create a network namespace: {err.strip()}")
        self.pid = self.holder.pid
        self._pool = concurrent.futures.ThreadPoolExecutor(1, initializer=self._enter)
        self._children = []

    def _enter(self):
        setns(f"/proc/{self.pid}/ns/net")

    def inside(self, fn, *args, **kwargs):
        """Run fn in a thread that lives in this namespace; sockets it creates
        (e.g. an RpcClient) belong to the namespace."""
        return self._pool.submit(fn, *args, **kwargs).result()

    def argv(self, argv):
        return ["nsenter", "--target", str(self.pid), "--net", "--mount", "--"] + list(argv)

    def run(self, argv, timeout=60, check=False, **kw):
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.argv(argv), timeout=timeout, check=check, **kw)

    def popen(self, argv, **kw):
        p = subprocess.Popen(self.argv(argv), start_new_session=True, **kw)
        self._children.append(p)
        return p

    def close(self):
        for p in self._children:
            stop(p)
        self._pool.shutdown(wait=True)
        try:
            os.killpg(self.holder.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.holder.wait(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def stop(p, timeout=10):
    """SIGTERM, then SIGKILL if it does not go within the bound."""
    if p.poll() is not None:
        return p.returncode
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait(timeout=timeout)


def wait_until(predicate, timeout=15.0, interval=0.05, what="condition", abort=None):
    """Poll a condition with a bound (used for a daemon to come up, never to
    paper over a failing check). ``abort`` returns an error message when
    waiting longer is pointless (the daemon died)."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        if abort is not None:
            message = abort()
            if message:
                raise RuntimeError(message)
        try:
            if predicate():
                return
        except Exception as e:  # the daemon is not listening yet
            last_exc = e
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout}s (last error: {last_exc})")
