"""The NFSv4 client record survives a restart on disk, and a damaged one does
not stop the server: it is logged and treated as empty (no client may reclaim)."""

import logging
import os

from nfspd.nfs4recovery import RECORD_NAME, RecoveryStore
from common.nfs4sessions import ChannelAttrs
from nfspd.nfs4state import Nfs4State

SECRET = b"0123456789abcdef"


def state_with_a_client(now=0, record=None, epoch=1000):
    st = Nfs4State(now=now, boot_epoch=epoch, secret=SECRET, previous_record=record, lease_time=10)
    r = st.exchange_id(b"client-a", bytes(8), "sys:0@a", 0, now)
    st.create_session(r.clientid, r.sequenceid, 0, ChannelAttrs(), ChannelAttrs(), "sys:0@a", now)
    st.reclaim_complete(r.clientid, False, now)
    return st


def test_a_saved_record_gives_the_next_boot_a_grace_period(tmp_path):
    store = RecoveryStore(str(tmp_path))
    assert store.load() is None
    before = state_with_a_client()
    assert store.save(before)
    record = RecoveryStore(str(tmp_path)).load()
    assert record == before.record()
    after = Nfs4State(now=50, boot_epoch=1000, secret=SECRET, previous_record=record, lease_time=10)
    assert after.in_grace(50) and after.epoch == 1001
    assert os.listdir(tmp_path) == [RECORD_NAME]


def test_save_writes_only_when_the_record_changed(tmp_path):
    store = RecoveryStore(str(tmp_path))
    st = state_with_a_client()
    assert store.save(st)
    assert not store.save(st)
    st.expire(100)
    assert store.save(st)


def test_a_damaged_record_is_logged_and_treated_as_empty(tmp_path, caplog):
    store = RecoveryStore(str(tmp_path))
    store.save(state_with_a_client())
    path = tmp_path / RECORD_NAME
    path.write_bytes(path.read_bytes()[:-3])
    with caplog.at_level(logging.ERROR, logger="nfspd.nfs4recovery"):
        assert store.load() is None
    assert "damaged" in caplog.text and str(path) in caplog.text
    st = Nfs4State(now=0, boot_epoch=1, secret=SECRET, previous_record=store.load())
    assert not st.in_grace(0)


def test_an_unreadable_record_is_logged_and_treated_as_empty(tmp_path, caplog):
    (tmp_path / RECORD_NAME).mkdir()
    with caplog.at_level(logging.ERROR, logger="nfspd.nfs4recovery"):
        assert RecoveryStore(str(tmp_path)).load() is None
    assert "unreadable" in caplog.text


def test_the_directory_is_created_on_first_save(tmp_path):
    store = RecoveryStore(str(tmp_path / "v4recovery"))
    store.save(state_with_a_client())
    assert store.load() is not None
