"""GETATTR and CREATE over NFSv4.1 next to NFSv3, one run, on loopback.

`python3 -m tools.dev.benchmarks.nfs4rates [--seconds S] [--clients 1,8]`
(root: namespaces) prints one JSON row per (protocol, operation, clients)
and a markdown table.

Each client is a Python process of its own with its own TCP connection (and,
over NFSv4.1, its own client ID and session), one call at a time, against a
loopback NFSP with two iods; with several, a sync export's group commit
answers many with one flush. What is counted as one operation is what the
Linux client sends for it:

* GETATTR: v3 GETATTR; v4.1 SEQUENCE+PUTFH+GETATTR with the attributes Linux
  asks when it revalidates an inode (LINUX_GETATTR).
* CREATE: v3 CREATE (UNCHECKED, mode); v4.1 SEQUENCE+PUTFH+OPEN(create)+GETFH+
  GETATTR then SEQUENCE+PUTFH+CLOSE, since open(O_CREAT) then close(2) is what
  a v4 client sends for a new file (two round trips against v3's one).

The client costs about as much CPU per call as the server, so the rate is
bounded by both; nfspd's own CPU per operation (from /proc/PID/stat) is the
figure that does not depend on the client or on the rest of the machine.
"""

import json
import subprocess
import sys
import tempfile
import time

import click

from common import nfs4
from common.nfs4 import nfs_opnum4 as O
from tools.dev import REPO
from tools.dev.benchmarks.harness import child_env, proc_cpu
from tools.dev.benchmarks.servers import LoopbackNfsp
from tools.dev.nfs4client import Nfs4Client, fattr, op
from tools.dev.nfsclient import connect

NFSP_IODS = 2

# What Linux 6.1 asks in a GETATTR that revalidates a regular file
# (nfs4_fattr_bitmap): type, change, size, fsid, fileid, mode, numlinks,
# owner, owner_group, rawdev, space_used, the three times, mounted_on_fileid.
LINUX_GETATTR = (
    nfs4.FATTR4_TYPE, nfs4.FATTR4_CHANGE, nfs4.FATTR4_SIZE, nfs4.FATTR4_FSID,
    nfs4.FATTR4_FILEID, nfs4.FATTR4_MODE, nfs4.FATTR4_NUMLINKS, nfs4.FATTR4_OWNER,
    nfs4.FATTR4_OWNER_GROUP, nfs4.FATTR4_RAWDEV, nfs4.FATTR4_SPACE_USED,
    nfs4.FATTR4_TIME_ACCESS, nfs4.FATTR4_TIME_METADATA, nfs4.FATTR4_TIME_MODIFY,
    nfs4.FATTR4_MOUNTED_ON_FILEID)


def _v3(host, export, index):
    client, root = connect(host, export, vers=3, transport="tcp")
    fh = client.create(root, b"getattr-v3")
    n = [0]

    def getattr_():
        client.getattr(fh)

    def create():
        n[0] += 1
        client.create(root, b"c3-%d-%d" % (index, n[0]))
    return {"getattr": getattr_, "create": create}


def _v41(host, export, index):
    client = Nfs4Client(host).mount()
    root = client.lookup_path(export)
    sid, fh = client.open(root, b"getattr-v41-%d" % index)
    client.close_file(fh, sid)
    bitmap = nfs4.attrs_to_bitmap4(LINUX_GETATTR)
    n = [0]

    def getattr_():
        client.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)), op(O.OP_GETATTR, nfs4.GETATTR4args(bitmap)))

    def create():
        n[0] += 1
        how = nfs4.openflag4(nfs4.opentype4.OPEN4_CREATE, nfs4.createhow4(
            nfs4.createmode4.UNCHECKED4, fattr({nfs4.FATTR4_MODE: 0o644})))
        args = nfs4.OPEN4args(0, 3, 0, nfs4.open_owner4(client.clientid, b"bench"), how,
                              nfs4.open_claim4(nfs4.open_claim_type4.CLAIM_NULL,
                                                              b"c4-%d-%d" % (index, n[0])))
        res = client.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(root)), op(O.OP_OPEN, args),
                        op(O.OP_GETFH), op(O.OP_GETATTR, nfs4.GETATTR4args(bitmap)))
        client.close_file(res[2].body.object, res[1].body.stateid)
    return {"getattr": getattr_, "create": create}


CLIENTS = {"v3": _v3, "v4.1": _v41}
OPS = ("getattr", "create")


def worker(host, export, proto, operation, seconds, index=0):
    """Inside the server's namespace: the count of `operation` done in `seconds`
    (``index`` tells apart the names of concurrent clients)."""
    fn = CLIENTS[proto](host, export, index)[operation]
    fn()  # a first call outside the timing: connections and caches warm
    print("ready", flush=True)
    sys.stdin.readline()
    count, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        fn()
        count += 1
    print(json.dumps({"count": count, "seconds": time.monotonic() - t0}), flush=True)


def measure(srv, proto, operation, seconds, clients=1):
    procs = []
    try:
        for index in range(clients):
            argv = srv.client_prefix()([sys.executable, "-m", "tools.dev.benchmarks.nfs4rates",
                                        "worker", srv.server, srv.export, proto, operation,
                                        str(seconds), "--index", str(index)])
            procs.append(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          text=True, cwd=REPO, env=child_env()))
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{proto} {operation}: a client did not start")
        cpu0 = proc_cpu(srv.pid)
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [json.loads(p.stdout.readline()) for p in procs]
        cpu = proc_cpu(srv.pid) - cpu0
    finally:
        for p in procs:
            p.kill()
            p.wait()
    count = sum(o["count"] for o in outs)
    return {"protocol": proto, "op": operation, "clients": clients,
            "ops_per_s": round(sum(o["count"] / o["seconds"] for o in outs), 1),
            "server_cpu_us_per_op": round(cpu / count * 1e6, 1) if count else None}


def run(seconds, clients=(1,)):
    rows = []
    with (tempfile.TemporaryDirectory(prefix="nfs4rates-") as work,
          LoopbackNfsp(work, NFSP_IODS) as srv):
        for operation in OPS:
            for n in clients:
                for proto in CLIENTS:
                    rows.append(measure(srv, proto, operation, seconds, n))
    return rows


def table(rows):
    lines = ["| operation | clients | protocol | ops/s | nfspd CPU per op (us) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['op']} | {r['clients']} | {r['protocol']} | {r['ops_per_s']:,.0f} | "
              f"{r['server_cpu_us_per_op']} |" for r in rows]
    return "\n".join(lines)


def _counts(ctx, param, value):
    try:
        counts = tuple(int(v) for v in value.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise click.BadParameter("positive integers separated by commas, say 1,8")
    return counts


@click.group(invoke_without_command=True)
@click.option("--seconds", default=5.0, show_default=True, type=click.FloatRange(0.5),
              help="Time per (protocol, operation, clients).")
@click.option("--clients", default="1", show_default=True, callback=_counts,
              help="Concurrent clients, comma-separated counts (a run for each).")
@click.pass_context
def cli(ctx, seconds, clients):
    """GETATTR and CREATE rates over NFSv4.1 next to NFSv3 (needs root)."""
    if ctx.invoked_subcommand is None:
        rows = run(seconds, clients)
        for r in rows:
            print(json.dumps(r))
        print(table(rows))


@cli.command("worker", hidden=True)
@click.argument("host")
@click.argument("export")
@click.argument("proto", type=click.Choice(sorted(CLIENTS)))
@click.argument("operation", type=click.Choice(OPS))
@click.argument("seconds", type=float)
@click.option("--index", default=0, type=click.IntRange(0))
def worker_cmd(host, export, proto, operation, seconds, index):
    worker(host, export, proto, operation, seconds, index)


if __name__ == "__main__":
    cli()
