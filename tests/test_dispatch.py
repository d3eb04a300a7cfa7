"""From a received message to the reply: RPC-level errors and the duplicate request cache."""

import enum

import trio
import trio.testing

from common import rpc, xdr
from common.rpc import accept_stat
from nfspd.dispatch import (
    ARGS_CSUMLEN, NO_REPLY, CallContext, Deferred, Dispatcher, Encoded, Procedure, Program, Wait,
    args_checksum, procedure_table,
)
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


def test_a_tcp_only_version_is_refused_over_udp_with_the_udp_range():
    svc = Service()
    procs = {0: Procedure("NULL", xdr.Void, xdr.Void, svc.null)}
    d = Dispatcher([Program(PROG, "nfs", {2: procs, 3: procs, 4: procs}, tcp_only=(4,))])

    def over(transport, vers):
        c = CallContext(("127.0.0.1", 700), ("127.0.0.1", 2049), transport)
        return rpc.decode_reply(trio.run(d.handle, rpc.encode_call(1, PROG, vers, 0, b""), c))

    udp = over("udp", 4)
    assert udp.stat == accept_stat.PROG_MISMATCH and udp.mismatch == (2, 3)
    assert over("tcp", 4).stat == accept_stat.SUCCESS
    tcp = over("tcp", 5)
    assert tcp.stat == accept_stat.PROG_MISMATCH and tcp.mismatch == (2, 4)
    assert over("udp", 3).stat == accept_stat.SUCCESS


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


def test_arguments_are_compared_as_nfsd_does_by_length_and_first_256_bytes():
    write = bytes(range(256)) * 4  # a WRITE's file handle, offset, count, data...
    assert ARGS_CSUMLEN == 256
    assert args_checksum(memoryview(write)) == args_checksum(write)
    assert args_checksum(write + b"x") != args_checksum(write)  # another count
    assert args_checksum(b"\xff" + write[1:]) != args_checksum(write)  # another handle
    # Past them the data is not read again (a relayed MiB cost 330 us of
    # crc32); a client that reuses an xid changes its handle, offset or count.
    assert args_checksum(write[:256] + bytes(768)) == args_checksum(write)


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


# --- answering at once (handle_now) ------------------------------------------------


class SyncService:
    """Plain-function handlers: the dispatcher answers them in handle_now."""

    def __init__(self):
        self.removes = 0

    def null(self, ctx, args):
        return None

    def remove(self, ctx, args):
        self.removes += 1
        return self.removes

    def boom(self, ctx, args):
        raise RuntimeError("bug")

    def encoded(self, ctx, args):
        return Encoded(xdr.encode(xdr.UInt32, args + 1))

    async def slow(self, ctx, args):
        await trio.sleep(0)
        return args * 2


def sync_dispatcher(svc):
    procs = {0: Procedure("NULL", xdr.Void, xdr.Void, svc.null),
             1: Procedure("SLOW", xdr.UInt32, xdr.UInt32, svc.slow),
             2: Procedure("ENCODED", xdr.UInt32, xdr.UInt32, svc.encoded),
             12: Procedure("REMOVE", xdr.UInt32, xdr.UInt32, svc.remove, idempotent=False),
             99: Procedure("BOOM", xdr.Void, xdr.Void, svc.boom)}
    return Dispatcher([Program(PROG, "nfs", {3: procs})], DuplicateRequestCache())


def now(d, proc=0, args=b"", xid=1, port=700):
    return d.handle_now(rpc.encode_call(xid, PROG, 3, proc, args), ctx(port))


def result(reply, res_type=xdr.UInt32):
    r = rpc.decode_reply(reply)
    assert r.stat == accept_stat.SUCCESS
    return xdr.decode(res_type, r.body)


def test_plain_function_handlers_are_answered_at_once_async_ones_are_deferred():
    d = sync_dispatcher(SyncService())
    assert rpc.decode_reply(now(d)).stat == accept_stat.SUCCESS
    assert result(now(d, proc=2, args=b"\0\0\0\x29")) == 42
    deferred = now(d, proc=1, args=b"\0\0\0\5", xid=9)
    assert isinstance(deferred, Deferred)
    reply = trio.run(deferred.run)
    assert rpc.decode_reply(reply).xid == 9 and result(reply) == 10
    # handle() gives the same answers whichever way they are made.
    msg = rpc.encode_call(9, PROG, 3, 1, b"\0\0\0\5")
    assert trio.run(d.handle, msg, ctx()) == reply
    assert trio.run(d.handle, rpc.encode_call(3, PROG, 3, 2, b"\0\0\0\1"), ctx()) == \
        now(d, proc=2, args=b"\0\0\0\1", xid=3)


def test_a_non_idempotent_call_answered_at_once_still_goes_through_the_drc():
    svc = SyncService()
    d = sync_dispatcher(svc)
    first = now(d, proc=12, args=b"\0\0\0\5", xid=77)
    assert result(first) == 1
    assert now(d, proc=12, args=b"\0\0\0\5", xid=77) == first  # retransmission
    assert svc.removes == 1 and d.counters.drc_hits == 1
    assert result(now(d, proc=12, args=b"\0\0\0\5", xid=78)) == 2  # a new call


def test_errors_answered_at_once():
    d = sync_dispatcher(SyncService())
    assert rpc.decode_reply(now(d, proc=99)).stat == accept_stat.SYSTEM_ERR
    assert d.counters.system_err == 1
    assert rpc.decode_reply(now(d, proc=2, args=b"\0")).stat == accept_stat.GARBAGE_ARGS
    assert rpc.decode_reply(now(d, proc=7)).stat == accept_stat.PROC_UNAVAIL
    assert d.handle_now(b"\0" * 10, ctx()) is None
    assert d.handle_now(b"garbage that is not a call at all, 40+ bytes long....", ctx()) is None
    # A handler that fails leaves nothing in progress in the DRC.
    d2 = Dispatcher([Program(PROG, "nfs", {3: {12: Procedure(
        "REMOVE", xdr.Void, xdr.Void, SyncService().boom, idempotent=False)}})],
        DuplicateRequestCache())
    a = d2.handle_now(rpc.encode_call(5, PROG, 3, 12), ctx())
    assert rpc.decode_reply(a).stat == accept_stat.SYSTEM_ERR
    assert d2.handle_now(rpc.encode_call(5, PROG, 3, 12), ctx()) == a  # the same answer


def test_a_plain_handler_may_go_on_as_a_task_and_the_drc_still_holds():
    runs = []
    gate = {}

    async def later(n):
        runs.append(n)
        await gate["event"].wait()
        return n * 10

    def maybe(ctx, args):
        return args if args < 100 else Wait(later, args)

    procs = {1: Procedure("MAYBE", xdr.UInt32, xdr.UInt32, maybe),
             12: Procedure("CHANGE", xdr.UInt32, xdr.UInt32, maybe, idempotent=False)}
    d = Dispatcher([Program(PROG, "nfs", {3: procs})], DuplicateRequestCache())
    assert result(now(d, proc=1, args=b"\0\0\0\7")) == 7  # answered at once
    replies = []

    async def main():
        gate["event"] = trio.Event()
        first = now(d, proc=12, args=b"\0\0\1\0", xid=5)
        assert isinstance(first, Deferred)
        async with trio.open_nursery() as n:
            async def go():
                replies.append(await first.run())
            n.start_soon(go)
            await trio.testing.wait_all_tasks_blocked()
            # A retransmission while the original waits: dropped, not run again.
            assert now(d, proc=12, args=b"\0\0\1\0", xid=5) is None
            gate["event"].set()
        replies.append(now(d, proc=12, args=b"\0\0\1\0", xid=5))  # after: the cached reply
        replies.append(await d.handle(rpc.encode_call(6, PROG, 3, 1, b"\0\0\1\1"), ctx()))
    trio.run(main)
    assert [result(r) for r in replies] == [2560, 2560, 2570] and runs == [256, 257]
    assert d.counters.drc_in_progress == 1 and d.counters.drc_hits == 1


# --- the one error path: a failure the procedure's result can say ---------------


class Refused(Exception):
    def __init__(self, status):
        super().__init__(status)
        self.status = status


def failed(ctx, args, error, res_type):
    """The failure arm: the status, or no reply at all for status 0."""
    return NO_REPLY if error.status == 0 else 1000 + error.status


class Num(enum.IntEnum):
    REFUSE = 1
    REFUSE_ASYNC = 2
    REFUSE_AFTER_WAITING = 3
    CHANGE_OR_REFUSE = 4
    BAD_FAILURE = 5
    NO_FAILURE_ARM = 6


def error_table(service=None):
    async def refuse_later(ctx, args):
        await trio.sleep(0)
        raise Refused(args)

    def refuse_after_waiting(ctx, args):
        return Wait(refuse_later, ctx, args)

    def refuse(ctx, args):
        assert ctx.service is service  # what the handler works on
        raise Refused(args)

    def bad_failure(ctx, args, error, res_type):
        raise RuntimeError("bug in a failure builder")

    return procedure_table([
        (Num.REFUSE, xdr.UInt32, xdr.UInt32, refuse, False, failed),
        (Num.REFUSE_ASYNC, xdr.UInt32, xdr.UInt32, refuse_later, False, failed),
        (Num.REFUSE_AFTER_WAITING, xdr.UInt32, xdr.UInt32, refuse_after_waiting, False, failed),
        (Num.CHANGE_OR_REFUSE, xdr.UInt32, xdr.UInt32, refuse, True, failed),
        (Num.BAD_FAILURE, xdr.UInt32, xdr.UInt32, refuse, False, bad_failure),
        (Num.NO_FAILURE_ARM, xdr.UInt32, xdr.UInt32, refuse, False),
    ], error_type=Refused)


def test_a_table_row_is_a_procedure_named_by_its_number():
    procs = error_table()
    assert set(procs) == set(Num)
    p = procs[Num.CHANGE_OR_REFUSE]
    assert (p.name, p.args_type, p.res_type, p.idempotent) == \
        ("CHANGE_OR_REFUSE", xdr.UInt32, xdr.UInt32, False)
    assert procs[Num.REFUSE].idempotent and procs[Num.REFUSE].inline
    assert not procs[Num.REFUSE_ASYNC].inline


def test_a_raised_failure_becomes_the_procedures_failure_result_on_every_path():
    service = object()
    d = Dispatcher([Program(PROG, "nfs", {3: error_table(service)}, service)],
                   DuplicateRequestCache())
    for num in (Num.REFUSE, Num.REFUSE_ASYNC, Num.REFUSE_AFTER_WAITING, Num.CHANGE_OR_REFUSE):
        r = rpc.decode_reply(call(d, proc=num, args=xdr.encode(xdr.UInt32, 7), xid=num))
        assert r.stat == accept_stat.SUCCESS and xdr.decode(xdr.UInt32, r.body) == 1007
    assert d.counters.system_err == 0


def test_a_failure_answered_by_silence_is_not_cached():
    d = Dispatcher([Program(PROG, "nfs", {3: error_table()})], DuplicateRequestCache())
    assert call(d, proc=Num.CHANGE_OR_REFUSE, args=xdr.encode(xdr.UInt32, 0)) is None
    assert len(d.drc) == 0


def test_a_failure_without_a_failure_arm_or_with_a_broken_one_is_system_err():
    d = Dispatcher([Program(PROG, "nfs", {3: error_table()})])
    for num in (Num.BAD_FAILURE, Num.NO_FAILURE_ARM):
        r = rpc.decode_reply(call(d, proc=num, args=xdr.encode(xdr.UInt32, 7)))
        assert r.stat == accept_stat.SYSTEM_ERR
    assert d.counters.system_err == 2
