"""A project daemon run as a real process inside a test's namespace: started,
waited for with a bound (failing at once, with its log, if it dies), stopped."""

import os
import subprocess

from tests.support.netns import stop, wait_until

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class DaemonProcess:
    """Subclasses give ``name``, ``argv()`` and ``answers()`` (True once the
    daemon serves), and set ``ns`` and ``log_path``."""

    name = "daemon"
    proc = None

    def argv(self):
        raise NotImplementedError

    def answers(self):
        raise NotImplementedError

    def start(self, timeout=20):
        self.log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONPATH=REPO)
        self.proc = self.ns.popen(self.argv(), stdout=self.log, stderr=subprocess.STDOUT, env=env)

        def died():
            if self.proc.poll() is not None:
                return f"{self.name} exited with {self.proc.returncode}:\n{self.log_text()}"
        wait_until(self.answers, timeout, what=f"{self.name} answering", abort=died)
        return self

    @property
    def pid(self):
        """The daemon's own pid (the popen'd process is nsenter, its parent)."""
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            children = f.read().split()
        return int(children[0]) if children else self.proc.pid

    def stop(self):
        if self.proc is not None:
            rc = stop(self.proc)
            self.proc = None
            self.log.close()
            return rc

    def restart(self):
        self.stop()
        return self.start()

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")
