"""Full disks. An iod's (its data directory on a small tmpfs, filled): writes
of its stripes get NFS3ERR_NOSPC (ENOSPC in a kernel client), nothing written
before is damaged, and freeing space brings the service back. The
metaserver's (its export and state on a small tmpfs, filled): CREATE fails
cleanly (NOSPC, no entry left behind), existing files stay readable and
writable (their data is on the iods), and after freeing space CREATE works
again. (tests/test_datapath_e2e.py has the project client's NOSPC on a full
iod; this adds the kernel client, the recovery and the metaserver.)"""

import os

import pytest

from common import striping
from common.nfs3 import nfsstat3, stable_how
from common.runtime import metarecord
from tests.support import faults
from tools.dev.nfsclient import NfsError

SIZES = (0, 4097, 70000, 200000)
NOSPC_MSG = "No space left on device"


def _results(bed, script, timeout=300):
    return bed.vm.results(faults.GUEST_FUNCS + script, timeout)


def _check(bed, w):
    got = _results(bed, w.script())
    diff = {k: (got.get(k), v) for k, v in w.want.items() if got.get(k) != v}
    assert not diff, f"the kernel client read other bytes than were written: {diff}"
    w.lines, w.want = [], {}   # what ran is checked; the model goes on


def _guest_write(path, off, n):
    """Write n bytes with dd and fsync them: 'ok', or the error dd reported."""
    return (f"if fw_put {off} {n} | dd of={path} bs=65536 conv=fsync 2>/tmp/dd.err; then "
            f"R {os.path.basename(path)} ok; else "
            f"R {os.path.basename(path)} \"$(grep -o '{NOSPC_MSG}' /tmp/dd.err | head -n 1)\"; fi")


def _seed(bed, rel):
    return metarecord.of_path(os.path.join(bed.export, rel)).seed


def _stripe_writes(bed, transport, rel, data):
    """WRITE FILE_SYNC stripe by stripe from the project's client: the status
    of each, and which iod holds it."""
    unit = bed.tb.stripe_unit

    def run(c, root):
        d = c.walk(root, os.path.dirname(rel))
        name = os.path.basename(rel).encode()
        try:
            fh = c.lookup(d, name)
        except NfsError:
            fh = c.create(d, name)
        out = []
        for off in range(0, len(data), unit):
            try:
                c.write(fh, off, data[off:off + unit], stable_how.FILE_SYNC)
                out.append(nfsstat3.NFS3_OK)
            except NfsError as e:
                out.append(e.status)
        return out
    statuses = bed.on_client(run, transport)
    seed = _seed(bed, rel)
    return [(s, striping.iod_of(seed, i, bed.tb.n_iods)) for i, s in enumerate(statuses)]


def test_full_iod_disk_is_nospc_damages_nothing_and_freeing_space_brings_it_back(bed, rand):
    pids = {r: bed.pid(r) for r in ("nfspd", "iod0", "iod1")}
    unit = bed.tb.stripe_unit
    data = rand[:6 * unit]
    with bed.mounted("iodfull") as mounts:
        tcp = dict(mounts)["tcp"]
        kept = faults.Workload(rand, f"{tcp}/iodfull/kept", seed=400, label="kept").mixed(4, SIZES)
        kept.lines.append(f"mkdir {tcp}/iodfull/new")
        _check(bed, kept.check_all())
        try:
            assert bed.iod_disk.fill(0) < 4096
            # The project's client: exactly the stripes on iod0 are NOSPC.
            for transport in ("udp", "tcp"):
                got = _stripe_writes(bed, transport, f"iodfull/new/v3-{transport}", data)
                assert {s for s, iod in got if iod == 0} == {nfsstat3.NFS3ERR_NOSPC}, got
                assert {s for s, iod in got if iod == 1} == {nfsstat3.NFS3_OK}, got
            # The kernel clients: ENOSPC from fsync.
            script = "\n".join(_guest_write(f"{mnt}/iodfull/new/k-{proto}", 0, 300000)
                               for proto, mnt in mounts)
            got = _results(bed, script)
            assert got == {f"k-{proto}": NOSPC_MSG for proto, _ in mounts}, got
            # What was written before is intact, from the guest and from another client.
            _check(bed, kept.check_all())
            bed.assert_tree("iodfull/kept", kept.files)
        finally:
            bed.iod_disk.free()
        # Space back, service back: the same writes now succeed, byte-exact.
        for transport in ("udp", "tcp"):
            got = _stripe_writes(bed, transport, f"iodfull/new/v3-{transport}", data)
            assert {s for s, _ in got} == {nfsstat3.NFS3_OK}, got
        script = "\n".join(_guest_write(f"{mnt}/iodfull/new/k-{proto}", 0, 300000)
                           for proto, mnt in mounts)
        assert _results(bed, script) == {f"k-{proto}": "ok" for proto, _ in mounts}
        want = {f"v3-{t}": data for t in ("udp", "tcp")}
        want.update({f"k-{proto}": rand[:300000] for proto, _ in mounts})
        bed.assert_tree("iodfull/new", want)
        bed.assert_tree("iodfull/kept", kept.files)
    # No daemon died of it.
    assert {r: bed.pid(r) for r in pids} == pids


def test_full_metaserver_disk_fails_create_cleanly_and_keeps_files_usable(bed, rand):
    pids = {r: bed.pid(r) for r in ("nfspd", "iod0", "iod1")}

    def create(c, root):
        d = c.walk(root, "msfull")
        with pytest.raises(NfsError) as e:
            c.create(d, b"new")
        with pytest.raises(NfsError) as e2:
            c.lookup(d, b"new")
        return e.value.status, e2.value.status
    with bed.mounted("msfull") as mounts:
        tcp = dict(mounts)["tcp"]
        w = faults.Workload(rand, f"{tcp}/msfull", seed=500, label="old").mixed(4, SIZES)
        _check(bed, w.check_all())
        listing = sorted(os.listdir(os.path.join(bed.export, "msfull")))
        try:
            assert bed.ms_disk.fill(0) < 4096
            for transport in ("udp", "tcp"):
                assert bed.on_client(create, transport) == (nfsstat3.NFS3ERR_NOSPC,
                                                            nfsstat3.NFS3ERR_NOENT)
            script = "\n".join(
                # (In a subshell: a failed redirection of a special built-in ends the shell.)
                f"if (: > {mnt}/msfull/new-{proto}) 2>/tmp/c.err; then R new-{proto} created; "
                f"else R new-{proto} \"$(grep -o '{NOSPC_MSG}' /tmp/c.err | head -n 1)\"; fi"
                for proto, mnt in mounts)
            got = _results(bed, script)
            assert got == {f"new-{proto}": NOSPC_MSG for proto, _ in mounts}, got
            # Cleanly: nothing was left behind in the export.
            assert sorted(os.listdir(os.path.join(bed.export, "msfull"))) == listing
            # Existing files: readable, and writable (their bytes are on the iods),
            # including growing them (the size is rewritten in place); and
            # removable (the purge journal is written in place too).
            _check(bed, w.check_all())
            names = sorted(w.files)
            w.patch(names[1], 2, 9000).append(names[2], 50000).patch(names[3], 0, 100)
            w.remove(names[0])
            _check(bed, w.check_all())
            bed.assert_tree("msfull", w.files)
        finally:
            bed.ms_disk.free()
        # Space back: CREATE works again.
        w.write("new", 70000)
        _check(bed, w.check_all())
        bed.assert_tree("msfull", w.files)
    assert {r: bed.pid(r) for r in pids} == pids
    bed.wait_purged()
    rc, out = bed.scrub()
    assert rc == 0 and " 0 leaked datafiles" in out, out
