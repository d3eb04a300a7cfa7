"""5% packet loss and reordering on every link of the testbed (the kernel has
no netem: iptables `statistic` DROP and NFQUEUE holds in the bridge's
namespace, see tests/support/faults.py) while a Linux kernel client runs a
mixed read/write workload over UDP and over TCP at once, with hard mounts.
Everything read back during the faults, and afterwards by another client,
is byte-exact."""

import math
import socket
import struct
import threading

import pytest

from tests.support import faults

LOSS = 0.05
HOLD = 0.05

pytestmark = pytest.mark.skipif(faults.NetFaults.missing() is not None,
                                reason=faults.NetFaults.missing() or "")


def surely_at_least(n, p):
    """A floor for a Binomial(n, p) count (how many of n packets a rule with
    probability p caught): 6 standard deviations below its mean, which a
    working rule falls under once in about a billion runs. A floor near the
    mean (5% of ~1,040 packets is 52, sd 7: "more than 50" failed 4 runs in 10)
    tests luck, not the rule. At least 1, the rule did act: a working one
    catches none of 300 packets once in 5 million runs (0.95**300), and a
    workload of fewer packets did not run."""
    return max(1, math.floor(n * p - 6 * math.sqrt(n * p * (1 - p))))


def _stream(bed, n):
    """n numbered datagrams from the metaserver's host to c0's: the sequence
    numbers c0 received, in arrival order."""
    ms, c0 = bed.tb.ms, bed.tb.clients[0]
    rx = c0.inside(socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
    tx = ms.inside(socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
    got = []
    try:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        rx.bind((c0.ip, 0))
        port = rx.getsockname()[1]

        def receive():
            rx.settimeout(2.0)  # the stream's end: nothing for 2 s (held packets come within 30 ms)
            try:
                while True:
                    got.append(struct.unpack("!I", rx.recv(64)[:4])[0])
            except TimeoutError:
                pass
        t = threading.Thread(target=receive)
        t.start()
        for i in range(n):
            tx.sendto(struct.pack("!I", i) + bytes(60), (c0.ip, port))
        t.join(60)
    finally:
        rx.close()
        tx.close()
    return got


def test_the_faults_are_real_loss_and_reordering(bed):
    n = 3000
    with faults.NetFaults(bed.tb, loss=LOSS, hold=HOLD) as nf:
        got = _stream(bed, n)
    c = nf.counters()
    lost = n - len(got)
    late = sum(1 for a, b in zip(got, got[1:]) if b < a)
    assert len(set(got)) == len(got) and set(got) <= set(range(n))
    # 5% of 3000 is 150 (sd 12): far outside these bounds only if the
    # mechanism does something else than it says.
    assert 60 < lost < 300, f"{lost} of {n} datagrams lost; counters {c}"
    assert late > 10, f"only {late} datagrams arrived after a later one; counters {c}"
    assert c["dropped"] >= lost and c["held"] >= c["queued"] > 0, c
    # Once stopped, nothing is dropped or held any more.
    assert len(_stream(bed, 500)) == 500


def test_mixed_workload_over_udp_and_tcp_survives_loss_and_reordering(bed, rand):
    # Over UDP an 8 KiB WRITE is 6 IP fragments to the metaserver and 6 more
    # to the iod, a READ 6 back from the iod: any one lost, the RPC is lost
    # (about half of them at 5%), and the kernel backs off on every loss.
    # So: small transfers, the first retransmission after 0.3 s (timeo=3)
    # rather than 1.1 s, and little data.
    with bed.mounted("net", udp_options="hard,timeo=3,rsize=8192,wsize=8192") as mounts:
        shape = {"udp": (3, (1, 4097, 20000, 40000), 1),
                 "tcp": (5, (0, 1, 4097, 40000, 100000, 300000), 2)}
        loads = []
        for i, (proto, mnt) in enumerate(mounts):
            files, sizes, churn = shape[proto]
            loads.append(faults.Workload(rand, f"{mnt}/net-{proto}", seed=11 + i,
                                         label=f"n{proto[0]}")
                         .mixed(files, sizes, rounds=1).churn(churn).check_all())
        with faults.NetFaults(bed.tb, loss=LOSS, hold=HOLD) as nf:
            got = bed.vm.results(faults.concurrently(*(w.script() for w in loads)), timeout=900)
        c = nf.counters()
        want = {k: v for w in loads for k, v in w.want.items()}
        diff = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
        assert not diff, f"the kernel client read other bytes than were written: {diff}"
        # The faults happened, to this workload's traffic: judged against the
        # packets the rules saw (DROP comes first, NFQUEUE gets what it left).
        assert c["dropped"] >= surely_at_least(c["seen"], LOSS), c
        assert c["held"] >= c["queued"] >= surely_at_least(c["seen"] - c["dropped"], HOLD), c
        # Another client, on a clean network, reads the same bytes.
        for w, (proto, _) in zip(loads, mounts):
            bed.assert_tree(f"net-{proto}", w.files)
        print(f"network faults: {c}")
