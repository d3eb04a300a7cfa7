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
import time

import trio

from common import iodproto, keyfile
from common.iodproto import Message, Op
from common.metafile import Metafile
from common.runtime.datastore import DataStore
from nfspd.datapath import LocalDataPath
from nfspd.fs.metafs import MetaFS
from nfspd.fs.types import Caller, CreateHow, SetAttr
from nfspd.purgequeue import open_purge_queue
from tools.dev import REPO
from tools.dev.netns import stop, wait_until
from common.runtime import purgejournal
from common.runtime.iodclient import IodConnection

ROOT = Caller(0, 0)
HANDLE_KEY = b"unlinkd test handle key 0123456789"
BASE_PORT = 2050
STRIPE = 65536


class Iod:
    def __init__(self, cluster, index):
        self.cluster = cluster
        self.port = BASE_PORT + index
        self.name = f"127.0.0.1:{self.port}"
        self.data = os.path.join(cluster.workdir, f"iod{index}")
        self.log_path = os.path.join(cluster.workdir, f"iod{index}.log")
        self.proc = None

    def start(self):
        self.launch()
        return self.wait_ready()

    def launch(self):
        env = dict(os.environ, PYTHONPATH=REPO)
        with open(self.log_path, "ab") as log:
            self.proc = self.cluster.ns.popen(
                [sys.executable, "-m", "iod.cli", "--data-dir", self.data,
                 "--key", self.cluster.key_path, "--listen", "127.0.0.1", "--port", str(self.port),
                 "--log-level", "debug"], stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self):
        wait_until(lambda: self.cluster.call(self, Op.PING).op == Op.PONG, 30,
                   what=f"iod {self.name} answering PING", abort=self._died)
        return self

    def _died(self):
        if self.proc is not None and self.proc.poll() is not None:
            with open(self.log_path, errors="replace") as f:
                return f"iod {self.name} exited with {self.proc.returncode}:\n{f.read()}"

    def stop(self):
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def held(self):
        """What this iod's data directory holds, read straight from the disk."""
        return set(DataStore(self.data).list())


class Cluster:
    def __init__(self, ns, workdir, n_iods, batch_max=256, batch_delay=0.05):
        self.ns = ns
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.key_path = os.path.join(self.workdir, "cluster.key")
        self.keys = keyfile.generate(self.key_path)
        self.iods = [Iod(self, i) for i in range(n_iods)]
        self.iods_conf = os.path.join(self.workdir, "iods.conf")
        with open(self.iods_conf, "w") as f:
            f.write("".join(f"{iod.name}\n" for iod in self.iods))
        self.export = os.path.join(self.workdir, "export")
        os.makedirs(self.export)
        self.state = os.path.join(self.workdir, "state")
        self.batch_max, self.batch_delay = batch_max, batch_delay
        self.unlinkd = None
        self.unlinkd_log = os.path.join(self.workdir, "unlinkd.log")
        self.queue = None
        self.fs = None
        self.start_metaserver()

    # -- the metaserver's side -------------------------------------------------------

    def start_metaserver(self):
        self.queue = open_purge_queue(self.state)
        unused = LocalDataPath(os.path.join(self.workdir, "unused-local-data"))
        self.fs = MetaFS(self.export, 1, HANDLE_KEY, unused, purge=self.queue)
        # Setting files up need not be durable (it is not what is tested, and
        # fsyncs are slow on a busy machine); removals go through self.fs.
        self.setup_fs = MetaFS(self.export, 1, HANDLE_KEY, unused, purge=self.queue,
                               sync_metadata=False)

    def stop_metaserver(self):
        self.fs.close()
        self.setup_fs.close()
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
        return os.stat(path).st_ino, Metafile.decode(open(path, "rb").read()).seed

    def create_with_data(self, names, stripes=1):
        """Create files and write ``stripes`` stripes of each on the iods; returns
        {name: (ino, seed)}."""
        made = {}
        writes = []
        for name in names:
            self.create(name)
            ino, seed = made[name] = self.identity(name)
            size = (stripes - 1) * STRIPE + 1
            self.setup_fs.setattr(self.setup_fs.lookup(self.setup_fs.root_fh, name, ROOT)[0],
                                  ROOT, SetAttr(size=size))
            for i in range(stripes):
                writes.append(((seed + i) % len(self.iods), ino, seed, i * STRIPE))
        self.write_stripes(writes)
        return made

    def write_stripes(self, writes):
        """[(iod index, ino, seed, offset)]: one byte each, pipelined per iod."""
        per_iod = {}
        for index, ino, seed, offset in writes:
            per_iod.setdefault(index, []).append((ino, seed, offset))

        async def one(iod, items):
            stream = await trio.open_tcp_stream("127.0.0.1", iod.port)
            reader = iodproto.FrameReader()
            sequencer = iodproto.Sequencer()   # WRITEs are stamped (replay protection)
            async with stream:
                for start in range(0, len(items), 200):
                    chunk = items[start:start + 200]
                    frames = b"".join(iodproto.encode(Message(
                        Op.WRITE, start + k + 1, sequencer.stamp(time.time()), ino=ino,
                        seed=seed, offset=off, data=b"d", stable=False), self.keys)
                        for k, (ino, seed, off) in enumerate(chunk))
                    await stream.send_all(frames)
                    answered = 0
                    while answered < len(chunk):
                        data = await stream.receive_some(65536)
                        assert data, f"iod {iod.name} closed the connection"
                        for frame in reader.feed(data):
                            answer = iodproto.decode(frame, self.keys)
                            assert answer.op == Op.REPLY and answer.status == 0, answer
                            answered += 1

        async def all_iods():
            with trio.fail_after(120):
                async with trio.open_nursery() as nursery:
                    for index, items in per_iod.items():
                        nursery.start_soon(one, self.iods[index], items)
        self.ns.inside(trio.run, all_iods)

    def remove(self, name, d=None):
        self.fs.remove(d or self.fs.root_fh, name, ROOT)

    # -- iods and unlinkd ------------------------------------------------------------

    def call(self, iod, op, timeout=5, **fields):
        async def go():
            conn = await IodConnection.connect("127.0.0.1", iod.port, self.keys, timeout=timeout)
            try:
                return await conn.call(op, timeout, **fields)
            finally:
                await conn.aclose()
        return self.ns.inside(trio.run, go)

    def start_iods(self):
        for iod in self.iods:
            iod.launch()
        for iod in self.iods:
            iod.wait_ready()

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
                [sys.executable, "-m", "unlinkd.cli", "--journal", self.journal_dir,
                 "--iods", self.iods_conf, "--key", self.key_path,
                 "--batch-max", str(self.batch_max), "--batch-delay", str(self.batch_delay),
                 "--retry-max", "0.5", "--log-level", "debug"],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        from common.runtime.purgewaker import socket_path
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
        names = [iod.name for iod in self.iods]
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
