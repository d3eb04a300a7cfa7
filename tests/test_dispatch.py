"""From a received message to the reply: RPC-level errors and the duplicate request cache."""

import trio

from common import rpc, xdr
from common.rpc import accept_stat
from nfspd.dispatch import CallContext, Dispatcher, Procedure, Program
from nfspd.drc import DuplicateRequestCache

PROG = 100003


class Service:
    def __init__(self):
        self.removes = 0
        self.release = None

    async def null(self, ctx, args):
        return None

    async def remove(self, ctx, args):
        self.removes += 1
        if self.release is not None:
            await self.release.wait()
        return self.removes

    async def boom(self, ctx, args):
        raise RuntimeError("bug")


def dispatcher(svc):
    procs = {0: Procedure("NULL", xdr.Void, xdr.Void, svc.null),
             12: Procedure("REMOVE", xdr.UInt32, xdr.UInt32, svc.remove, idempotent=False),
             99: Procedure("BOOM", xdr.Void, xdr.Void, svc.boom)}
    return Dispatcher([Program(PROG, "nfs", {2: procs, 3: procs})], DuplicateRequestCache())


def ctx(port=700):
    return CallContext(("127.0.0.1", port), ("127.0.0.1", 2049), "udp")


def call(d, vers=3, proc=0, args=b"", xid=1, port=700, prog=PROG):
    return trio.run(d.handle, rpc.encode_call(xid, prog, vers, proc, args), ctx(port))


def test_nfs_version_4_gets_prog_mismatch_2_to_3_so_clients_fall_back():
    r = rpc.decode_reply(call(dispatcher(Service()), vers=4))
    assert r.stat == accept_stat.PROG_MISMATCH and r.mismatch == (2, 3)


def test_unknown_program_procedure_and_arguments():
    d = dispatcher(Service())
    assert rpc.decode_reply(call(d, prog=100227)).stat == accept_stat.PROG_UNAVAIL  # NFSACL
    assert rpc.decode_reply(call(d, proc=42)).stat == accept_stat.PROC_UNAVAIL
    assert rpc.decode_reply(call(d, proc=12, args=b"\0\0")).stat == accept_stat.GARBAGE_ARGS
    assert d.counters.garbage_args == 1


def test_a_failing_handler_gets_system_err_and_the_server_goes_on():
    d = dispatcher(Service())
    assert rpc.decode_reply(call(d, proc=99)).stat == accept_stat.SYSTEM_ERR
    assert rpc.decode_reply(call(d, proc=0)).stat == accept_stat.SUCCESS


def test_retransmitted_non_idempotent_call_runs_once():
    svc = Service()
    d = dispatcher(svc)
    first = call(d, proc=12, args=b"\0\0\0\5", xid=77)
    again = call(d, proc=12, args=b"\0\0\0\5", xid=77)
    assert first == again and svc.removes == 1
    # Same xid from another client port, or other arguments: a new call.
    call(d, proc=12, args=b"\0\0\0\5", xid=77, port=701)
    call(d, proc=12, args=b"\0\0\0\6", xid=77)
    assert svc.removes == 3


def test_retransmission_while_the_original_runs_is_dropped():
    svc = Service()
    d = dispatcher(svc)
    msg = rpc.encode_call(5, PROG, 3, 12, b"\0\0\0\1")
    replies = []

    async def main():
        svc.release = trio.Event()
        async with trio.open_nursery() as n:
            async def original():
                replies.append(await d.handle(msg, ctx()))
            n.start_soon(original)
            await trio.sleep(0.01)
            replies.append(await d.handle(msg, ctx()))  # while the original waits
            svc.release.set()
    trio.run(main)
    assert replies[0] is None and replies[1] is not None and svc.removes == 1


def test_messages_that_cannot_be_answered_are_dropped_and_counted():
    d = dispatcher(Service())
    assert trio.run(d.handle, b"\0" * 10, ctx()) is None
    assert d.counters.dropped == 1
