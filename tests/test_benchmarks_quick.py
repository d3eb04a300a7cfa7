"""`python3 -m tools.dev.benchmarks run --quick`: the CI subset of the
benchmarks runs end to end (real cluster on loopback, a testbed of capped
links, ganesha when installed) and no figure fell past its generous bound.
The figures themselves are benchmarks' business, not this test's."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tools.dev import netns
from tools.dev import REPO
from tools.dev.benchmarks import ganesha


@pytest.mark.netns
def test_quick_benchmarks_run_and_stay_within_their_bounds(tmp_path):
    if not netns.available() or not shutil.which("tc"):
        pytest.skip("needs root, unshare/nsenter and tc (network namespaces, link caps)")
    out = tmp_path / "bench"
    argv = [sys.executable, "-m", "tools.dev.benchmarks", "run", "--quick", "--out", str(out)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO,
                       env=dict(os.environ, PYTHONPATH=REPO))
    results = json.loads((out / "results.json").read_text())
    checks = results["quick"]["checks"]
    failed = [c for c in checks if c["ok"] is False]
    assert r.returncode == 0 and not failed, (failed, r.stderr[-3000:])
    names = {c["check"] for c in checks}
    assert {"nfsp udp read MB/s", "nfsp tcp read MB/s", "testbed aggregate MB/s",
            "share of the clients' bytes sent by the iods' links"} <= names
    ganesha_check = [c for c in checks if c["check"] == "ganesha udp read MB/s"][0]
    # The baseline is optional: skipped (and said why) where it is not installed.
    assert (ganesha_check.get("skipped") is not None) == (ganesha.available() is not None)
    assert "| testbed aggregate MB/s |" in (out / "results.md").read_text()
