"""nfspd's local data store (nfspd/datapath.py LocalDataPath): what purge()
does. With iods every file removed is handed to it, though the local store
holds only files made before iods were configured."""

import os

import trio

from common.metafile import Metafile
from nfspd.datapath import LocalDataPath


def _write(dp, ino, meta, data):
    trio.run(dp.write, meta, ino, 0, data, True)


def test_an_empty_store_answers_purge_without_looking(tmp_path, monkeypatch):
    dp = LocalDataPath(str(tmp_path / "data"))

    def no_lookup(path):
        raise AssertionError(f"looked for {path}")
    monkeypatch.setattr(os.path, "lexists", no_lookup)
    dp.purge(1234, 0x5678)
    dp.wait_purged()


def test_a_datafile_written_since_is_purged(tmp_path):
    dp = LocalDataPath(str(tmp_path / "data"))
    meta = Metafile(0x5678, 0)
    _write(dp, 1234, meta, b"data")
    path = dp.store.path(1234, 0x5678)
    assert os.path.exists(path)
    dp.purge(1234, 0x5678)
    dp.wait_purged()
    assert not os.path.exists(path)


def test_a_store_that_held_datafiles_before_a_restart_is_purged_too(tmp_path):
    first = LocalDataPath(str(tmp_path / "data"))
    _write(first, 1234, Metafile(0x5678, 0), b"data")
    path = first.store.path(1234, 0x5678)
    again = LocalDataPath(str(tmp_path / "data"))  # the next nfspd
    again.purge(1234, 0x5678)
    again.wait_purged()
    assert not os.path.exists(path)
