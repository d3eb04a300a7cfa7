"""common/runtime/heap.py: MiB buffers made again and again do not fault
their pages in each time."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Minor page faults per 1 MiB buffer made (and freed) after a warm-up.
FAULTS_PER_MIB = """
import resource, sys
from common.runtime import heap
print(heap.keep_buffers())
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def churn(n):
    for _ in range(n):
        b = b"x" * (1 << 20)
        c = b + b"y"
        del b, c
churn(5)
before = faults()
churn(100)
print((faults() - before) / 200)
"""


def _run(env_extra=()):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_MIB], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", float(out[1])


def test_mib_buffers_are_kept_on_the_heap_not_faulted_in_again():
    kept, faults = _run()
    # 256 pages a MiB: glibc's default mmaps each buffer afresh.
    assert kept and faults < 8


@pytest.mark.parametrize("setting", [("MALLOC_MMAP_THRESHOLD_", "131072"),
                                     ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=131072")])
def test_an_admins_own_malloc_settings_win(setting):
    kept, faults = _run([setting])
    assert not kept and faults > 128  # the admin's 128 KiB threshold: mmapped each time
