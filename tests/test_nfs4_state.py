"""NFSv4.1 server state (RFC 8881 sections 2.10, 8, 9, 18): client ids, sessions,
leases, stateids, share reservations, byte-range locks, grace and reclaim.

Every time is passed in, so nothing here depends on the clock.
"""

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.nfs4 import (
    CREATE_SESSION4_FLAG_CONN_BACK_CHAN,
    CREATE_SESSION4_FLAG_PERSIST,
    EXCHGID4_FLAG_CONFIRMED_R,
    EXCHGID4_FLAG_UPD_CONFIRMED_REC_A,
    EXCHGID4_FLAG_USE_NON_PNFS,
    NFS4_UINT64_MAX,
    OPEN4_SHARE_ACCESS_BOTH,
    OPEN4_SHARE_ACCESS_READ,
    OPEN4_SHARE_ACCESS_WRITE,
    OPEN4_SHARE_DENY_NONE,
    OPEN4_SHARE_DENY_READ,
    OPEN4_SHARE_DENY_WRITE,
    nfsstat4,
)
from common.nfs4sessions import (
    CDFC4_BACK,
    CDFC4_FORE_OR_BOTH,
    CDFS4_FORE,
    ChannelAttrs,
    Replay,
    ReplyCacheBudget,
    Session,
    SlotHandle,
)
from nfspd import nfs4opens, nfs4state
from nfspd.nfs4locks import (
    READ_LT,
    READW_LT,
    WRITE_LT,
    WRITEW_LT,
    FileLocks,
    lock_range,
)
from nfspd.nfs4record import RecordError, decode_record
from nfspd.nfs4state import (
    MAX_SESSIONS_PER_CLIENT,
    Nfs4Error,
    Nfs4State,
)
from nfspd.nfs4stateid import (
    ANONYMOUS,
    ANONYMOUS_STATEID,
    CURRENT,
    CURRENT_STATEID,
    INVALID_STATEID,
    READ_BYPASS,
    READ_BYPASS_STATEID,
    Stateid,
    is_current_stateid,
    special_kind,
)

LEASE = 10
SECRET = b"0123456789abcdef"
FORE = ChannelAttrs(maxrequests=4)
BACK = ChannelAttrs(maxrequestsize=4096, maxresponsesize=4096, maxresponsesize_cached=0,
                    maxoperations=2, maxrequests=1)
FH = b"file-handle-1"
FH2 = b"file-handle-2"
R, W, RW = OPEN4_SHARE_ACCESS_READ, OPEN4_SHARE_ACCESS_WRITE, OPEN4_SHARE_ACCESS_BOTH


def fails(status, fn, *args, **kwargs):
    with pytest.raises(Nfs4Error) as e:
        fn(*args, **kwargs)
    assert e.value.status == status, e.value.status.name
    return e.value


def verf(n):
    return n.to_bytes(8, "big")


def new_state(now=0, record=None, epoch=1000, secret=SECRET, **kw):
    return Nfs4State(now=now, boot_epoch=epoch, secret=secret, previous_record=record,
                     lease_time=LEASE, **kw)


class Client:
    """One mounted client: EXCHANGE_ID, CREATE_SESSION, RECLAIM_COMPLETE."""

    def __init__(self, st, name, now=0, principal=None, verifier=1, complete=True):
        self.st = st
        self.owner = b"linux-client-" + name.encode()
        self.principal = principal or f"sys:0@{name}"
        r = st.exchange_id(self.owner, verf(verifier), self.principal, 0, now)
        self.clientid = r.clientid
        cs = st.create_session(r.clientid, r.sequenceid, 0, FORE, BACK, self.principal, now,
                               connection=name)
        self.sessionid = cs.sessionid
        self.seq = [0] * FORE.maxrequests
        if complete:
            st.reclaim_complete(self.clientid, False, now)

    def renew(self, now, slot=0):
        self.seq[slot] += 1
        handle = self.st.sequence(self.sessionid, self.seq[slot], slot, 0, False, now)
        handle.complete(None)

    def open(self, access, deny=OPEN4_SHARE_DENY_NONE, file=FH, owner=b"oo", now=0, **kw):
        return self.st.open(self.clientid, owner, file, access, deny, now, **kw)

    def lock(self, open_stateid, locktype, offset, length, owner=b"lo", file=FH, now=0, **kw):
        return self.st.lock(self.clientid, file, locktype, offset, length, now,
                            open_stateid=open_stateid, lock_owner=owner, **kw)


# ---- EXCHANGE_ID (RFC 8881 18.35.5) -----------------------------------------

def test_a_new_owner_gets_an_unconfirmed_client_id_and_sequenceid_1():
    st = new_state()
    r = st.exchange_id(b"owner", verf(1), "sys:0@a", 0, 0)
    assert r.flags == EXCHGID4_FLAG_USE_NON_PNFS
    assert r.sequenceid == 1
    assert r.clientid >> 32 == st.epoch


def test_the_same_owner_and_verifier_again_gets_the_confirmed_client_id():
    st = new_state()
    a = Client(st, "a")
    r = st.exchange_id(a.owner, verf(1), a.principal, 0, 1)
    assert r.clientid == a.clientid
    assert r.flags == EXCHGID4_FLAG_USE_NON_PNFS | EXCHGID4_FLAG_CONFIRMED_R
    assert r.sequenceid == 2


def test_a_rebooted_client_gets_a_new_id_and_its_old_state_goes_once_the_new_one_is_confirmed():
    st = new_state()
    a = Client(st, "a")
    opened = a.open(RW, OPEN4_SHARE_DENY_WRITE)
    r = st.exchange_id(a.owner, verf(2), a.principal, 0, 1)
    assert r.clientid != a.clientid
    assert not r.flags & EXCHGID4_FLAG_CONFIRMED_R
    st.check_io(a.clientid, opened.stateid, FH, True, 1)    # old one lives until confirmed
    st.create_session(r.clientid, r.sequenceid, 0, FORE, BACK, a.principal, 1)
    fails(nfsstat4.NFS4ERR_BADSESSION, st.sequence, a.sessionid, 1, 0, 0, False, 1)
    fails(nfsstat4.NFS4ERR_STALE_CLIENTID, st.destroy_clientid, a.clientid)
    b = Client(st, "b", now=1)
    b.open(W, now=1)                                        # the deny-write open went too


def test_a_second_exchange_id_before_confirmation_replaces_the_unconfirmed_record():
    st = new_state()
    first = st.exchange_id(b"owner", verf(1), "p", 0, 0)
    second = st.exchange_id(b"owner", verf(1), "p", 0, 0)
    assert second.clientid != first.clientid
    fails(nfsstat4.NFS4ERR_STALE_CLIENTID, st.create_session,
          first.clientid, 1, 0, FORE, BACK, "p", 0)
    st.create_session(second.clientid, 1, 0, FORE, BACK, "p", 0)


def test_an_owner_string_squatted_by_another_principal_is_clid_inuse_while_the_lease_runs():
    st = new_state()
    a = Client(st, "a")
    fails(nfsstat4.NFS4ERR_CLID_INUSE, st.exchange_id, a.owner, verf(1), "sys:1000@evil", 0, 5)
    a.renew(9)
    fails(nfsstat4.NFS4ERR_CLID_INUSE, st.exchange_id, a.owner, verf(7), "sys:1000@evil", 0, 18)
    # Once the lease has run out, the owner string is free again.
    r = st.exchange_id(a.owner, verf(7), "sys:1000@other", 0, 19)
    assert r.clientid != a.clientid
    st.create_session(r.clientid, r.sequenceid, 0, FORE, BACK, "sys:1000@other", 19)
    fails(nfsstat4.NFS4ERR_BADSESSION, st.sequence, a.sessionid, 2, 0, 0, False, 19)


def test_update_of_a_confirmed_record_needs_the_same_principal_and_verifier():
    st = new_state()
    upd = EXCHGID4_FLAG_UPD_CONFIRMED_REC_A
    fails(nfsstat4.NFS4ERR_NOENT, st.exchange_id, b"linux-client-a", verf(1), "sys:0@a", upd, 0)
    a = Client(st, "a")
    fails(nfsstat4.NFS4ERR_PERM, st.exchange_id, a.owner, verf(1), "sys:5@a", upd, 0)
    fails(nfsstat4.NFS4ERR_NOT_SAME, st.exchange_id, a.owner, verf(2), a.principal, upd, 0)
    r = st.exchange_id(a.owner, verf(1), a.principal, upd, 0)
    assert r.clientid == a.clientid and r.flags & EXCHGID4_FLAG_CONFIRMED_R


def test_a_client_may_not_claim_to_be_confirmed_nor_send_an_empty_owner():
    st = new_state()
    fails(nfsstat4.NFS4ERR_INVAL, st.exchange_id, b"o", verf(1), "p", EXCHGID4_FLAG_CONFIRMED_R, 0)
    fails(nfsstat4.NFS4ERR_INVAL, st.exchange_id, b"", verf(1), "p", 0, 0)
    fails(nfsstat4.NFS4ERR_INVAL, st.exchange_id, b"o", b"short", "p", 0, 0)


def test_a_client_id_from_before_a_restart_is_stale():
    before = new_state()
    a = Client(before, "a")
    after = new_state(record=before.record())
    fails(nfsstat4.NFS4ERR_STALE_CLIENTID, after.create_session,
          a.clientid, 2, 0, FORE, BACK, a.principal, 0)
    fails(nfsstat4.NFS4ERR_BADSESSION, after.sequence, a.sessionid, 1, 0, 0, False, 0)


def test_the_epoch_moves_on_even_when_the_daemon_restarts_within_a_second():
    before = new_state(epoch=1000)
    Client(before, "a")
    after = new_state(epoch=1000, record=before.record())
    assert after.epoch == 1001


# ---- CREATE_SESSION (18.36) --------------------------------------------------

def test_create_session_retry_returns_the_same_result_and_makes_no_second_session():
    st = new_state()
    r = st.exchange_id(b"o", verf(1), "p", 0, 0)
    first = st.create_session(r.clientid, 1, 0, FORE, BACK, "p", 0)
    again = st.create_session(r.clientid, 1, 0, FORE, BACK, "p", 0)
    assert again == first
    assert st.exchange_id(b"o", verf(1), "p", 0, 0).sequenceid == 2


def test_create_session_out_of_sequence_is_misordered():
    st = new_state()
    r = st.exchange_id(b"o", verf(1), "p", 0, 0)
    fails(nfsstat4.NFS4ERR_SEQ_MISORDERED, st.create_session, r.clientid, 2, 0, FORE, BACK, "p", 0)
    st.create_session(r.clientid, 1, 0, FORE, BACK, "p", 0)
    fails(nfsstat4.NFS4ERR_SEQ_MISORDERED, st.create_session, r.clientid, 3, 0, FORE, BACK, "p", 0)
    fails(nfsstat4.NFS4ERR_SEQ_MISORDERED, st.create_session, r.clientid, 0, 0, FORE, BACK, "p", 0)
    st.create_session(r.clientid, 2, 0, FORE, BACK, "p", 0)


def test_create_session_from_another_principal_is_clid_inuse():
    st = new_state()
    r = st.exchange_id(b"o", verf(1), "p", 0, 0)
    fails(nfsstat4.NFS4ERR_CLID_INUSE, st.create_session, r.clientid, 1, 0, FORE, BACK, "q", 0)


def test_channel_attributes_are_clamped_and_no_back_channel_is_granted():
    limits = ChannelAttrs(maxrequestsize=65536, maxresponsesize=65536,
                          maxresponsesize_cached=2048, maxoperations=16, maxrequests=8)
    st = new_state(server_limits=limits)
    r = st.exchange_id(b"o", verf(1), "p", 0, 0)
    greedy = ChannelAttrs(headerpadsize=64, maxrequestsize=1 << 20, maxresponsesize=1 << 20,
                          maxresponsesize_cached=1 << 20, maxoperations=100, maxrequests=1000)
    flags = CREATE_SESSION4_FLAG_PERSIST | CREATE_SESSION4_FLAG_CONN_BACK_CHAN
    cs = st.create_session(r.clientid, 1, flags, greedy, BACK, "p", 0)
    assert cs.fore == ChannelAttrs(0, 65536, 65536, 2048, 16, 8, None)
    assert cs.flags == 0
    assert cs.back == BACK
    modest = ChannelAttrs(maxrequestsize=4096, maxresponsesize=4096, maxresponsesize_cached=512,
                          maxoperations=8, maxrequests=2)
    assert st.create_session(r.clientid, 2, 0, modest, BACK, "p", 0).fore == modest


def test_a_fore_channel_too_small_for_a_sequence_is_toosmall():
    st = new_state()
    r = st.exchange_id(b"o", verf(1), "p", 0, 0)
    tiny = ChannelAttrs(maxrequestsize=64)
    fails(nfsstat4.NFS4ERR_TOOSMALL, st.create_session, r.clientid, 1, 0, tiny, BACK, "p", 0)


def test_sessions_per_client_are_bounded():
    st = new_state()
    r = st.exchange_id(b"o", verf(1), "p", 0, 0)
    for seq in range(1, MAX_SESSIONS_PER_CLIENT + 1):
        st.create_session(r.clientid, seq, 0, FORE, BACK, "p", 0)
    fails(nfsstat4.NFS4ERR_SERVERFAULT, st.create_session,
          r.clientid, MAX_SESSIONS_PER_CLIENT + 1, 0, FORE, BACK, "p", 0)


# ---- SEQUENCE (18.46) --------------------------------------------------------

def test_a_new_request_runs_and_its_retry_gets_the_cached_reply():
    st = new_state()
    a = Client(st, "a")
    handle = st.sequence(a.sessionid, 1, 2, 3, True, 1)
    assert isinstance(handle, SlotHandle)
    assert (handle.sequenceid, handle.slotid, handle.highest_slotid,
            handle.target_highest_slotid, handle.status_flags) == (1, 2, 3, 3, 0)
    assert handle.clientid == a.clientid
    handle.complete(b"the reply")
    assert st.sequence(a.sessionid, 1, 2, 3, True, 2) == Replay(b"the reply")
    assert isinstance(st.sequence(a.sessionid, 2, 2, 3, True, 3), SlotHandle)


def test_a_retry_of_an_uncached_reply_is_retry_uncached_rep():
    st = new_state()
    a = Client(st, "a")
    st.sequence(a.sessionid, 1, 0, 0, False, 1).complete(None)
    fails(nfsstat4.NFS4ERR_RETRY_UNCACHED_REP, st.sequence, a.sessionid, 1, 0, 0, False, 1)


def test_a_retry_while_the_request_still_runs_is_delay():
    st = new_state()
    a = Client(st, "a")
    st.sequence(a.sessionid, 1, 0, 0, True, 1)
    fails(nfsstat4.NFS4ERR_DELAY, st.sequence, a.sessionid, 1, 0, 0, True, 1)
    fails(nfsstat4.NFS4ERR_SEQ_MISORDERED, st.sequence, a.sessionid, 2, 0, 0, True, 1)


def test_sequenceids_other_than_the_cached_one_or_the_next_are_misordered():
    st = new_state()
    a = Client(st, "a")
    fails(nfsstat4.NFS4ERR_SEQ_MISORDERED, st.sequence, a.sessionid, 0, 0, 0, False, 1)
    fails(nfsstat4.NFS4ERR_SEQ_MISORDERED, st.sequence, a.sessionid, 2, 0, 0, False, 1)
    for seq in (1, 2):
        st.sequence(a.sessionid, seq, 0, 0, False, 1).complete(b"r")
    fails(nfsstat4.NFS4ERR_SEQ_MISORDERED, st.sequence, a.sessionid, 1, 0, 0, False, 1)
    fails(nfsstat4.NFS4ERR_SEQ_MISORDERED, st.sequence, a.sessionid, 4, 0, 0, False, 1)


def test_cached_replies_are_bounded_per_slot_and_in_total():
    budget = ReplyCacheBudget(limit=1000)
    session = Session(bytes(16), 1, 0, ChannelAttrs(maxresponsesize_cached=600, maxrequests=2),
                      BACK, 0, budget)
    session.sequence(1, 0, 0).complete(b"x" * 601)
    fails(nfsstat4.NFS4ERR_RETRY_UNCACHED_REP, session.sequence, 1, 0, 0)
    session.sequence(2, 0, 0).complete(b"x" * 600)
    session.sequence(1, 1, 0).complete(b"y" * 600)        # would pass the total
    assert session.sequence(2, 0, 0) == Replay(b"x" * 600)
    fails(nfsstat4.NFS4ERR_RETRY_UNCACHED_REP, session.sequence, 1, 1, 0)
    assert budget.used == 600
    session.destroy()
    assert budget.used == 0


def test_a_slot_beyond_the_table_is_badslot():
    st = new_state()
    a = Client(st, "a")
    fails(nfsstat4.NFS4ERR_BADSLOT, st.sequence, a.sessionid, 1, FORE.maxrequests, 0, False, 1)


def test_an_unknown_or_destroyed_session_is_badsession():
    st = new_state()
    a = Client(st, "a")
    fails(nfsstat4.NFS4ERR_BADSESSION, st.sequence, bytes(16), 1, 0, 0, False, 1)
    forged = a.sessionid[:-1] + bytes([a.sessionid[-1] ^ 1])
    fails(nfsstat4.NFS4ERR_BADSESSION, st.sequence, forged, 1, 0, 0, False, 1)
    st.destroy_session(a.sessionid)
    fails(nfsstat4.NFS4ERR_BADSESSION, st.sequence, a.sessionid, 1, 0, 0, False, 1)
    fails(nfsstat4.NFS4ERR_BADSESSION, st.destroy_session, a.sessionid)


def test_each_sequence_renews_the_lease():
    st = new_state()
    a = Client(st, "a")
    a.renew(8)
    assert st.expire(17) == []
    gone = st.expire(18)
    assert [(g.clientid, g.owner, g.principal) for g in gone] == [(a.clientid, a.owner, a.principal)]


def test_a_client_with_a_request_running_is_not_expired_under_it():
    st = new_state()
    a = Client(st, "a")
    handle = st.sequence(a.sessionid, 1, 0, 0, False, 0)
    assert st.expire(100) == []
    handle.complete(None)
    assert len(st.expire(100)) == 1


def test_sequence_binds_its_connection_and_a_closed_connection_is_unbound():
    st = new_state()
    a = Client(st, "a")
    st.sequence(a.sessionid, 1, 0, 0, False, 0, connection="second").complete(None)
    assert st.session_connections(a.sessionid) == ["a", "second"]
    st.connection_closed("a")
    assert st.session_connections(a.sessionid) == ["second"]


def test_bind_conn_to_session_binds_the_fore_channel_only():
    st = new_state()
    a = Client(st, "a")
    assert st.bind_conn_to_session(a.sessionid, "third", CDFC4_FORE_OR_BOTH, 1) == CDFS4_FORE
    assert "third" in st.session_connections(a.sessionid)
    fails(nfsstat4.NFS4ERR_INVAL, st.bind_conn_to_session, a.sessionid, "x", CDFC4_BACK, 1)
    fails(nfsstat4.NFS4ERR_BADSESSION, st.bind_conn_to_session, bytes(16), "x", CDFC4_FORE_OR_BOTH, 1)


def test_destroy_clientid_is_busy_while_sessions_or_state_remain():
    st = new_state()
    a = Client(st, "a")
    a.open(R)
    fails(nfsstat4.NFS4ERR_CLIENTID_BUSY, st.destroy_clientid, a.clientid)
    st.destroy_session(a.sessionid)
    fails(nfsstat4.NFS4ERR_CLIENTID_BUSY, st.destroy_clientid, a.clientid)
    b = Client(st, "b")
    st.destroy_session(b.sessionid)
    st.destroy_clientid(b.clientid)
    fails(nfsstat4.NFS4ERR_STALE_CLIENTID, st.destroy_clientid, b.clientid)


# ---- leases hand state on ----------------------------------------------------

def test_an_expired_clients_lock_goes_to_the_client_that_conflicts_with_it():
    st = new_state()
    a, b = Client(st, "a"), Client(st, "b")
    a.lock(a.open(RW).stateid, WRITE_LT, 0, 100)
    b_open = b.open(RW, now=5).stateid
    denied = fails(nfsstat4.NFS4ERR_DENIED, b.lock, b_open, WRITE_LT, 50, 10, now=5).denied
    assert (denied.offset, denied.length, denied.locktype, denied.clientid, denied.owner) == (
        0, 100, WRITE_LT, a.clientid, b"lo")
    b.renew(9)
    # a sent nothing for a lease: b's lock drops a without waiting for expire().
    b.lock(b_open, WRITE_LT, 50, 10, now=10)
    fails(nfsstat4.NFS4ERR_BADSESSION, st.sequence, a.sessionid, 1, 0, 0, False, 10)
    assert [g.clientid for g in st.expire(10)] == []


def test_expire_drops_a_silent_clients_share_reservation():
    st = new_state()
    a, b = Client(st, "a"), Client(st, "b", now=5)
    a.open(R, OPEN4_SHARE_DENY_WRITE)
    fails(nfsstat4.NFS4ERR_SHARE_DENIED, b.open, W, now=5)
    b.renew(9)
    assert [g.clientid for g in st.expire(10)] == [a.clientid]
    b.open(W, now=10)


def test_a_conflicting_open_drops_an_expired_holder_too():
    st = new_state()
    a, b = Client(st, "a"), Client(st, "b")
    a.open(RW, OPEN4_SHARE_DENY_WRITE)
    b.renew(9)
    b.open(W, now=11)


# ---- share reservations (OPEN, OPEN_DOWNGRADE, CLOSE) -----------------------

def test_share_deny_conflicts_in_both_directions():
    st = new_state()
    a, b = Client(st, "a"), Client(st, "b")
    a.open(R, OPEN4_SHARE_DENY_WRITE)
    fails(nfsstat4.NFS4ERR_SHARE_DENIED, b.open, W)
    fails(nfsstat4.NFS4ERR_SHARE_DENIED, b.open, R, OPEN4_SHARE_DENY_READ)
    b.open(R)
    b.open(W, file=FH2)
    fails(nfsstat4.NFS4ERR_SHARE_DENIED, a.open, R, OPEN4_SHARE_DENY_WRITE, file=FH2, owner=b"x")


def test_two_owners_of_one_client_conflict_but_an_owner_upgrades_over_its_own_deny():
    st = new_state()
    a = Client(st, "a")
    first = a.open(R, OPEN4_SHARE_DENY_WRITE, owner=b"one")
    fails(nfsstat4.NFS4ERR_SHARE_DENIED, a.open, W, owner=b"two")
    up = a.open(W, owner=b"one")
    assert up.stateid.other == first.stateid.other
    assert up.stateid.seqid == first.stateid.seqid + 1
    assert (up.share_access, up.share_deny) == (RW, OPEN4_SHARE_DENY_WRITE)


def test_open_downgrade_only_to_modes_that_were_opened():
    st = new_state()
    a = Client(st, "a")
    a.open(R)
    s = a.open(RW, OPEN4_SHARE_DENY_WRITE).stateid
    fails(nfsstat4.NFS4ERR_INVAL, st.open_downgrade, a.clientid, s, FH, W, OPEN4_SHARE_DENY_NONE)
    down = st.open_downgrade(a.clientid, s, FH, R, OPEN4_SHARE_DENY_NONE)
    assert down.seqid == s.seqid + 1
    fails(nfsstat4.NFS4ERR_OPENMODE, st.check_io, a.clientid, down, FH, True, 0)
    b = Client(st, "b")
    b.open(W)                                   # the deny-write went with the downgrade
    fails(nfsstat4.NFS4ERR_INVAL, st.open_downgrade, a.clientid, down, FH, RW, OPEN4_SHARE_DENY_NONE)


def test_close_ends_the_open_and_returns_the_invalid_stateid():
    st = new_state()
    a, b = Client(st, "a"), Client(st, "b")
    s = a.open(RW, OPEN4_SHARE_DENY_WRITE).stateid
    assert st.close(a.clientid, s, FH) == INVALID_STATEID
    b.open(W)
    fails(nfsstat4.NFS4ERR_BAD_STATEID, st.close, a.clientid, s, FH)


def test_share_bits_out_of_range_are_inval_and_delegation_wants_are_ignored():
    st = new_state()
    a = Client(st, "a")
    fails(nfsstat4.NFS4ERR_INVAL, a.open, 0)
    fails(nfsstat4.NFS4ERR_INVAL, a.open, R, 4)
    assert a.open(R | 0x0100).share_access == R         # OPEN4_SHARE_ACCESS_WANT_NO_DELEG


def test_io_needs_the_right_open_mode():
    st = new_state()
    a = Client(st, "a")
    ro = a.open(R, owner=b"r").stateid
    wo = a.open(W, owner=b"w").stateid
    fails(nfsstat4.NFS4ERR_OPENMODE, st.check_io, a.clientid, ro, FH, True, 0)
    st.check_io(a.clientid, ro, FH, False, 0)
    st.check_io(a.clientid, wo, FH, True, 0)
    st.check_io(a.clientid, wo, FH, False, 0)           # reads through a write open, as Linux
    fails(nfsstat4.NFS4ERR_BAD_STATEID, st.check_io, a.clientid, ro, FH2, False, 0)


def test_anonymous_io_respects_share_reservations_and_read_bypass_skips_them():
    st = new_state()
    a = Client(st, "a")
    a.open(RW, OPEN4_SHARE_DENY_WRITE)
    fails(nfsstat4.NFS4ERR_LOCKED, st.check_io, 0, ANONYMOUS_STATEID, FH, True, 0)
    st.check_io(0, ANONYMOUS_STATEID, FH, False, 0)
    st.check_io(0, READ_BYPASS_STATEID, FH, False, 0)
    fails(nfsstat4.NFS4ERR_LOCKED, st.check_io, 0, READ_BYPASS_STATEID, FH, True, 0)
    st.check_io(0, ANONYMOUS_STATEID, FH2, True, 0)
    fails(nfsstat4.NFS4ERR_BAD_STATEID, st.check_io, a.clientid, CURRENT_STATEID, FH, False, 0)


# ---- byte-range locks (LOCK, LOCKT, LOCKU) -----------------------------------

def test_a_lock_conflict_between_clients_reports_the_lock_in_the_way():
    st = new_state()
    a, b = Client(st, "a"), Client(st, "b")
    a.lock(a.open(RW).stateid, WRITE_LT, 100, NFS4_UINT64_MAX, owner=b"pid-7")
    denied = fails(nfsstat4.NFS4ERR_DENIED, st.lockt, b.clientid, b"pid-9", FH, READ_LT, 0, 200, 0
                   ).denied
    assert (denied.offset, denied.length, denied.locktype, denied.clientid, denied.owner) == (
        100, NFS4_UINT64_MAX, WRITE_LT, a.clientid, b"pid-7")
    st.lockt(b.clientid, b"pid-9", FH, WRITE_LT, 0, 100, 0)


def test_two_lock_owners_of_one_client_conflict_and_read_locks_share():
    st = new_state()
    a = Client(st, "a")
    s = a.open(RW).stateid
    a.lock(s, READ_LT, 0, 10, owner=b"one")
    a.lock(s, READW_LT, 0, 10, owner=b"two")
    denied = fails(nfsstat4.NFS4ERR_DENIED, a.lock, s, WRITEW_LT, 5, 1, owner=b"three").denied
    assert denied.locktype == READ_LT and denied.clientid == a.clientid


def test_unlocking_the_middle_splits_the_range():
    st = new_state()
    a, b = Client(st, "a"), Client(st, "b")
    lk = a.lock(a.open(RW).stateid, WRITE_LT, 0, 100)
    lk2 = st.locku(a.clientid, lk, FH, WRITE_LT, 40, 20)
    assert lk2.seqid == lk.seqid + 1 and lk2.other == lk.other
    st.lockt(b.clientid, b"x", FH, WRITE_LT, 40, 20, 0)
    left = fails(nfsstat4.NFS4ERR_DENIED, st.lockt, b.clientid, b"x", FH, WRITE_LT, 0, 50, 0).denied
    right = fails(nfsstat4.NFS4ERR_DENIED, st.lockt, b.clientid, b"x", FH, WRITE_LT, 50, 50, 0).denied
    assert (left.offset, left.length, right.offset, right.length) == (0, 40, 60, 40)


def test_adjacent_ranges_of_one_owner_and_type_merge():
    st = new_state()
    a, b = Client(st, "a"), Client(st, "b")
    s = a.open(RW).stateid
    lk = a.lock(s, READ_LT, 0, 10)
    st.lock(a.clientid, FH, READ_LT, 10, 10, 0, lock_stateid=lk)
    denied = fails(nfsstat4.NFS4ERR_DENIED, st.lockt, b.clientid, b"x", FH, WRITE_LT, 0, 1, 0).denied
    assert (denied.offset, denied.length) == (0, 20)


def test_an_upgrade_that_conflicts_is_denied_and_leaves_the_read_lock():
    st = new_state()
    a, b = Client(st, "a"), Client(st, "b")
    lk = a.lock(a.open(RW).stateid, READ_LT, 0, 10)
    b_lk = b.lock(b.open(RW).stateid, READ_LT, 5, 10)
    denied = fails(nfsstat4.NFS4ERR_DENIED, st.lock, a.clientid, FH, WRITE_LT, 0, 10, 0,
                   lock_stateid=lk).denied
    assert (denied.offset, denied.length, denied.clientid) == (5, 10, b.clientid)
    held = fails(nfsstat4.NFS4ERR_DENIED, st.lockt, b.clientid, b"x", FH, WRITE_LT, 0, 4, 0).denied
    assert (held.locktype, held.clientid) == (READ_LT, a.clientid)
    # Once the other reader is gone the upgrade goes through.
    st.locku(b.clientid, b_lk, FH, READ_LT, 0, NFS4_UINT64_MAX)
    up = st.lock(a.clientid, FH, WRITE_LT, 0, 10, 0, lock_stateid=lk)
    assert up.seqid == lk.seqid + 1
    fails(nfsstat4.NFS4ERR_DENIED, st.lockt, b.clientid, b"x", FH, READ_LT, 0, 1, 0)


def test_lock_ranges_that_are_empty_or_overflow_are_inval():
    st = new_state()
    a = Client(st, "a")
    s = a.open(RW).stateid
    fails(nfsstat4.NFS4ERR_INVAL, a.lock, s, WRITE_LT, 0, 0)
    fails(nfsstat4.NFS4ERR_INVAL, a.lock, s, WRITE_LT, NFS4_UINT64_MAX, 2)
    fails(nfsstat4.NFS4ERR_INVAL, a.lock, s, 9, 0, 1)
    a.lock(s, WRITE_LT, NFS4_UINT64_MAX, 1)


def test_a_lock_needs_an_open_mode_that_allows_it():
    st = new_state()
    a = Client(st, "a")
    fails(nfsstat4.NFS4ERR_OPENMODE, a.lock, a.open(R).stateid, WRITE_LT, 0, 1)
    fails(nfsstat4.NFS4ERR_OPENMODE, a.lock, a.open(W, owner=b"w").stateid, READ_LT, 0, 1)


def test_lockt_creates_no_state_for_an_owner_that_has_none():
    st = new_state()
    a = Client(st, "a")
    st.lockt(a.clientid, b"never-seen", FH, WRITE_LT, 0, 1, 0)
    st.destroy_session(a.sessionid)
    st.destroy_clientid(a.clientid)             # it would be busy with any state


def test_free_stateid_refuses_while_locks_are_held():
    st = new_state()
    a = Client(st, "a")
    s = a.open(RW).stateid
    lk = a.lock(s, WRITE_LT, 0, 10)
    fails(nfsstat4.NFS4ERR_LOCKS_HELD, st.free_stateid, a.clientid, lk)
    fails(nfsstat4.NFS4ERR_LOCKS_HELD, st.free_stateid, a.clientid, s)
    old = lk
    lk = st.locku(a.clientid, lk, FH, WRITE_LT, 0, 10)
    fails(nfsstat4.NFS4ERR_OLD_STATEID, st.free_stateid, a.clientid, old)
    st.free_stateid(a.clientid, lk)
    assert st.test_stateid(a.clientid, [lk, s]) == [nfsstat4.NFS4ERR_BAD_STATEID, nfsstat4.NFS4_OK]


def test_close_releases_the_locks_taken_through_the_open():
    st = new_state()
    a, b = Client(st, "a"), Client(st, "b")
    s = a.open(RW).stateid
    a.lock(s, WRITE_LT, 0, 10)
    st.close(a.clientid, s, FH)
    b.lock(b.open(RW).stateid, WRITE_LT, 0, 10)


# ---- stateids (8.2) ---------------------------------------------------------

def test_a_forged_or_foreign_stateid_is_bad():
    st = new_state()
    a, b = Client(st, "a"), Client(st, "b")
    s = a.open(R).stateid
    forged = Stateid(s.seqid, s.other[:8] + bytes(4))
    fails(nfsstat4.NFS4ERR_BAD_STATEID, st.check_io, a.clientid, forged, FH, False, 0)
    guessed = Stateid(s.seqid, s.other[:4] + (2).to_bytes(4, "big") + s.other[8:])
    fails(nfsstat4.NFS4ERR_BAD_STATEID, st.check_io, a.clientid, guessed, FH, False, 0)
    fails(nfsstat4.NFS4ERR_BAD_STATEID, st.check_io, b.clientid, s, FH, False, 0)
    other_key = new_state(secret=b"another boot key")
    fails(nfsstat4.NFS4ERR_BAD_STATEID, other_key.close, a.clientid, s, FH)


def test_an_older_seqid_is_old_a_newer_one_bad_and_zero_means_current():
    st = new_state()
    a = Client(st, "a")
    first = a.open(R).stateid
    second = a.open(W).stateid
    assert second.seqid == 2
    fails(nfsstat4.NFS4ERR_OLD_STATEID, st.check_io, a.clientid, first, FH, False, 0)
    fails(nfsstat4.NFS4ERR_BAD_STATEID, st.check_io, a.clientid,
          Stateid(3, second.other), FH, False, 0)
    st.check_io(a.clientid, Stateid(0, second.other), FH, True, 0)


def test_a_stateid_from_a_previous_boot_is_stale():
    before = new_state()
    a = Client(before, "a")
    s = a.open(R).stateid
    after = new_state(record=before.record(), secret=b"a new boot's key")
    b = Client(after, "b")
    fails(nfsstat4.NFS4ERR_STALE_STATEID, after.check_io, b.clientid, s, FH, False, 0)
    fails(nfsstat4.NFS4ERR_STALE_STATEID, after.delegreturn, b.clientid, s)
    assert after.test_stateid(b.clientid, [s]) == [nfsstat4.NFS4ERR_BAD_STATEID]


def test_the_special_stateids_are_recognised():
    assert special_kind(ANONYMOUS_STATEID) == ANONYMOUS
    assert special_kind(READ_BYPASS_STATEID) == READ_BYPASS
    assert special_kind(CURRENT_STATEID) == CURRENT and is_current_stateid(CURRENT_STATEID)
    assert special_kind(Stateid(5, b"x" * 12)) is None
    fails(nfsstat4.NFS4ERR_BAD_STATEID, special_kind, INVALID_STATEID)
    fails(nfsstat4.NFS4ERR_BAD_STATEID, special_kind, Stateid(0, b"\xff" * 12))


def test_delegreturn_finds_no_delegation_ever():
    st = new_state()
    a = Client(st, "a")
    s = a.open(R).stateid
    fails(nfsstat4.NFS4ERR_BAD_STATEID, st.delegreturn, a.clientid, s)
    fails(nfsstat4.NFS4ERR_BAD_STATEID, st.delegreturn, a.clientid, ANONYMOUS_STATEID)


# ---- grace and reclaim (8.4.2, 18.51) ----------------------------------------

def restarted(now=100, **kw):
    """A server restarted at ``now`` after clients a and c had mounted and a held a lock."""
    before = new_state()
    a, c = Client(before, "a"), Client(before, "c")
    a.lock(a.open(RW).stateid, WRITE_LT, 0, 10)
    assert decode_record(before.record())[1] == {(a.owner, a.principal), (c.owner, c.principal)}
    return new_state(now=now, record=before.record(), epoch=2000, **kw)


def test_without_a_previous_record_there_is_no_grace():
    assert not new_state().in_grace(0)


def test_new_opens_and_locks_are_refused_during_grace():
    st = restarted()
    assert st.in_grace(100)
    b = Client(st, "b", now=100, complete=False)
    fails(nfsstat4.NFS4ERR_GRACE, b.open, RW, now=100)
    fails(nfsstat4.NFS4ERR_GRACE, st.lockt, b.clientid, b"x", FH, WRITE_LT, 0, 1, 100)
    a = Client(st, "a", now=100, verifier=2, complete=False)
    s = a.open(RW, now=100, reclaim=True).stateid
    fails(nfsstat4.NFS4ERR_GRACE, a.lock, s, WRITE_LT, 0, 10, now=100)
    fails(nfsstat4.NFS4ERR_GRACE, st.check_io, 0, ANONYMOUS_STATEID, FH, False, 100)


def test_a_recorded_client_reclaims_its_open_and_lock():
    st = restarted()
    a = Client(st, "a", now=100, verifier=2, complete=False)
    s = a.open(RW, now=100, reclaim=True).stateid
    a.lock(s, WRITE_LT, 0, 10, now=100, reclaim=True)
    st.reclaim_complete(a.clientid, False, 101)
    fails(nfsstat4.NFS4ERR_NO_GRACE, a.open, R, file=FH2, now=101, reclaim=True)
    fails(nfsstat4.NFS4ERR_COMPLETE_ALREADY, st.reclaim_complete, a.clientid, False, 101)


def test_a_client_the_record_does_not_know_cannot_reclaim():
    st = restarted()
    b = Client(st, "b", now=100, complete=False)
    fails(nfsstat4.NFS4ERR_RECLAIM_BAD, b.open, RW, now=100, reclaim=True)
    squatter = Client(st, "c", now=100, principal="sys:1000@c", complete=False)
    fails(nfsstat4.NFS4ERR_RECLAIM_BAD, squatter.open, RW, now=100, reclaim=True)


def test_grace_ends_when_every_recorded_client_has_completed_reclaim():
    st = restarted()
    a = Client(st, "a", now=100, verifier=2)
    assert st.in_grace(101)
    Client(st, "c", now=101, verifier=2)
    assert not st.in_grace(101)
    a.open(RW, now=101)
    a.lock(a.open(RW, file=FH2, now=101).stateid, WRITE_LT, 0, 1, file=FH2, now=101)


def test_grace_ends_after_grace_time_and_reclaims_then_are_no_grace():
    st = restarted(grace_time=30)
    a = Client(st, "a", now=100, verifier=2, complete=False)
    assert st.in_grace(129) and not st.in_grace(130)
    fails(nfsstat4.NFS4ERR_NO_GRACE, a.open, RW, now=130, reclaim=True)
    a.renew(125)
    a.open(RW, now=130)


def test_a_lock_reclaim_outside_grace_is_no_grace():
    st = new_state()
    a = Client(st, "a")
    fails(nfsstat4.NFS4ERR_NO_GRACE, a.lock, a.open(RW).stateid, WRITE_LT, 0, 1, reclaim=True)


def test_the_record_names_clients_that_completed_reclaim_and_forgets_expired_ones():
    st = new_state()
    generation = st.record_generation
    a = Client(st, "a", complete=False)
    assert st.record_generation == generation
    st.reclaim_complete(a.clientid, False, 0)
    assert st.record_generation == generation + 1
    a.renew(1)
    assert st.record_generation == generation + 1
    epoch, clients = decode_record(st.record())
    assert (epoch, clients) == (st.epoch, {(a.owner, a.principal)})
    st.expire(50)
    assert decode_record(st.record())[1] == set()


def test_the_previous_boots_clients_stay_recorded_until_grace_ends():
    st = restarted(grace_time=30)
    a = Client(st, "a", now=100, verifier=2)
    assert len(decode_record(st.record())[1]) == 2
    a.renew(125)
    st.expire(130)
    assert decode_record(st.record())[1] == {(a.owner, a.principal)}


def test_a_damaged_record_is_refused_whole():
    st = new_state()
    Client(st, "a")
    good = st.record()
    for bad in (good[:-1], good[:10], b"garbage" * 4, good[:21] + bytes([good[21] ^ 1]) + good[22:], b"\x00" * 40):
        with pytest.raises(RecordError):
            decode_record(bad)
        with pytest.raises(RecordError):
            new_state(record=bad)


# ---- bounds ------------------------------------------------------------------

def test_a_lock_owners_ranges_are_capped_and_an_unlock_that_would_split_past_it_refused(
        monkeypatch):
    monkeypatch.setattr(nfs4opens, "MAX_LOCK_RANGES_PER_OWNER", 2)
    st = new_state()
    a = Client(st, "a")
    lk = a.lock(a.open(RW).stateid, WRITE_LT, 0, 10)
    lk = st.lock(a.clientid, FH, READ_LT, 20, 10, 0, lock_stateid=lk)
    fails(nfsstat4.NFS4ERR_SERVERFAULT, st.lock, a.clientid, FH, WRITE_LT, 40, 1, 0,
          lock_stateid=lk)
    fails(nfsstat4.NFS4ERR_SERVERFAULT, st.locku, a.clientid, lk, FH, WRITE_LT, 4, 2)
    st.lock(a.clientid, FH, WRITE_LT, 10, 10, 0, lock_stateid=lk)     # merging is fine


def test_all_lock_ranges_together_are_capped_with_delay(monkeypatch):
    monkeypatch.setattr(nfs4opens, "MAX_LOCK_RANGES", 2)
    st = new_state()
    a, b = Client(st, "a"), Client(st, "b")
    a.lock(a.open(RW).stateid, WRITE_LT, 0, 1)
    a.lock(a.open(RW).stateid, WRITE_LT, 5, 1, owner=b"other")
    fails(nfsstat4.NFS4ERR_DELAY, b.lock, b.open(RW).stateid, WRITE_LT, 10, 1)


def test_stateids_per_client_and_in_total_are_capped(monkeypatch):
    monkeypatch.setattr(nfs4opens, "MAX_STATEIDS_PER_CLIENT", 2)
    monkeypatch.setattr(nfs4opens, "MAX_STATEIDS", 3)
    st = new_state()
    a, b = Client(st, "a"), Client(st, "b")
    a.open(R, file=b"1")
    a.open(R, file=b"2")
    fails(nfsstat4.NFS4ERR_SERVERFAULT, a.open, R, file=b"3")
    b.open(R, file=b"1")
    fails(nfsstat4.NFS4ERR_DELAY, b.open, R, file=b"2")
    b.renew(5)
    b.open(R, file=b"2", now=12)         # a's lease ran out: expiry made room


def test_the_client_table_is_capped_with_delay_until_leases_run_out(monkeypatch):
    monkeypatch.setattr(nfs4state, "MAX_CLIENTS", 2)
    st = new_state()
    Client(st, "a")
    st.exchange_id(b"unconfirmed", verf(1), "p", 0, 0)
    fails(nfsstat4.NFS4ERR_DELAY, st.exchange_id, b"third", verf(1), "p", 0, 5)
    st.exchange_id(b"third", verf(1), "p", 0, 10)


# ---- properties --------------------------------------------------------------

QUICK = settings(max_examples=200, derandomize=True, deadline=None, database=None,
                 suppress_health_check=list(HealthCheck))
SPAN = 64          # the model's bytes: past every finite range; "to EOF" is [start, SPAN)
LOCK_OPS = st.lists(st.tuples(
    st.sampled_from(["lock", "unlock"]), st.sampled_from(["p", "q", "r"]),
    st.booleans(), st.integers(0, 40), st.one_of(st.integers(1, 12), st.just(NFS4_UINT64_MAX))),
    max_size=40)


@QUICK
@given(LOCK_OPS)
def test_lock_ranges_behave_like_one_lock_per_byte(ops):
    """Whatever the order of locks and unlocks, each owner holds exactly the
    bytes a per-byte model says, in disjoint ranges merged where they touch,
    and a refusal names a lock that really is in the way."""
    locks, model = FileLocks(), {}          # byte -> {owner: write}
    for op, owner, write, offset, length in ops:
        start, end = lock_range(offset, length)
        span = range(start, min(end, SPAN))
        if op == "unlock":
            locks.replace(owner, locks.after_set(owner, start, end, None))
            for b in span:
                model.get(b, {}).pop(owner, None)
            continue
        clash = locks.conflict(owner, start, end, write)
        blocked = any(o != owner and (write or w) for b in span for o, w in model.get(b, {}).items())
        assert (clash is not None) == blocked
        if clash is not None:
            assert clash.owner != owner and (write or clash.write)
            assert clash.start < end and start < clash.end
            continue
        locks.replace(owner, locks.after_set(owner, start, end, write))
        for b in span:
            model.setdefault(b, {})[owner] = write
    for owner in "pqr":
        held = sorted(locks.held_by(owner), key=lambda r: r.start)
        assert all(a.end < b.start or (a.end == b.start and a.write != b.write)
                   for a, b in itertools.pairwise(held))
        got = {b: r.write for r in held for b in range(r.start, min(r.end, SPAN))}
        assert got == {b: owners[owner] for b, owners in model.items() if owner in owners}


STATE_OPS = st.lists(st.tuples(
    st.sampled_from(["open", "lock", "locku", "close", "downgrade", "lockt", "free", "renew"]),
    st.integers(0, 1), st.integers(0, 1), st.integers(1, 3), st.integers(0, 3),
    st.integers(0, 1 << 64), st.integers(0, 1 << 64), st.integers(0, 5)), max_size=30)


@QUICK
@given(STATE_OPS)
def test_any_sequence_of_operations_fails_only_with_an_nfs4_status(ops):
    """Arbitrary ranges, modes, stale and foreign stateids: the state answers
    with an Nfs4Error or succeeds, and its counters stay consistent."""
    state = new_state()
    clients = [Client(state, "a"), Client(state, "b")]
    stateids = [Stateid(0, bytes(12)), Stateid(7, b"\x01" * 12)]
    for now, (op, who, f, access, deny, offset, length, pick) in enumerate(ops, 1):
        c, file = clients[who], (FH, FH2)[f]
        sid = stateids[pick % len(stateids)]
        try:
            if op == "open":
                stateids.append(c.open(access, deny, file=file, now=now).stateid)
            elif op == "lock":
                stateids.append(c.lock(sid, 1 + deny % 4, offset, length, file=file, now=now))
                stateids.append(state.lock(c.clientid, file, WRITE_LT, offset, length, now,
                                           lock_stateid=sid))
            elif op == "locku":
                stateids.append(state.locku(c.clientid, sid, file, READ_LT, offset, length))
            elif op == "close":
                state.close(c.clientid, sid, file)
            elif op == "downgrade":
                stateids.append(state.open_downgrade(c.clientid, sid, file, access, deny))
            elif op == "lockt":
                state.lockt(c.clientid, b"t", file, 1 + deny % 4, offset, length, now)
            elif op == "free":
                state.free_stateid(c.clientid, sid)
            else:
                c.renew(now, slot=pick % FORE.maxrequests)
        except Nfs4Error:
            pass
    held = sum(len(f.locks.ranges) for f in state._files.values())
    assert held == state._nranges
    assert len(state._states) == sum(c.nstates for c in state._clients.values())
