"""The children of `nfsp up`, supervised as systemd's Restart=on-failure does.

A daemon that exits unexpectedly after it has served is started again with the
same command line, after a back-off (0.5 s, doubling to 30 s; back to 0.5 s
once it has stayed up a while), at most BURST times in WINDOW seconds: past
that it stays down, with one ERROR line, while the rest keeps serving (nfspd
answers JUKEBOX for the stripes of a missing iod; clients wait). A daemon that
dies before it ever served (bad configuration: a data directory it cannot use,
a port taken) is not restarted: that is ChildDied, and `nfsp up` stops.

Everything is waited for in one select(): signals through the wakeup fd,
exits through pidfds, restarts as deadlines.
"""

import collections
import ctypes
import logging
import os
import selectors
import signal
import subprocess
import time

from common.runtime.pidfd import pidfd_open

log = logging.getLogger("nfsp")

PR_SET_PDEATHSIG = 1
HISTORY = 20          # events kept per daemon for `nfsp status`


class RestartPolicy:
    """When to restart a daemon that exited: pure, the time is an argument."""

    def __init__(self, first_delay=0.5, max_delay=30.0, burst=5, window=300.0, stable=60.0):
        self.first_delay, self.max_delay = first_delay, max_delay
        self.burst, self.window = burst, window
        self.stable = stable     # up this long: the next failure starts the back-off anew

    def new_state(self):
        return {"delay": self.first_delay, "recent": collections.deque()}

    def next_delay(self, state, now, ran_for):
        """Seconds to wait before the next start, or None: too many restarts
        in the window, leave it down."""
        if ran_for >= self.stable:
            state["delay"] = self.first_delay
        recent = state["recent"]
        while recent and now - recent[0] > self.window:
            recent.popleft()
        if len(recent) >= self.burst:
            return None
        recent.append(now)
        delay = state["delay"]
        state["delay"] = min(self.max_delay, delay * 2)
        return delay


def _child_setup():
    # Own process group: a terminal's Ctrl-C reaches only `nfsp up`, which then
    # stops nfspd before the iods it still needs. PDEATHSIG: if `nfsp up` is
    # killed outright its children do not outlive it.
    os.setpgid(0, 0)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def describe_status(rc):
    if rc is None:
        return "is running"
    if rc < 0:
        return f"was killed by {signal.Signals(-rc).name}"
    return f"exited with status {rc}"


class Child:
    """One supervised daemon; the same object across its restarts."""

    def __init__(self, name, argv, env, policy):
        self.name, self.argv, self.env = name, argv, env
        self.policy = policy
        self.restart_state = policy.new_state()
        self.proc = None
        self.pidfd = None
        self.started = None        # wall clock of the current start
        self._started_mono = None
        self.served = False        # confirmed ready once: an exit is then a crash
        self.restarts = 0
        self.state = "starting"    # starting, running, restarting, failed, stopped
        self.restart_at = None     # monotonic deadline while restarting
        self.last_exit = None
        self.exited_at = None      # monotonic, while it is down
        self.down_seconds = 0.0    # between crashes and restarts, in total
        self.history = collections.deque(maxlen=HISTORY)

    def spawn(self):
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, env=self.env,
                                     # `nfsp up` runs no threads, so the fork is safe.
                                     preexec_fn=_child_setup)  # noqa: PLW1509
        self.pidfd = pidfd_open(self.proc.pid)
        self.started, self._started_mono = time.time(), time.monotonic()
        if self.exited_at is not None:
            self.down_seconds += self._started_mono - self.exited_at
            self.exited_at = None
        self.state = "running" if self.served else "starting"
        self._event(f"started (pid {self.proc.pid})")

    def describe_exit(self):
        return describe_status(None if self.proc is None else self.proc.poll())

    def status(self, now=None):
        now = time.time() if now is None else now
        alive = self.proc is not None and self.proc.poll() is None
        return {"name": self.name, "state": self.state,
                "pid": self.proc.pid if alive else None,
                "uptime": round(now - self.started, 1) if alive else None,
                "restarts": self.restarts, "last_exit": self.last_exit,
                "down_seconds": round(self.down_seconds + (
                    time.monotonic() - self.exited_at if self.exited_at is not None else 0), 1),
                "history": [{"time": t, "event": e} for t, e in self.history]}

    def _event(self, text):
        self.history.append((round(time.time(), 3), text))

    def _exited(self):
        """Reap it; returns how long it ran (seconds)."""
        self.proc.wait()
        self.exited_at = time.monotonic()
        self._close_pidfd()
        self.last_exit = self.describe_exit()
        self._event(self.last_exit)
        return time.monotonic() - self._started_mono

    def _close_pidfd(self):
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


class Stopped(Exception):
    """A signal asked `nfsp up` to stop."""


class ChildDied(Exception):
    """A daemon died before it ever served: not restarted."""

    def __init__(self, child):
        super().__init__(child.name)
        self.child = child


class Supervisor:
    """``on_change(supervisor)`` is called after every start, exit and restart
    (`nfsp up` writes the status file `nfsp status` reads)."""

    def __init__(self, env, policy=None, on_change=None):
        self.children = []
        self.env = env
        self.policy = policy or RestartPolicy()
        self.on_change = on_change
        self.selector = selectors.DefaultSelector()
        self._wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, lambda *_: None)   # the wakeup fd carries them
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.nfspd = None

    def start(self, name, argv):
        child = Child(name, argv, self.env, self.policy)
        self.children.append(child)
        self._spawn(child)
        return child

    def served(self, children):
        """These children answered: from now on an exit is a crash to restart."""
        for c in children:
            c.served = True
            c.state = "running"
        self._changed()

    def wait(self, timeout):
        """Returns after at most ``timeout`` seconds (None: until a signal);
        raises Stopped on SIGINT/SIGTERM, ChildDied when a child that never
        served exits. Crashes are restarted meanwhile; SIGHUP is passed on to
        nfspd (it reloads the exports and the key)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            now = time.monotonic()
            wake = [c.restart_at for c in self.children if c.restart_at is not None]
            if deadline is not None:
                wake.append(deadline)
            remaining = None if not wake else max(0.0, min(wake) - now)
            for key, _ in self.selector.select(remaining):
                if key.data is not None:
                    self._exited(key.data)
                    continue
                stop = False
                for signum in os.read(self._wake_r, 64):
                    if signum == signal.SIGHUP:
                        if self.nfspd is not None and self.nfspd.proc.poll() is None:
                            self.nfspd.proc.send_signal(signal.SIGHUP)
                    else:
                        stop = True
                if stop:
                    raise Stopped()
            now = time.monotonic()
            for c in self.children:
                if c.restart_at is not None and now >= c.restart_at:
                    c.restart_at = None
                    c.restarts += 1
                    self._spawn(c)
            if deadline is not None and now >= deadline:
                return

    def _spawn(self, child):
        child.spawn()
        self.selector.register(child.pidfd, selectors.EVENT_READ, child)
        self._changed()

    def _exited(self, child):
        self.selector.unregister(child.pidfd)
        ran_for = child._exited()
        if not child.served:
            child.state = "failed"
            self._changed()
            raise ChildDied(child)
        delay = self.policy.next_delay(child.restart_state, time.monotonic(), ran_for)
        if delay is None:
            child.state = "failed"
            log.error("%s %s; it was restarted %d times in the last %g s: leaving it down "
                      "(the rest keeps serving; restart `nfsp up` once the cause is fixed)",
                      child.name, child.last_exit, self.policy.burst, self.policy.window)
        else:
            child.state = "restarting"
            child.restart_at = time.monotonic() + delay
            log.warning("%s %s unexpectedly; restarting it in %g s (restart %d)",
                        child.name, child.last_exit, delay, child.restarts + 1)
        self._changed()

    def _changed(self):
        if self.on_change is not None:
            self.on_change(self)

    def stop(self, children, timeout):
        """SIGTERM, then SIGKILL past the bound. Returns the lines describing
        any child that did not stop cleanly."""
        problems = []
        for c in children:
            c.restart_at = None
        children = [c for c in children if c.proc is not None and c.proc.poll() is None]
        for c in children:
            c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for c in children:
            c.state = "stopped"
            try:
                c.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait()
                problems.append(f"{c.name} did not stop within {timeout:g} s; killed it")
                continue
            if c.proc.returncode == -signal.SIGTERM and not c.served:
                # Still starting (its handler not yet installed): our SIGTERM
                # ended it as asked, before it held anything to shut down.
                continue
            if c.proc.returncode != 0:
                problems.append(f"{c.name} {c.describe_exit()} while stopping")
        return problems

    def stop_all(self, nfspd_timeout, others_timeout):
        """nfspd first (it may still be sending to the iods), then the iods."""
        nfspd = [c for c in self.children if c is self.nfspd]
        others = [c for c in self.children if c is not self.nfspd]
        problems = self.stop(nfspd, nfspd_timeout) + self.stop(others, others_timeout)
        for c in self.children:
            c._close_pidfd()
        return problems

    def status(self):
        now = time.time()
        return [c.status(now) for c in self.children]
