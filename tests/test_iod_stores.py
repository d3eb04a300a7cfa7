"""Store identity on the metaserver's side (common/runtime/iodstores.py, nfspd/iodlink.py):
IodStores on its own, then a real nfspd with real iods where one comes back
with another data directory."""

import json
import logging
import os
import sys

import pytest
from click.testing import CliRunner

from common.nfs3 import nfsstat3, stable_how
from common.runtime.iodstores import IodStores, forget
from tools.dev.netns import wait_until
from tools.dev.nfsclient import NfsError
from tools.iodstores import cli as accept_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
A, B, C = bytes(range(16)), bytes(range(1, 17)), bytes(range(2, 18))
U = 65536


# --- IodStores ---------------------------------------------------------------------


def test_first_sight_is_remembered_durably_and_checked_after(tmp_path):
    path = str(tmp_path / "iod-stores.json")
    s = IodStores(path)
    assert s.would_remember("h:1", A)
    assert s.check("h:1", A) is None
    assert json.load(open(path)) == {"version": 1, "stores": {"h:1": A.hex()}}
    assert not [n for n in os.listdir(tmp_path) if ".tmp." in n]   # no temporary left
    again = IodStores(path)             # as after an nfspd restart
    assert not again.would_remember("h:1", A)
    assert again.check("h:1", A) is None
    why = again.check("h:1", B)
    assert why and B.hex() in why and A.hex() in why
    # A lost store (None) is refused once a store is known, and changes nothing.
    why = again.check("h:1", None)
    assert why and "no usable data store" in why and A.hex() in why
    assert again.known("h:1") == A


def test_none_before_any_store_is_accepted_and_not_remembered(tmp_path):
    path = str(tmp_path / "iod-stores.json")
    s = IodStores(path)
    assert s.check("old-iod:1", None) is None   # an iod older than the field
    assert s.known("old-iod:1") is None and not os.path.exists(path)


def test_accept_forgets_and_the_next_store_is_remembered(tmp_path):
    path = str(tmp_path / "iod-stores.json")
    s = IodStores(path)
    s.check("h:1", A)
    s.check("h:2", C)
    assert s.check("h:1", B) is not None
    assert s.accept("h:1") == A
    assert json.load(open(path))["stores"] == {"h:2": C.hex()}
    assert s.check("h:1", B) is None
    assert IodStores(path).known("h:1") == B
    assert s.accept("never:1") is None


def test_a_store_already_another_iods_is_refused(tmp_path):
    s = IodStores(str(tmp_path / "iod-stores.json"), names=["h:1", "h:2"])
    assert s.check("h:1", A) is None
    why = s.check("h:2", A)
    assert why and "h:1" in why and s.known("h:2") is None
    # An entry no longer in iods.conf (an iod moved to another address) owns nothing.
    moved = IodStores(s.path, names=["h:3"])
    assert moved.check("h:3", A) is None


@pytest.mark.parametrize("content", [b"{not json", b'{"version": 9, "stores": {}}',
                                     b'{"version": 1, "stores": {"h:1": "abc"}}', b"\xff\xfe"])
def test_a_damaged_file_is_moved_aside_with_one_clear_error(tmp_path, caplog, content):
    path = str(tmp_path / "iod-stores.json")
    with open(path, "wb") as f:
        f.write(content)
    with caplog.at_level(logging.ERROR, logger="common.runtime.iodstores"):
        s = IodStores(path)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and path in errors[0] and "learnt afresh" in errors[0]
    assert s.ids == {}
    assert open(path + ".bad", "rb").read() == content and not os.path.exists(path)
    assert s.check("h:1", A) is None and IodStores(path).known("h:1") == A


def test_an_unwritable_file_keeps_checking_for_this_run(tmp_path, caplog):
    # The file's directory is gone: the write fails, the check still holds.
    path = str(tmp_path / "gone" / "iod-stores.json")
    s = IodStores(path)
    with caplog.at_level(logging.ERROR, logger="common.runtime.iodstores"):
        assert s.check("h:1", A) is None
        assert s.check("h:2", B) is None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "this run only" in errors[0].getMessage()
    assert s.check("h:1", B) is not None


def test_offline_accept_edits_the_file(tmp_path):
    path = str(tmp_path / "iod-stores.json")
    s = IodStores(path)
    s.check("127.0.0.1:2050", A)
    s.check("127.0.0.1:2051", B)
    runner = CliRunner()
    r = runner.invoke(accept_cli, ["127.0.0.1:2051", "--state-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert B.hex() in r.output and "not running" in r.output
    assert IodStores(path).ids == {"127.0.0.1:2050": A}
    r = runner.invoke(accept_cli, ["127.0.0.1:2051", "--state-dir", str(tmp_path)])
    assert r.exit_code == 1 and "no data store remembered" in r.output
    r = runner.invoke(accept_cli, ["127.0.0.1:x", "--state-dir", str(tmp_path)])
    assert r.exit_code == 2 and "HOST:PORT" in r.output
    assert forget(str(tmp_path / "missing.json"), "h:1") is None


# --- a real cluster ------------------------------------------------------------------


def status(c):
    r = c.ns.run([sys.executable, "-m", "tools.status", "--state-dir", c.nfspd.state, "--json"],
                 timeout=30, env=dict(os.environ, PYTHONPATH=REPO), cwd="/")
    assert r.returncode in (0, 2), r.stderr
    return r.returncode, json.loads(r.stdout)


def status_text(c):
    r = c.ns.run([sys.executable, "-m", "tools.status", "--state-dir", c.nfspd.state],
                 timeout=30, env=dict(os.environ, PYTHONPATH=REPO), cwd="/")
    return r.returncode, r.stdout


def accept(c, name):
    r = c.ns.run([sys.executable, "-m", "tools.nfsp", "accept-iod-store", name,
                  "--state-dir", c.nfspd.state],
                 timeout=30, env=dict(os.environ, PYTHONPATH=REPO), cwd="/")
    return r.returncode, r.stdout + r.stderr


def wait_state(c, index, state, what):
    seen = {}

    def reached():
        seen["code"], seen["st"] = status(c)
        return seen["st"]["iods"][index]["state"] == state
    wait_until(reached, 20, interval=0.2, what=what)
    return seen["code"], seen["st"]


def striped_file(client, root):
    """A file of 8 stripes, 4 on each iod, written FILE_SYNC: (handle, data)."""
    data = os.urandom(8 * U)
    fh = client.create(root, b"striped")
    for off in range(0, len(data), 32768):
        client.write(fh, off, data[off:off + 32768], stable_how.FILE_SYNC)
    return fh, data


def reads_per_stripe(client, fh, data):
    """For each stripe: True (right data), False (JUKEBOX) or the bytes read."""
    out = []
    for s in range(len(data) // U):
        try:
            got, _ = client.read(fh, s * U + 10, 100)
        except NfsError as e:
            assert e.status == nfsstat3.NFS3ERR_JUKEBOX, e
            out.append(False)
            continue
        out.append(True if got == data[s * U + 10:s * U + 110] else got)
    return out


def replace_data_dir(c, i, new_dir):
    iod = c.iods[i]
    iod.stop()
    iod.data_dir = new_dir
    iod.start()


def known_stores(c):
    with open(os.path.join(c.nfspd.state, "iod-stores.json")) as f:
        return json.load(f)["stores"]


def both_up_with_stores(c):
    wait_state(c, 1, "up", "iod 1 up")
    wait_until(lambda: all(i["store"] for i in status(c)[1]["iods"]), 20, interval=0.2,
               what="both iods' stores in nfsp status")
    return status(c)[1]


pytestmark = pytest.mark.netns


def test_an_iod_on_another_store_stays_down_until_its_own_store_is_back(cluster):
    c = cluster(n_iods=2, stripe_unit=U)
    udp, _ = c.connect(3, "udp", timeout=3.0)
    tcp, root = c.connect(3, "tcp", timeout=10.0)
    st = both_up_with_stores(c)
    stores = [i["store"] for i in st["iods"]]
    assert stores[0] != stores[1] and all(len(s) == 32 for s in stores)
    assert known_stores(c) == {f"127.0.0.1:{iod.port}": s for iod, s in zip(c.iods, stores)}
    fh, data = striped_file(tcp, root)
    old_dir = c.iods[1].data_dir

    # iod 1 comes back on an empty directory (its disk did not mount).
    replace_data_dir(c, 1, old_dir + "-empty")
    code, st = wait_state(c, 1, "wrong store", "iod 1 refused for its store")
    assert code == 2 and not st["iods"][1]["up"]
    new = st["iods"][1]["store"]
    assert new and new != stores[1]
    assert stores[1] in st["iods"][1]["wrong_store"] and new in st["iods"][1]["wrong_store"]
    assert st["iods"][0]["up"] and st["iods"][0]["wrong_store"] is None
    code, text = status_text(c)
    assert code == 2 and "wrong store" in text and "accept-iod-store 127.0.0.1:2051" in text
    for client in (udp, tcp):
        got = reads_per_stripe(client, fh, data)
        # iod 1's stripes are JUKEBOX (clients wait), never zeros; iod 0's read right.
        assert got.count(False) == 4 and got.count(True) == 4, got
    assert known_stores(c)["127.0.0.1:2051"] == stores[1]   # nothing relearnt

    # Its own disk is back: the link comes up by itself, nothing accepted.
    replace_data_dir(c, 1, old_dir)
    code, st = wait_state(c, 1, "up", "iod 1 back on its own store")
    assert code == 0 and st["iods"][1]["store"] == stores[1] and st["iods"][1]["wrong_store"] is None
    for client in (udp, tcp):
        assert reads_per_stripe(client, fh, data) == [True] * 8
    log = c.nfspd_log()
    assert log.count("stays down (JUKEBOX") == 1, log   # one ERROR line per change
    assert "(#1) serves its own data store again" in log
    assert known_stores(c)["127.0.0.1:2051"] == stores[1]


def test_accepting_the_new_store_brings_the_iod_up_with_holes(cluster):
    c = cluster(n_iods=2, stripe_unit=U)
    tcp, root = c.connect(3, "tcp", timeout=10.0)
    st = both_up_with_stores(c)
    old = st["iods"][1]["store"]
    fh, data = striped_file(tcp, root)
    replace_data_dir(c, 1, c.iods[1].data_dir + "-wiped")
    _, st = wait_state(c, 1, "wrong store", "iod 1 refused for its store")
    new = st["iods"][1]["store"]

    code, out = accept(c, "127.0.0.1:9")
    assert code == 1 and "no iod '127.0.0.1:9'" in out
    code, out = accept(c, "127.0.0.1:2051")
    assert code == 0 and old in out and new in out, out
    code, st = wait_state(c, 1, "up", "iod 1 up on the accepted store")
    assert code == 0 and st["iods"][1]["store"] == new
    assert known_stores(c)["127.0.0.1:2051"] == new
    # The admin's choice: iod 1's stripes are gone, and read as holes.
    got = reads_per_stripe(tcp, fh, data)
    assert got.count(True) == 4 and [g for g in got if g is not True] == [bytes(100)] * 4
    assert "forgot its data store " + old in c.nfspd_log()
