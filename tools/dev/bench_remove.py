"""Remove-rate benchmark (not a test): ``sudo python3 -m tools.dev.bench_remove [--files N]
[--iods 1,4] [--no-sync]``.

For each iod count: a fresh cluster (real iods and unlinkd in a private network
namespace, MetaFS in-process with the real purge sink), N files with one stripe
of data each, then N REMOVEs in a burst through MetaFS (what an NFS REMOVE does
minus RPC decoding). Prints the remove rate and latencies, how long the iods
took to be rid of everything after the last REMOVE, and the PURGE batch sizes
unlinkd logged. The journal's own cost is measured separately, as the same
burst with a do-nothing sink.
"""

import argparse
import os
import statistics
import tempfile
import time

from nfspd.datapath import LocalDataPath
from nfspd.fs.metafs import MetaFS
from nfspd.fs.types import CreateHow, SetAttr
from tools.dev.netns import Namespace
from tools.dev.unlinkd_cluster import HANDLE_KEY, ROOT, Cluster


def summarise(latencies, total, n):
    lat = sorted(latencies)
    return (f"{n / total:7.0f} removes/s, latency median {statistics.median(lat) * 1e3:.2f} ms, "
            f"p99 {lat[int(len(lat) * 0.99)] * 1e3:.2f} ms")


def burst(fs, names):
    latencies = []
    t0 = time.perf_counter()
    for name in names:
        t = time.perf_counter()
        fs.remove(fs.root_fh, name, ROOT)
        latencies.append(time.perf_counter() - t)
    return latencies, time.perf_counter() - t0


def with_iods(n_iods, n_files, sync):
    with Namespace() as ns, tempfile.TemporaryDirectory(prefix="nfsp-bench-") as work:
        c = Cluster(ns, work, n_iods, batch_max=1024, batch_delay=0.2)
        try:
            c.fs.sync_metadata = sync
            c.start_iods()
            c.start_unlinkd()
            names = [b"f%06d" % i for i in range(n_files)]
            c.create_with_data(names, stripes=1)
            latencies, total = burst(c.fs, names)
            t = time.perf_counter()
            c.wait_drained(timeout=600)
            drain = time.perf_counter() - t
            held = sum(len(iod.held()) for iod in c.iods)
            sizes = c.batch_sizes()
            print(f"{n_iods} iod(s): {summarise(latencies, total, n_files)}; all purged "
                  f"{drain:.2f}s after the last REMOVE (left on iods: {held}); "
                  f"{len(sizes)} PURGE batches, sizes min {min(sizes)} "
                  f"mean {sum(sizes) / len(sizes):.0f} max {max(sizes)}", flush=True)
        finally:
            c.close()


def without_journal(n_files, sync):
    with tempfile.TemporaryDirectory(prefix="nfsp-bench-") as work:
        export = os.path.join(work, "export")
        os.mkdir(export)
        fs = MetaFS(export, 1, HANDLE_KEY, LocalDataPath(os.path.join(work, "data")),
                    purge=lambda ino, seed: None, sync_metadata=sync)
        names = [b"f%06d" % i for i in range(n_files)]
        for name in names:
            fs.create(fs.root_fh, name, ROOT, CreateHow.UNCHECKED, SetAttr(mode=0o644))
        latencies, total = burst(fs, names)
        fs.close()
        print(f"no journal (do-nothing sink): {summarise(latencies, total, n_files)}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--iods", default="1,4")
    ap.add_argument("--no-sync", action="store_true",
                    help="an async export (MetaFS does not fsync the directory)")
    args = ap.parse_args()
    sync = not args.no_sync
    without_journal(args.files, sync)
    for n in (int(x) for x in args.iods.split(",")):
        with_iods(n, args.files, sync)


if __name__ == "__main__":
    main()
