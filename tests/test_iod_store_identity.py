"""The iod's data store identity (common/runtime/datastore.py): a real iod in a private
namespace starts only on a marked store (or one it may initialise), reports
the store id in its PONGs, and answers errors, never zeros, once its data
directory is unmounted under it."""

import errno
import os

import pytest

from common.iodproto import Op
from common.runtime.datastore import MARKER
from tests.test_iod_daemon import METASERVER, udp_socket
from tools.dev import REPO
from tools.dev.daemons import Iod
from tools.dev.netns import wait_until

pytestmark = pytest.mark.netns


def marker_id(data_dir, ns=None):
    """The store id in data_dir's marker (read inside ``ns`` when it is on a
    file system mounted there)."""
    path = os.path.join(data_dir, MARKER)
    text = ns.run(["cat", path], check=True).stdout if ns else open(path).read()
    [line] = [x for x in text.splitlines() if x.startswith("id ")]
    return bytes.fromhex(line[3:])


def refused(ns, tmp_path, data_dir, *extra):
    """Run an iod on data_dir that must refuse to start: (exit status, output)."""
    # (--log-level info: the support's debug level shows pyroute2's chatter)
    iod = Iod(ns, str(tmp_path / "refused"), str(tmp_path / "cluster.key"), port=2099,
              data_dir=str(data_dir), extra_args=list(extra) + ["--log-level", "info"])
    done = ns.run(iod.argv(), timeout=60, env=dict(os.environ, PYTHONPATH=REPO))
    return done.returncode, (done.stdout + done.stderr).strip()


def test_a_new_directory_becomes_a_store_whose_id_survives_restarts(iods, tmp_path):
    iod = iods()                                       # its data directory did not exist
    store_id = marker_id(iod.data_dir)
    assert len(store_id) == 16
    assert f"initialised {iod.data_dir} as a new, empty data store: store id " \
           f"{store_id.hex()}" in iod.log_text()
    with iod.client("tcp") as c:
        assert c.call(Op.PING).store == store_id
        assert c.call(Op.WRITE, ino=9, seed=1, offset=0, data=b"kept", stable=True).status == 0
    with iod.client("udp") as c:                 # the stamped PING over UDP too
        assert c.call(Op.PING).store == store_id
    iod.restart()
    assert marker_id(iod.data_dir) == store_id
    assert iod.log_text().count("initialised") == 1
    assert f"(store {store_id.hex()})" in iod.log_text()
    with iod.client("tcp") as c:
        assert c.call(Op.PING).store == store_id
        assert c.call(Op.READ, ino=9, seed=1, offset=0, count=4).data == b"kept"


def test_an_empty_existing_directory_is_refused_until_init(ns, iods, tmp_path):
    empty = tmp_path / "mountpoint"
    empty.mkdir()
    status, out = refused(ns, tmp_path, empty)
    assert status == 1
    [line] = out.splitlines()                       # one clear line
    assert "ERROR" in line and "exists but is empty" in line and "not mounted" in line
    assert "--init" in line and "Traceback" not in out
    assert os.listdir(empty) == []
    iod = iods(data_dir=str(empty), extra_args=["--init"])
    with iod.client("tcp") as c:
        assert c.call(Op.PING).store == marker_id(str(empty))


def test_an_unmarked_directory_with_other_things_in_it_is_refused(ns, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    for extra in ((), ("--init",)):
        status, out = refused(ns, tmp_path, home, *extra)
        assert status == 1
        [line] = out.splitlines()
        assert "not an iod data store" in line and "thesis.tex" in line
    assert sorted(os.listdir(home)) == ["thesis.tex"]


def test_a_corrupt_marker_is_refused(ns, iods, tmp_path):
    iod = iods()
    iod.stop()
    marker = os.path.join(iod.data_dir, MARKER)
    os.chmod(marker, 0o644)
    with open(marker, "w") as f:
        f.write("format 1\nid not-hex\n")
    status, out = refused(ns, tmp_path, iod.data_dir, "--init")
    assert status == 1
    [line] = out.splitlines()
    assert f"{marker} is corrupt" in line


def test_a_second_iod_on_the_same_directory_is_refused(ns, iods, tmp_path):
    iod = iods()
    status, out = refused(ns, tmp_path, iod.data_dir)
    assert status == 1 and "in use by another iod" in out
    assert iod.answers()


def test_an_unmounted_data_directory_answers_errors_never_zeros(ns, iods, tmp_path):
    data_dir = str(tmp_path / "disk")
    os.makedirs(data_dir)
    ns.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", data_dir], check=True)
    iod = iods(data_dir=data_dir, extra_args=["--init"])
    client = ns.inside(udp_socket)
    try:
        with iod.client("tcp") as c:
            store_id = c.call(Op.PING).store
            assert store_id == marker_id(data_dir, ns)
            assert c.call(Op.WRITE, ino=5, seed=5, offset=0, data=b"precious",
                          stable=True).status == 0
            assert c.call(Op.READ, ino=5, seed=5, offset=0, count=8).data == b"precious"

            # The disk goes away under the running iod (in the test's own
            # mount namespace, which the iod shares).
            ns.run(["umount", "-l", data_dir], check=True)
            # the path now shows the bare mount point
            assert ns.run(["ls", "-A", data_dir], check=True).stdout == ""

            pong = c.call(Op.PING)                # a PING checks the store at once
            assert pong.op == Op.PONG and pong.store is None
            read = c.call(Op.READ, ino=5, seed=5, offset=0, count=8)
            assert (read.op, read.status, read.data) == (Op.REPLY, errno.EIO, None)
            assert "data store lost" in read.message and "unmounted" in read.message
            write = c.call(Op.WRITE, ino=6, seed=6, offset=0, data=b"new", stable=True)
            assert write.status == errno.EIO
            assert c.call(Op.LIST).status == errno.EIO
            assert c.call(Op.PURGE, files=[(5, 5)]).status == errno.EIO
        with iod.client("udp") as requester:
            # The forwarded READ of a UDP client: the error goes back to the
            # requester (the metaserver, which answers NFS3ERR_IO), and the
            # client gets nothing from the iod, zeros least of all.
            answer = requester.call(Op.READ, ino=5, seed=5, offset=0, count=8,
                                    client=client.getsockname(), source=METASERVER, head=b"")
            assert answer.status == errno.EIO
            # A spoofed reply would have been sent before that answer: the
            # first datagram the client has is the one sent to it now.
            requester.sock.sendto(b"sentinel", client.getsockname())
            assert client.recvfrom(65536)[0] == b"sentinel"
    finally:
        client.close()
    log = iod.log_text()
    assert log.count(f"data store {store_id.hex()} lost: the file system holding "
                     f"{data_dir} was unmounted") == 1
    wait_until(lambda: iod.counters_now().get("error_eio", 0) >= 5, 10, what="EIO counted")
    assert iod.counters()["store_lost"] == 1
    assert iod.stop() == 0
