"""tools/dev/metarate.py: rows of the metadata benchmark for one server, for
A/B runs while changing nfspd, with what nfspd's flushes did."""

import json
import subprocess
import sys

from tools.dev import REPO


def test_a_sync_servers_rows_and_the_flushes_they_waited_for():
    r = subprocess.run([sys.executable, "-m", "tools.dev.metarate", "nfsp", "getattr,create_remove",
                        "2", "--seconds", "1", "--entries", "20"],
                       cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(x["server"], x["op"], x["clients"], x["proto"]) for x in rows] == [
        ("nfsp", "getattr", 2, "tcp"), ("nfsp", "create_remove", 2, "tcp")]
    assert all(x["ops_per_s"] > 0 and x["errors"] == 0 for x in rows)
    # How nfspd's event loop spent each row: busy answering for some of it.
    assert all(0 < x["nfspd_loop"]["on_cpu"] <= 1.05 for x in rows), rows
    assert "% on a core, " in r.stderr
    getattr_row, create_remove = rows
    # A GETATTR changes nothing; every CREATE and REMOVE of a sync export
    # waited for a flush, each flush answering one call or more.
    assert getattr_row["group_commit"]["flushes"] == 0
    gc = create_remove["group_commit"]
    assert gc["flushes"] > 0 and gc["calls_per_flush"] >= 1 and gc["ms_per_flush"] > 0
    assert 0 < gc["flushing"] <= 1.05
    assert " ms per flush, " in r.stderr
