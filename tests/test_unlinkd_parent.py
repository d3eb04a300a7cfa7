"""unlinkd spawned by nfspd (--parent-pid) goes when nfspd goes, and only then.

nfspd spawns it from a trio worker thread, which trio retires when idle: the
child must follow the parent *process*, not the thread that forked it."""

import os
import subprocess
import sys

from common import keyfile
from tools.dev import REPO
from tools.dev.netns import wait_until

PARENT = r"""
import os, subprocess, sys, threading
argv = sys.argv[1:] + ["--parent-pid", str(os.getpid())]
def spawn():
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    print(child.pid, flush=True)
t = threading.Thread(target=spawn)
t.start()
t.join()          # the forking thread is gone, as trio's retired workers are
print("thread gone", flush=True)
sys.stdin.read()  # until the test closes it, or kills us
"""


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_unlinkd_outlives_the_thread_that_spawned_it_but_not_its_parent(tmp_path):
    key = tmp_path / "key"
    keyfile.generate(str(key))
    conf = tmp_path / "iods.conf"
    conf.write_text("127.0.0.1:9\n")           # nobody there: unlinkd just waits
    log = open(tmp_path / "unlinkd.log", "wb")
    env = dict(os.environ, PYTHONPATH=REPO)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, sys.executable, "-m", "unlinkd.cli",
         "--journal", str(tmp_path / "journal"), "--iods", str(conf), "--key", str(key)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env, text=True)
    try:
        child = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "thread gone"
        # Its start-up line comes after the thread that forked it is gone.
        wait_until(lambda: b"purging on 1 iods" in (tmp_path / "unlinkd.log").read_bytes()
                   or not alive(child), 30, what="unlinkd running")
        assert alive(child), (tmp_path / "unlinkd.log").read_text()
        parent.kill()
        parent.wait()
        wait_until(lambda: not alive(child), 30, what="unlinkd gone after its parent")
        assert b"has exited: shutting down" in (tmp_path / "unlinkd.log").read_bytes()
    finally:
        if parent.poll() is None:
            parent.kill()
        log.close()
