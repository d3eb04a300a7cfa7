"""kill -9 of an iod, of the metaserver and of unlinkd while a Linux kernel
client (hard mounts, UDP and TCP at once) runs a mixed workload with
removals: the iod and nfspd are restarted with the same arguments after a few
seconds, unlinkd by nfspd itself. The clients resume; every file read back
(by the guest during and after, by another client afterwards) is byte-exact;
every removed file's data is purged, and `nfsp scrub` finds no leak."""

import os
import threading
import time

import pytest

from tests.support import faults
from tools.dev.netns import wait_until

OUTAGE = 3.0          # seconds a killed daemon stays down
SIZES = (0, 1, 4097, 40000, 100000, 200000)


def _through(bed, rand, name, seed, fault):
    """Run the workloads; once the TCP one has created its third file, call
    fault(); then check everything."""
    with bed.mounted(name) as mounts:
        loads = [(proto, faults.Workload(rand, f"{mnt}/{name}-{proto}", seed=seed + i,
                                         label=f"k{proto[0]}")
                  .mixed(5, SIZES, rounds=1).churn(2).check_all())
                 for i, (proto, mnt) in enumerate(mounts)]
        result = {}

        def run():
            try:
                result["got"] = bed.vm.results(faults.concurrently(*(w.script() for _, w in loads)),
                                               timeout=600)
            except BaseException as e:  # reported by the test's thread
                result["error"] = e
        t = threading.Thread(target=run)
        t.start()
        trigger = os.path.join(bed.export, f"{name}-tcp", "kt02")
        wait_until(lambda: os.path.exists(trigger) or not t.is_alive(), 300,
                   what="the workload under way")
        assert t.is_alive(), f"the workload ended before the fault: {result}"
        fault()
        t.join(600)
        assert not t.is_alive(), "the workload did not finish"
        if "error" in result:
            raise result["error"]
        want = {k: v for _, w in loads for k, v in w.want.items()}
        diff = {k: (result["got"].get(k), v) for k, v in want.items()
                if result["got"].get(k) != v}
        assert not diff, f"the kernel client read other bytes than were written: {diff}"
        for proto, w in loads:
            bed.assert_tree(f"{name}-{proto}", w.files)
    bed.wait_purged()
    rc, out = bed.scrub()
    assert rc == 0 and " 0 leaked datafiles" in out, out


def _kill_and_restart(bed, role):
    old = bed.pid(role)
    argv = faults.cmdline(old)
    faults.kill9(old)
    time.sleep(OUTAGE)
    bed.restart()
    new = bed.pid(role)
    assert new != old and faults.cmdline(new) == argv


def test_iod_killed_mid_workload(bed, rand):
    _through(bed, rand, "kill-iod", 100, lambda: _kill_and_restart(bed, "iod1"))
    assert "(#1) is back" in bed.log("nfspd")


def test_metaserver_killed_mid_workload(bed, rand):
    _through(bed, rand, "kill-nfspd", 200, lambda: _kill_and_restart(bed, "nfspd"))


def test_unlinkd_killed_mid_workload(bed, rand):
    killed = []

    def fault():
        wait_until(lambda: faults.unlinkd_pid(bed.tb), 60, what="unlinkd running")
        pid = faults.unlinkd_pid(bed.tb)
        faults.kill9(pid)
        killed.append(pid)
    _through(bed, rand, "kill-unlinkd", 300, fault)
    # nfspd saw it die and started another.
    assert "unlinkd exited with status -9" in bed.log("nfspd")
    wait_until(lambda: faults.unlinkd_pid(bed.tb) not in (None, killed[0]), 60,
               what="a new unlinkd")


def test_unlinkd_keeps_running_while_nothing_fails(bed):
    wait_until(lambda: faults.unlinkd_pid(bed.tb), 60, what="unlinkd running")
    pid = faults.unlinkd_pid(bed.tb)
    wait_until(lambda: faults.unlinkd_pid(bed.tb) != pid or faults.age(pid) > 15, 30,
               what="unlinkd 15 s old")
    assert faults.unlinkd_pid(bed.tb) == pid, "unlinkd was restarted, with nothing failing"
    assert "unlinkd exited with status 0" not in bed.log("nfspd")
