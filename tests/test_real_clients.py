"""The metaserver as clients nobody here wrote see it: Debian's rpcinfo,
showmount and libnfs tools, against the real nfspd process in a private
network namespace, with the system rpcbind and with the embedded portmapper."""

import hashlib
import os
import re
import shutil

import pytest

from common import metafile
from tools.dev.netns import wait_until

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("rpcinfo", "showmount", "nfs-cp", "nfs-cat", "nfs-ls", "rpcbind")),
    reason="needs Debian's rpcbind, nfs-common and libnfs-utils (tools/install-deps --test)")


def start_rpcbind(ns):
    ns.popen(["rpcbind", "-f", "-w"])
    wait_until(lambda: ns.run(["rpcinfo", "-p", "127.0.0.1"]).returncode == 0, 10, what="rpcbind")


def rpcinfo_rows(ns):
    out = ns.run(["rpcinfo", "-p", "127.0.0.1"], check=True).stdout
    rows = set()
    for line in out.splitlines()[1:]:
        prog, vers, proto, port = line.split()[:4]
        rows.add((int(prog), int(vers), proto, int(port)))
    return rows


EXPECTED = {(100003, v, p, 2049) for v in (2, 3) for p in ("udp", "tcp")} | \
           {(100003, 4, "tcp", 2049)} | \
           {(100005, v, p, 20048) for v in (1, 2, 3) for p in ("udp", "tcp")}


def test_rpcinfo_shows_nfs_and_mount_registered_with_the_system_rpcbind(ns, nfspd):
    start_rpcbind(ns)
    d = nfspd()
    assert EXPECTED <= rpcinfo_rows(ns)
    d.stop()
    # Unregistered on exit: the portmapper must not point at a dead server.
    assert not {r for r in rpcinfo_rows(ns) if r[0] in (100003, 100005)}


def test_rpcinfo_shows_the_truth_from_the_embedded_portmapper(ns, nfspd):
    nfspd()
    rows = rpcinfo_rows(ns)
    assert EXPECTED <= rows
    assert (100000, 2, "udp", 111) in rows


def test_rpcinfo_pings_each_version_and_nfs4_only_over_tcp(ns, nfspd):
    nfspd()
    for transport, served, refused, high in (("-u", "23", "4", 3), ("-t", "234", "5", 4)):
        for vers in served:
            r = ns.run(["rpcinfo", transport, "127.0.0.1", "nfs", vers])
            assert r.returncode == 0 and "ready and waiting" in r.stdout
        r = ns.run(["rpcinfo", transport, "127.0.0.1", "nfs", refused])
        assert r.returncode != 0
        assert re.search(rf"low version = 2, high version = {high}", r.stdout + r.stderr)


def test_showmount_lists_the_exports(ns, nfspd):
    d = nfspd()
    out = ns.run(["showmount", "-e", "127.0.0.1"], check=True).stdout
    assert d.export in out and "127.0.0.0/8" in out


def nfs_url(d, path="", **q):
    query = "&".join(f"{k}={v}" for k, v in q.items())
    return f"nfs://127.0.0.1{d.export}/{path}" + (f"?{query}" if query else "")


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 3 * 1024 * 1024 + 17])
def test_libnfs_copies_a_file_in_and_out_byte_exact(ns, nfspd, tmp_path, size):
    d = nfspd()
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(size))
    ns.run(["nfs-cp", str(src), nfs_url(d, "f.bin")], check=True)
    out = tmp_path / "out.bin"
    ns.run(["nfs-cp", nfs_url(d, "f.bin"), str(out)], check=True)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    # On the metaserver the file is a small metafile, as in the paper's example:
    # one block on disk, its length telling the size (a hole past the record).
    st = os.stat(os.path.join(d.export, "f.bin"))
    assert st.st_blocks * 512 <= 8192 and st.st_size == metafile.HEADER + size


def test_libnfs_cat_and_ls_see_the_real_size(ns, nfspd, tmp_path):
    d = nfspd()
    src = tmp_path / "hello.txt"
    src.write_bytes(b"hello, nfsp\n" * 1000)
    ns.run(["nfs-cp", str(src), nfs_url(d, "hello.txt")], check=True)
    cat = ns.run(["nfs-cat", nfs_url(d, "hello.txt")], check=True, text=False)
    assert cat.stdout == src.read_bytes()
    ls = ns.run(["nfs-ls", nfs_url(d)], check=True).stdout
    line = next(l for l in ls.splitlines() if l.endswith("hello.txt"))
    assert " 12000 " in f" {line} "


def test_directories_made_on_the_metaserver_show_up_for_clients(ns, nfspd, tmp_path):
    d = nfspd()
    os.makedirs(os.path.join(d.export, "a", "b"))
    src = tmp_path / "x"
    src.write_bytes(b"x" * 10)
    ns.run(["nfs-cp", str(src), nfs_url(d, "a/b/x")], check=True)
    out = ns.run(["nfs-ls", "-R", nfs_url(d)], check=True).stdout
    assert "a/b/x" in out or re.search(r"\bx\b", out)


def test_an_unprivileged_uid_cannot_write_into_roots_directory(ns, nfspd, tmp_path):
    d = nfspd()
    os.chmod(d.export, 0o755)
    src = tmp_path / "x"
    src.write_bytes(b"data")
    r = ns.run(["nfs-cp", str(src), nfs_url(d, "denied", uid=1000, gid=1000)])
    assert r.returncode != 0
    assert not os.path.exists(os.path.join(d.export, "denied"))
