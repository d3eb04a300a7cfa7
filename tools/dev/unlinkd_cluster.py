"""A small NFSP cluster for the unlinkd and scrub tests and the remove
benchmark: real iod processes (separate data directories, loopback ports of a
private network namespace), a real unlinkd process, and the metaserver's
namespace as the real MetaFS in-process with the real purge sink
(nfspd/purgequeue.py).

File data reaches the iods the way the metaserver sends it: iod protocol WRITEs
over TCP (pipelined), at the stripes common/striping.py assigns.
"""

import os
import signal
import subprocess
import sys

import trio

from common import keyfile
from common.iodproto import Op
from common.runtime import metarecord, purgejournal
from common.runtime.purgewaker import socket_path
from nfspd.datapath import LocalDataPath
from nfspd.fs.commit import GroupCommit
from nfspd.fs.metafs import MetaFS
from nfspd.fs.types import Caller, CreateHow, SetAttr
from nfspd.purgequeue import open_purge_queue
from tools.dev import REPO, daemon_python
from tools.dev.daemons import Iod
from tools.dev.netns import stop, wait_until

ROOT = Caller(0, 0)
HANDLE_KEY = b"unlinkd test handle key 0123456789"
BASE_PORT = 2050
STRIPE = 65536


class Cluster:
    """``group_commit``: removals made durable many to a flush, as nfspd's
    (nfspd/fs/commit.py); remove_batch() then waits for one flush."""

    def __init__(self, ns, workdir, n_iods, batch_max=256, batch_delay=0.05,
                 group_commit=False):
        self.ns = ns
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.key_path = os.path.join(self.workdir, "cluster.key")
        self.keys = keyfile.generate(self.key_path)
        self.iods = [Iod(ns, os.path.join(self.workdir, f"iod{i}"), self.key_path,
                         port=BASE_PORT + i, slot=f"{i}/{max(n_iods, 4)}") for i in range(n_iods)]
        self.iods_conf = os.path.join(self.workdir, "iods.conf")
        with open(self.iods_conf, "w") as f:
            f.write("".join(f"{iod.address}\n" for iod in self.iods))
        self.export = os.path.join(self.workdir, "export")
        os.makedirs(self.export)
        self.state = os.path.join(self.workdir, "state")
        self.batch_max, self.batch_delay = batch_max, batch_delay
        self.unlinkd = None
        self.unlinkd_log = os.path.join(self.workdir, "unlinkd.log")
        self.queue = None
        self.fs = None
        self.group_commit = group_commit
        self.commit = None
        self.start_metaserver()

    # -- the metaserver's side -------------------------------------------------------

    def start_metaserver(self):
        self.queue = open_purge_queue(self.state)
        unused = LocalDataPath(os.path.join(self.workdir, "unused-local-data"))
        if self.group_commit:
            self.commit = GroupCommit()
        self.fs = MetaFS(self.export, 1, HANDLE_KEY, unused, purge=self.queue,
                         commit=self.commit)
        if self.group_commit:
            self.queue.export_on(self.fs.dev, self.fs.dir_fsync_commits_all)  # as nfspd does
        # Setting files up need not be durable (it is not what is tested, and
        # fsyncs are slow on a busy machine); removals go through self.fs.
        self.setup_fs = MetaFS(self.export, 1, HANDLE_KEY, unused, purge=self.queue,
                               sync_metadata=False)

    def stop_metaserver(self):
        self.fs.close()
        self.setup_fs.close()
        if self.commit is not None:
            self.commit.close()
            self.commit = None
        self.queue.close()

    @property
    def journal_dir(self):
        return self.queue.directory

    def create(self, name, d=None):
        fh, _, _ = self.setup_fs.create(d or self.setup_fs.root_fh, name, ROOT,
                                        CreateHow.UNCHECKED, SetAttr(mode=0o644))
        return fh

    def identity(self, relpath):
        path = os.path.join(self.export, os.fsdecode(relpath))
        return os.stat(path).st_ino, metarecord.of_path(path).seed

    def create_with_data(self, names, stripes=1):
        """Create files and write ``stripes`` stripes of each on the iods; returns
        {name: (ino, seed)}."""
        made = {}
        writes = []
        for name in names:
            self.create(name)
            ino, seed = made[name] = self.identity(name)
            size = (stripes - 1) * STRIPE + 1
            fh = self.setup_fs.lookup(self.setup_fs.root_fh, name, ROOT)[0]
            self.setup_fs.setattr(fh, ROOT, SetAttr(size=size))
            # The data goes straight to the iods, as a pNFS client's through
            # a layout for writing: the file is first marked as one with
            # data, which its removal purges (common/metafile.py, NO_DATA).
            trio.run(self.setup_fs.settled, fh, True)
            for i in range(stripes):
                writes.append(((seed + i) % len(self.iods), ino, seed, i * STRIPE))
        self.write_stripes(writes)
        return made

    def write_stripes(self, writes):
        """[(iod index, ino, seed, offset)]: one byte each, pipelined per iod."""
        per_iod = {}
        for index, ino, seed, offset in writes:
            per_iod.setdefault(index, []).append((ino, seed, offset))
        for index, items in per_iod.items():
            with self.iods[index].client("tcp", timeout=120) as c:
                for start in range(0, len(items), 200):
                    chunk = items[start:start + 200]
                    for ino, seed, off in chunk:
                        c.send(Op.WRITE, ino=ino, seed=seed, offset=off, data=b"d", stable=False)
                    for _ in chunk:
                        answer = c.receive()
                        assert answer.op == Op.REPLY and answer.status == 0, answer

    def remove(self, name, d=None):
        self.fs.remove(d or self.fs.root_fh, name, ROOT)

    def remove_batch(self, names, d=None):
        """Remove each name, then wait for the flush that makes them durable
        (and hands their purges to the journal) with a group commit."""
        for name in names:
            self.remove(name, d)
        ticket = self.fs.stable_ticket()
        if ticket is not None:
            trio.run(self.fs.stable, ticket)

    # -- iods and unlinkd ------------------------------------------------------------

    def call(self, iod, op, timeout=5, **fields):
        """One request to ``iod`` and its answer."""
        with iod.client("tcp", timeout) as c:
            return c.call(op, **fields)

    def start_iods(self):
        for iod in self.iods:
            iod.launch()
        for iod in self.iods:
            iod.wait_ready(30)

    def stop_iods(self):
        for iod in self.iods:
            if iod.proc is not None:
                iod.proc.send_signal(signal.SIGTERM)
        for iod in self.iods:
            iod.stop()

    def start_unlinkd(self):
        env = dict(os.environ, PYTHONPATH=REPO)
        with open(self.unlinkd_log, "ab") as log:
            self.unlinkd = self.ns.popen(
                [daemon_python(), "-m", "unlinkd.cli", "--journal", self.journal_dir,
                 "--iods", self.iods_conf, "--key", self.key_path,
                 "--batch-max", str(self.batch_max), "--batch-delay", str(self.batch_delay),
                 "--retry-max", "0.5", "--log-level", "debug"],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_until(lambda: os.path.exists(socket_path(self.journal_dir)), 20,
                   what="unlinkd listening", abort=self._unlinkd_died)

    def _unlinkd_died(self):
        if self.unlinkd is not None and self.unlinkd.poll() is not None:
            return f"unlinkd exited with {self.unlinkd.returncode}:\n{self.unlinkd_log_text()}"

    def unlinkd_log_text(self):
        with open(self.unlinkd_log, errors="replace") as f:
            return f.read()

    def stop_unlinkd(self):
        if self.unlinkd is not None:
            rc = stop(self.unlinkd)
            self.unlinkd = None
            return rc

    def wait_drained(self, timeout=120):
        """Every iod acknowledged every journaled purge (read from unlinkd's
        durable progress file, as a restarted unlinkd would)."""
        names = [iod.address for iod in self.iods]
        wait_until(lambda: not any(purgejournal.backlog(self.journal_dir, names).values()), timeout,
                   what="every iod acknowledged every purge", abort=self._unlinkd_died)

    def batch_sizes(self):
        sizes = []
        for line in self.unlinkd_log_text().splitlines():
            if ": PURGE of " in line and "acknowledged" in line:
                sizes.append(int(line.split(": PURGE of ")[1].split()[0]))
        return sizes

    def scrub(self, *args):
        return self.ns.run([sys.executable, "-m", "tools.scrub", "--iods", self.iods_conf,
                            "--key", self.key_path, "--state-dir", self.state, *args,
                            self.export], env=dict(os.environ, PYTHONPATH=REPO), timeout=120)

    def close(self):
        self.stop_unlinkd()
        self.stop_iods()
        self.stop_metaserver()
