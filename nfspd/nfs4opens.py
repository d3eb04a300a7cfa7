"""Open and lock state of NFSv4.1 (RFC 8881 sections 8, 9, 18.10-18.18): stateids,
share reservations, byte-range locks; the part of Nfs4State (nfs4state) that
OPEN, OPEN_DOWNGRADE, CLOSE, LOCK, LOCKT, LOCKU, TEST_STATEID, FREE_STATEID,
DELEGRETURN and the I/O checks use.

A mixin, set up by ``_init_opens_and_locks()``: Nfs4State provides the clients
(``_clients``, ``_client(clientid)``),
the stateid minter (``_minter``), the grace rules (``in_grace(now)``,
``_check_new_state(client, reclaim, now)``) and the leases (``expire(now)``,
``_expired_holder(clientid, now)``: drops the holder of conflicting state when
its lease ran out, so an expired client's state goes to whoever conflicts).

An open stateid exists per (open owner, file), a lock stateid per (lock owner,
file), tied to the open it was first taken through; in 4.1 owners carry no
seqids, so an owner is forgotten with its last stateid.
"""

import dataclasses

from common.nfs4 import OPEN4_SHARE_ACCESS_READ, OPEN4_SHARE_ACCESS_WRITE, nfsstat4
from common.nfs4error import Nfs4Error
from nfspd.nfs4locks import (
    READ_LT,
    WRITE_LT,
    FileLocks,
    LockDenied,
    is_write,
    lock_range,
    range_length,
)
from nfspd.nfs4record import NFS4_OPAQUE_LIMIT
from nfspd.nfs4stateid import (
    ANONYMOUS,
    CURRENT,
    INVALID_STATEID,
    READ_BYPASS,
    Stateid,
    next_seqid,
    special_kind,
)

# Bounds (see nfs4state on DELAY versus SERVERFAULT).
MAX_STATEIDS = 65536               # open and lock stateids, all clients (DELAY)
MAX_STATEIDS_PER_CLIENT = 16384    # (SERVERFAULT)
MAX_OWNERS_PER_CLIENT = 4096       # open owners and lock owners, each (SERVERFAULT)
MAX_LOCK_RANGES = 65536            # byte ranges held, all owners (DELAY)
MAX_LOCK_RANGES_PER_OWNER = 4096   # (SERVERFAULT)


@dataclasses.dataclass(frozen=True)
class OpenResult:
    stateid: Stateid
    share_access: int
    share_deny: int


class _OpenState:
    def __init__(self, index, other, clientid, owner, file):
        self.index, self.other, self.clientid = index, other, clientid
        self.owner, self.file = owner, file
        self.seqid = 0
        self.access = self.deny = 0
        # Every access/deny value an OPEN asked for: OPEN_DOWNGRADE may only
        # return to one of them (RFC 8881 18.18.3), as Linux's bitmaps check.
        self.access_seen = set()
        self.deny_seen = set()
        self.locks = set()

    def stateid(self):
        return Stateid(self.seqid, self.other)


class _LockState:
    def __init__(self, index, other, clientid, owner, file, open_index):
        self.index, self.other, self.clientid = index, other, clientid
        self.owner, self.file, self.open_index = owner, file, open_index
        self.seqid = 0

    def stateid(self):
        return Stateid(self.seqid, self.other)


class _File:
    def __init__(self):
        self.opens = set()
        self.locks = FileLocks()


class OpensAndLocks:
    def _init_opens_and_locks(self):
        self._states = {}      # stateid index -> _OpenState | _LockState
        self._files = {}       # file handle -> _File, while it has opens or locks
        self._nranges = 0      # lock ranges held, all files

    # ---- stateids -----------------------------------------------------------

    def _find(self, clientid, stateid, file, kind):
        if special_kind(stateid) is not None:
            raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
        state = self._states.get(self._minter.index_of(stateid.other))
        if state is None or state.clientid != clientid or (kind and not isinstance(state, kind)):
            raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
        if file is not None and state.file != file:
            raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
        if stateid.seqid != 0:
            if stateid.seqid < state.seqid:
                raise Nfs4Error(nfsstat4.NFS4ERR_OLD_STATEID)
            if stateid.seqid > state.seqid:
                raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
        return state

    def _new_state(self, client, now):
        if client.nstates >= MAX_STATEIDS_PER_CLIENT:
            raise Nfs4Error(nfsstat4.NFS4ERR_SERVERFAULT)
        if len(self._states) >= MAX_STATEIDS:
            self.expire(now)
            if len(self._states) >= MAX_STATEIDS:
                raise Nfs4Error(nfsstat4.NFS4ERR_DELAY)
        return self._minter.mint()

    def test_stateid(self, clientid, stateids):
        """TEST_STATEID: a status per stateid; another boot's is BAD_STATEID here
        (RFC 8881 18.48 lists no STALE)."""
        out = []
        for stateid in stateids:
            try:
                self._find(clientid, stateid, None, None)
                out.append(nfsstat4.NFS4_OK)
            except Nfs4Error as e:
                out.append(nfsstat4.NFS4ERR_BAD_STATEID
                           if e.status == nfsstat4.NFS4ERR_STALE_STATEID else e.status)
        return out

    def free_stateid(self, clientid, stateid):
        """FREE_STATEID: a lock stateid without locks goes; one with locks, or an
        open stateid (CLOSE frees those), is NFS4ERR_LOCKS_HELD; the seqid is
        checked like any other's, as Linux does."""
        state = self._find(clientid, stateid, None, None)
        if isinstance(state, _OpenState) or self._files[state.file].locks.held_by(
                (clientid, state.owner)):
            raise Nfs4Error(nfsstat4.NFS4ERR_LOCKS_HELD)
        self._remove_lock(state)

    def delegreturn(self, clientid, stateid):
        """DELEGRETURN: we never grant delegations, so no stateid names one."""
        if special_kind(stateid) is None:
            self._minter.index_of(stateid.other)     # another boot's: STALE
        raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)

    # ---- opens and share reservations ---------------------------------------

    def _file(self, file):
        f = self._files.get(file)
        if f is None:
            f = self._files[file] = _File()
        return f

    def _forget_file_if_unused(self, file):
        f = self._files.get(file)
        if f is not None and not f.opens and not f.locks.ranges:
            del self._files[file]

    def _share_conflict(self, file, skip, access, deny, now):
        """The first open of another owner whose reservation clashes, after
        dropping expired clients in the way; None when there is none."""
        f = self._files.get(file)
        while f is not None:
            clash = next((self._states[i] for i in f.opens if i != skip and (
                self._states[i].deny & access or self._states[i].access & deny)), None)
            if clash is None or not self._expired_holder(clash.clientid, now):
                return clash
        return None

    def open(self, clientid, owner, file, share_access, share_deny, now, reclaim=False):
        """OPEN's state part: share_access may carry the WANT_* delegation bits
        (ignored: we never grant one); reclaim=True for CLAIM_PREVIOUS."""
        client = self._client(clientid)
        access = share_access & 0xFF
        if access not in (1, 2, 3) or share_deny not in (0, 1, 2, 3):
            raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
        self._check_new_state(client, reclaim, now)
        owner = bytes(owner)
        if not 0 < len(owner) <= NFS4_OPAQUE_LIMIT:
            raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
        indices = client.open_owners.get(owner, set())
        state = next((self._states[i] for i in indices if self._states[i].file == file), None)
        if self._share_conflict(file, state.index if state else None, access, share_deny, now):
            raise Nfs4Error(nfsstat4.NFS4ERR_SHARE_DENIED)
        if state is None:
            if owner not in client.open_owners and len(client.open_owners) >= MAX_OWNERS_PER_CLIENT:
                raise Nfs4Error(nfsstat4.NFS4ERR_SERVERFAULT)
            other, index = self._new_state(client, now)
            state = _OpenState(index, other, clientid, owner, file)
            self._states[index] = state
            client.open_owners.setdefault(owner, set()).add(index)
            client.nstates += 1
            self._file(file).opens.add(index)
        state.access |= access
        state.deny |= share_deny
        state.access_seen.add(access)
        state.deny_seen.add(share_deny)
        state.seqid = next_seqid(state.seqid)
        return OpenResult(state.stateid(), state.access, state.deny)

    def open_downgrade(self, clientid, stateid, file, share_access, share_deny):
        state = self._find(clientid, stateid, file, _OpenState)
        access = share_access & 0xFF
        if access not in state.access_seen or share_deny not in state.deny_seen:
            raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
        state.access, state.deny = access, share_deny
        state.access_seen = {a for a in state.access_seen if a & ~access == 0}
        state.deny_seen = {d for d in state.deny_seen if d & ~share_deny == 0}
        state.seqid = next_seqid(state.seqid)
        return state.stateid()

    def close(self, clientid, stateid, file):
        """CLOSE: the open and the locks taken through it go; the reply's stateid
        is the reserved invalid one (RFC 8881 8.2.3)."""
        self._remove_open(self._find(clientid, stateid, file, _OpenState))
        return INVALID_STATEID

    def _remove_open(self, state):
        for index in list(state.locks):
            self._remove_lock(self._states[index])
        client = self._clients[state.clientid]
        self._states.pop(state.index, None)
        client.nstates -= 1
        owned = client.open_owners.get(state.owner)
        owned.discard(state.index)
        if not owned:
            del client.open_owners[state.owner]
        self._files[state.file].opens.discard(state.index)
        self._forget_file_if_unused(state.file)

    def check_io(self, clientid, stateid, file, write, now):
        """May this READ (write=False), WRITE or SETATTR of size (write=True) go
        ahead? A read-only open refuses writes (NFS4ERR_OPENMODE); reads are
        allowed with any open, as Linux. The current stateid must already have
        been replaced by the COMPOUND layer."""
        kind = special_kind(stateid)
        if kind == CURRENT:
            raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
        if kind == READ_BYPASS and not write:
            return
        if kind in (ANONYMOUS, READ_BYPASS):
            if self.in_grace(now):
                raise Nfs4Error(nfsstat4.NFS4ERR_GRACE)
            if write:
                clash = self._share_conflict(file, None, OPEN4_SHARE_ACCESS_WRITE, 0, now)
            else:
                clash = self._share_conflict(file, None, OPEN4_SHARE_ACCESS_READ, 0, now)
            if clash is not None:
                raise Nfs4Error(nfsstat4.NFS4ERR_LOCKED)
            return
        state = self._find(clientid, stateid, file, None)
        if isinstance(state, _LockState):
            state = self._states[state.open_index]
        if write and not state.access & OPEN4_SHARE_ACCESS_WRITE:
            raise Nfs4Error(nfsstat4.NFS4ERR_OPENMODE)

    # ---- byte-range locks ---------------------------------------------------

    def _lock_conflict(self, file, key, start, end, write, now):
        f = self._files.get(file)
        if f is None:
            return
        while True:
            clash = f.locks.conflict(key, start, end, write)
            if clash is None:
                return
            if not self._expired_holder(clash.owner[0], now):
                break
        raise Nfs4Error(nfsstat4.NFS4ERR_DENIED, denied=LockDenied(
            clash.start, range_length(clash.start, clash.end),
            WRITE_LT if clash.write else READ_LT, clash.owner[0], clash.owner[1]))

    def _owner_ranges(self, client, owner):
        return sum(len(self._files[self._states[i].file].locks.held_by((client.clientid, owner)))
                   for i in client.lock_owners.get(owner, ()))

    def _set_ranges(self, client, owner, file, ranges):
        locks = self._files[file].locks
        key = (client.clientid, owner)
        delta = len(ranges) - len(locks.held_by(key))
        if delta > 0:
            if self._owner_ranges(client, owner) + delta > MAX_LOCK_RANGES_PER_OWNER:
                raise Nfs4Error(nfsstat4.NFS4ERR_SERVERFAULT)
            if self._nranges + delta > MAX_LOCK_RANGES:
                raise Nfs4Error(nfsstat4.NFS4ERR_DELAY)
        locks.replace(key, ranges)
        self._nranges += delta

    def lock(self, clientid, file, locktype, offset, length, now, reclaim=False, *,
             open_stateid=None, lock_owner=None, lock_stateid=None):
        """LOCK (RFC 8881 18.10): either a new lock owner (open_stateid and
        lock_owner: locker4's open_to_lock_owner4) or an existing lock stateid.
        Blocking types are tried once like the others (no callbacks). A conflict
        raises NFS4ERR_DENIED with .denied."""
        client = self._client(clientid)
        write = is_write(locktype)
        start, end = lock_range(offset, length)
        if lock_stateid is not None:
            state = self._find(clientid, lock_stateid, file, _LockState)
            opened, owner = self._states[state.open_index], state.owner
        else:
            if open_stateid is None or lock_owner is None:
                raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
            opened = self._find(clientid, open_stateid, file, _OpenState)
            owner = bytes(lock_owner)
            if not 0 < len(owner) <= NFS4_OPAQUE_LIMIT:
                raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
            state = next((self._states[i] for i in client.lock_owners.get(owner, ())
                          if self._states[i].file == file), None)
        self._check_new_state(client, reclaim, now)
        need = OPEN4_SHARE_ACCESS_WRITE if write else OPEN4_SHARE_ACCESS_READ
        if not opened.access & need:
            raise Nfs4Error(nfsstat4.NFS4ERR_OPENMODE)
        key = (clientid, owner)
        self._lock_conflict(file, key, start, end, write, now)
        ranges = self._files[file].locks.after_set(key, start, end, write)
        if state is None:
            if owner not in client.lock_owners and len(client.lock_owners) >= MAX_OWNERS_PER_CLIENT:
                raise Nfs4Error(nfsstat4.NFS4ERR_SERVERFAULT)
            other, index = self._new_state(client, now)
            state = _LockState(index, other, clientid, owner, file, opened.index)
            self._states[index] = state
            client.lock_owners.setdefault(owner, set()).add(index)
            client.nstates += 1
            opened.locks.add(index)
            try:
                self._set_ranges(client, owner, file, ranges)
            except Nfs4Error:
                self._remove_lock(state)
                raise
        else:
            self._set_ranges(client, owner, file, ranges)
        state.seqid = next_seqid(state.seqid)
        return state.stateid()

    def locku(self, clientid, stateid, file, locktype, offset, length):
        """LOCKU: unlocking what is not locked is no error; the middle of a
        range splits it."""
        state = self._find(clientid, stateid, file, _LockState)
        is_write(locktype)
        start, end = lock_range(offset, length)
        client = self._clients[clientid]
        key = (clientid, state.owner)
        self._set_ranges(client, state.owner, file,
                         self._files[file].locks.after_set(key, start, end, None))
        state.seqid = next_seqid(state.seqid)
        return state.stateid()

    def lockt(self, clientid, owner, file, locktype, offset, length, now):
        """LOCKT: tests without creating state; the owner need not have any."""
        self._client(clientid)
        write = is_write(locktype)
        start, end = lock_range(offset, length)
        if len(owner) > NFS4_OPAQUE_LIMIT:
            raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
        if self.in_grace(now):
            raise Nfs4Error(nfsstat4.NFS4ERR_GRACE)
        self._lock_conflict(file, (clientid, bytes(owner)), start, end, write, now)

    def _remove_lock(self, state):
        client = self._clients[state.clientid]
        f = self._files[state.file]
        key = (state.clientid, state.owner)
        self._nranges -= len(f.locks.held_by(key))
        f.locks.drop_owner(key)
        self._states.pop(state.index, None)
        client.nstates -= 1
        owned = client.lock_owners.get(state.owner)
        owned.discard(state.index)
        if not owned:
            del client.lock_owners[state.owner]
        opened = self._states.get(state.open_index)
        if opened is not None:
            opened.locks.discard(state.index)
        self._forget_file_if_unused(state.file)
