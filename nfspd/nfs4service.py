"""What the NFSv4.1 operations work on besides the exports: the pseudo root,
the server's identity, and the client/session/open/lock state (h2's pure
nfspd/nfs4state.py, driven here with the time and the connection of each
call). The NFS service's ``v4`` (nfspd/nfsservice.py); one per daemon.

The operations in nfspd/nfs4proc.py call the ``state_*`` methods: the shapes
of the wire (XDR arguments and results) are converted here, so the state
machine sees only plain values and nfs4proc only its own types.
"""

import functools
import logging
import os
import secrets
import time

from common import nfs4
from common.nfs4 import nfsstat4
from common.nfs4error import Nfs4Error
from common.nfs4sessions import ChannelAttrs
from common.nfs4sessions import Replay as SlotReplay
from nfspd.dispatch import Encoded
from nfspd.fs.types import FsError
from nfspd.nfs4attrs import AttrConfig
from nfspd.nfs4compound import Replay
from nfspd.nfs4pseudo import PSEUDO_FSID, PseudoFS
from nfspd.nfs4recovery import RecoveryStore
from nfspd.nfs4state import Nfs4State
from nfspd.nfs4stateid import Stateid

log = logging.getLogger(__name__)

SERVER_ID_FILE = "nfs4-server-id"


def server_identity(state_dir):
    """The server owner's major id and scope: the same across restarts (a
    client that sees them change must assume another server and lose its
    state), kept in the state directory; created once."""
    path = os.path.join(state_dir, SERVER_ID_FILE)
    try:
        with open(path, "rb") as f:
            ident = f.read()
        if len(ident) == 16:
            return ident
    except FileNotFoundError:
        pass
    ident = secrets.token_bytes(16)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(ident)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return ident


def connection_of(ctx):
    """A TCP connection's identity while it is open: its two endpoints."""
    return (ctx.transport, ctx.client, ctx.local)


def principal_of(ctx):
    """Who is calling, as the state compares it (an owner string taken by
    another principal is CLID_INUSE): the AUTH_SYS uid, as Linux nfsd compares
    AUTH_SYS credentials."""
    cred = ctx.cred
    return "none" if cred is None else f"sys:{cred.uid}"


def _channel(attrs):
    return ChannelAttrs(attrs.ca_headerpadsize, attrs.ca_maxrequestsize, attrs.ca_maxresponsesize,
                        attrs.ca_maxresponsesize_cached, attrs.ca_maxoperations,
                        attrs.ca_maxrequests, attrs.ca_rdma_ird[0] if attrs.ca_rdma_ird else None)


def _channel4(ch):
    return nfs4.channel_attrs4(ch.headerpadsize, ch.maxrequestsize, ch.maxresponsesize,
                               ch.maxresponsesize_cached, ch.maxoperations, ch.maxrequests,
                               [] if ch.rdma_ird is None else [ch.rdma_ird])


def _sid(s):
    return Stateid(s.seqid, bytes(s.other))


def _sid4(s):
    return nfs4.stateid4(s.seqid, s.other)


class Nfs4Service:
    def __init__(self, registry, state_dir, lease_time=90, grace_time=None, max_io=1 << 20,
                 domain=None, clock=time.monotonic, wall_clock=time.time, pnfs=None):
        self.registry = registry
        self.pseudo = PseudoFS(registry)
        self.pseudo_fsid = PSEUDO_FSID
        # nfspd/pnfs.py's Pnfs when layouts are handed out (--pnfs), else None.
        self.pnfs = pnfs
        self.attrs = AttrConfig(
            lease_time=lease_time, max_io=max_io, domain=domain,
            layout_types=list(pnfs.layout_types) if pnfs is not None else [],
            layout_blksize=pnfs.blksize if pnfs is not None else max_io)
        self.attrs_without_layouts = self.attrs.without_layouts()
        self.server_id = server_identity(state_dir)
        self.clock = clock
        self.recovery = RecoveryStore(state_dir)
        # Files with opens, for PRESERVE_UNLINKED: fh -> (MetaFS, {(clientid,
        # stateid other)}); and those of them held past a REMOVE (fh -> MetaFS).
        self.opens = {}
        self.held = {}
        self.state = Nfs4State(now=clock(), boot_epoch=int(wall_clock()),
                               previous_record=self.recovery.load(), lease_time=lease_time,
                               grace_time=grace_time, pnfs=pnfs is not None)
        self._save_record()

    def _save_record(self):
        try:
            self.recovery.save(self.state)
        except OSError as e:
            log.error("cannot store the NFSv4 client record: %s", e)

    def expire(self):
        """The lease timer's tick (nfspd/server.py): (client addresses whose
        layouts must be revoked at the data servers, whether all must be)."""
        for gone in self.state.expire(self.clock()):
            log.info("NFSv4 client %#x (%s) expired: its opens, locks and layouts are "
                     "released", gone.clientid, gone.principal)
        self._forget_closed()
        self._save_record()
        return self.state.take_revocations()

    # -- removed while open (OPEN4_RESULT_PRESERVE_UNLINKED) ---------------------------
    # An OPEN promises the client that a REMOVE (or RENAME over the file) will
    # not take the file away from its opens: the client then removes it for
    # real instead of renaming it to .nfsXXXX. Before the name goes, a file
    # with opens is held (MetaFS.hold: usable by handle, data kept); the last
    # CLOSE, or the state going with its client, releases it.

    def clients(self):
        """Each NFSv4.1 client id, for `nfsp status`."""
        return self.state.clients_view(self.clock())

    def opened(self, c, fh, fs, sid):
        clients = self.opens.setdefault(bytes(fh), (fs, set()))[1]
        clients.add((self._clientid(c), bytes(sid.other)))

    def closed(self, c, fh, sid):
        entry = self.opens.get(bytes(fh))
        if entry is not None:
            entry[1].discard((self._clientid(c), bytes(sid.other)))
            if not entry[1]:
                self._release(bytes(fh))

    def before_unlink(self, fs, fh):
        """A REMOVE or RENAME is about to take a name of ``fh``: hold it while
        opens remain."""
        fh = bytes(fh)
        if fh in self.held or not self._still_open(fh):
            return
        if fs.hold(fh):
            self.held[fh] = fs

    def _still_open(self, fh):
        entry = self.opens.get(fh)
        if entry is None:
            return False
        live = {(cid, other) for cid, other in entry[1]
                if self.state.test_stateid(cid, [Stateid(0, other)])[0] == nfsstat4.NFS4_OK}
        entry[1].intersection_update(live)
        return bool(live)

    def _release(self, fh):
        self.opens.pop(fh, None)
        fs = self.held.pop(fh, None)
        if fs is not None:
            fs.release(fh)

    def _forget_closed(self):
        """Opens that went without a CLOSE (their client expired or was replaced)."""
        for fh in [fh for fh in self.opens if not self._still_open(fh)]:
            self._release(fh)

    # -- client ids and sessions --------------------------------------------------

    def state_exchange_id(self, c, args):
        if args.eia_state_protect.disc != nfs4.state_protect_how4.SP4_NONE:
            # AUTH_SYS clients ask for none (Linux asks SP4_MACH_CRED only with krb5).
            raise Nfs4Error(nfsstat4.NFS4ERR_NOTSUPP)
        owner = args.eia_clientowner
        r = self.state.exchange_id(owner.co_ownerid, owner.co_verifier, principal_of(c.ctx),
                                   args.eia_flags, self.clock())
        return nfs4.EXCHANGE_ID4resok(
            r.clientid, r.sequenceid, r.flags,
            nfs4.state_protect4_r(nfs4.state_protect_how4.SP4_NONE),
            nfs4.server_owner4(0, self.server_id), self.server_id, [])

    def state_create_session(self, c, args):
        r = self.state.create_session(
            args.csa_clientid, args.csa_sequence, args.csa_flags,
            _channel(args.csa_fore_chan_attrs), _channel(args.csa_back_chan_attrs),
            principal_of(c.ctx), self.clock(), connection=connection_of(c.ctx),
            cb_program=args.csa_cb_program)
        self._save_record()
        return nfs4.CREATE_SESSION4resok(r.sessionid, r.sequenceid, r.flags, _channel4(r.fore),
                                         _channel4(r.back))

    def state_destroy_session(self, c, args):
        self.state.destroy_session(args.dsa_sessionid)

    def state_destroy_clientid(self, c, args):
        self.state.destroy_clientid(args.dca_clientid)
        self._save_record()

    def state_bind_conn(self, c, args):
        direction = self.state.bind_conn_to_session(
            args.bctsa_sessid, connection_of(c.ctx), int(args.bctsa_dir), self.clock())
        return nfs4.BIND_CONN_TO_SESSION4resok(args.bctsa_sessid,
                                               nfs4.channel_dir_from_server4(direction), False)

    def state_sequence(self, c, args):
        outcome = self.state.sequence(args.sa_sessionid, args.sa_sequenceid, args.sa_slotid,
                                      args.sa_highest_slotid, args.sa_cachethis, self.clock(),
                                      connection=connection_of(c.ctx))
        if isinstance(outcome, SlotReplay):
            raise Replay(outcome.reply)
        c.slot = outcome
        c.cachethis = bool(args.sa_cachethis)
        fore = outcome.session.fore
        c.max_response = fore.maxresponsesize
        c.max_cached = outcome.cachethis_limit
        c.max_ops = fore.maxoperations
        # Fixed-size, packed in one call rather than through the generic codec.
        return Encoded(nfs4.sequence4resok_bytes(
            outcome.sessionid, outcome.sequenceid, outcome.slotid, outcome.highest_slotid,
            outcome.target_highest_slotid, outcome.status_flags))

    def sequence_done(self, c, reply):
        """The COMPOUND's reply is ready: cache it in the slot when the client
        asked (sa_cachethis) or the request was SEQUENCE alone, and it fits."""
        slot = c.slot
        cache = reply is not None and (c.cachethis or len(c.results) == 1) and \
            len(reply) <= slot.cachethis_limit
        slot.complete(reply if cache else None)
        c.slot = None

    def state_reclaim_complete(self, c, args):
        self.state.reclaim_complete(self._clientid(c), args.rca_one_fs, self.clock())
        self._save_record()

    def _clientid(self, c):
        return c.slot.clientid

    # -- opens, locks, stateids -----------------------------------------------------

    def check_grace(self, c):
        """GRACE for what would change the namespace under state that clients
        are still reclaiming after a restart (a new OPEN, REMOVE, RENAME), as
        Linux nfsd answers; checked before the file system is touched."""
        if self.state.in_grace(self.clock()):
            raise Nfs4Error(nfsstat4.NFS4ERR_GRACE)

    def check_reclaim(self, c):
        """NO_GRACE unless a reclaim is still possible (a LAYOUTCOMMIT with
        loca_reclaim)."""
        if not self.state.in_grace(self.clock()):
            raise Nfs4Error(nfsstat4.NFS4ERR_NO_GRACE)

    def state_open(self, c, fh, args, reclaim=False):
        owner = args.owner
        if owner.clientid != self._clientid(c):
            raise Nfs4Error(nfsstat4.NFS4ERR_STALE_CLIENTID)
        r = self.state.open(self._clientid(c), owner.owner, bytes(fh), args.share_access,
                            args.share_deny, self.clock(), reclaim=reclaim)
        return _sid4(r.stateid)

    def state_open_downgrade(self, c, fh, sid, args):
        return _sid4(self.state.open_downgrade(self._clientid(c), _sid(sid), bytes(fh),
                                               args.share_access, args.share_deny))

    def state_close(self, c, sid, fh):
        done = _sid4(self.state.close(self._clientid(c), _sid(sid), bytes(fh)))
        self.closed(c, fh, sid)
        return done

    def check_stateid(self, c, sid, fh, write):
        self.state.check_io(self._clientid(c), _sid(sid), bytes(fh), write, self.clock())

    def state_lock(self, c, fh, args):
        locker = args.locker
        kw = {}
        if locker.disc:
            o = locker.body
            if o.lock_owner.clientid != self._clientid(c):
                raise Nfs4Error(nfsstat4.NFS4ERR_STALE_CLIENTID)
            kw = {"open_stateid": _sid(c.resolve_stateid(o.open_stateid)),
                  "lock_owner": o.lock_owner.owner}
        else:
            kw = {"lock_stateid": _sid(c.resolve_stateid(locker.body.lock_stateid))}
        try:
            sid = self.state.lock(self._clientid(c), bytes(fh), int(args.locktype), args.offset,
                                  args.length, self.clock(), reclaim=bool(args.reclaim), **kw)
        except Nfs4Error as e:
            raise _denied(e) from None
        return _sid4(sid)

    def state_lockt(self, c, fh, args):
        try:
            self.state.lockt(self._clientid(c), args.owner.owner, bytes(fh), int(args.locktype),
                             args.offset, args.length, self.clock())
        except Nfs4Error as e:
            raise _denied(e) from None

    def state_locku(self, c, fh, args, sid):
        return _sid4(self.state.locku(self._clientid(c), _sid(sid), bytes(fh),
                                      int(args.locktype), args.offset, args.length))

    def state_test_stateids(self, c, sids):
        return self.state.test_stateid(self._clientid(c), [_sid(s) for s in sids])

    def state_free_stateid(self, c, sid):
        self.state.free_stateid(self._clientid(c), _sid(sid))

    # -- layouts (pNFS) ---------------------------------------------------------------

    def state_layoutget(self, c, sid, fh, iomode, fs, data):
        if self.state.in_grace(self.clock()):
            # Not GRACE: Linux would hold the I/O back until grace ends;
            # through the metaserver it goes on at once.
            raise Nfs4Error(nfsstat4.NFS4ERR_LAYOUTUNAVAILABLE)
        return _sid4(self.state.layoutget(self._clientid(c), _sid(sid), bytes(fh), iomode,
                                          self.clock(), fsid=fs.fsid, ip=c.ctx.client[0],
                                          data=data))

    def state_layoutreturn_file(self, c, sid, fh, iomode, offset, length):
        sid = self.state.layoutreturn_file(self._clientid(c), _sid(sid), bytes(fh), iomode,
                                           offset, length)
        return None if sid is None else _sid4(sid)

    def state_layoutreturn_all(self, c, fs=None):
        self.state.layoutreturn_all(self._clientid(c), None if fs is None else fs.fsid)

    def state_layoutcommit(self, c, sid, fh):
        self.state.layoutcommit(self._clientid(c), _sid(sid), bytes(fh))

    def layout_holder(self, fs, dfh, name, caller):
        """Before any protocol's REMOVE or RENAME takes ``name``: the handle
        it names when clients hold pNFS layouts on it (for unlinked), else
        None, cheaply when nobody holds a layout."""
        if self.pnfs is None or not self.state.layout_count():
            return None
        try:
            fh, _, _ = fs.lookup(dfh, name, caller)
        except FsError:
            return None     # the REMOVE or RENAME itself says what is wrong
        return fh if self.state.layouts_of_file(bytes(fh)) else None

    def unlinked(self, fs, fh):
        """After a REMOVE or RENAME: when that was ``fh``'s last name (and no
        open holds it), what must happen before the reply, as a coroutine
        function (None: nothing): its layouts revoked at the iods, so a
        client writing through one gets NFS4ERR_STALE from the data server
        from then on, never a datafile brought back after the purge."""
        held = self.state.layouts_of_file(bytes(fh))
        if not held:
            return None
        try:
            fs.getattr(fh)
            return None     # another link, or held for its opens: still in use
        except FsError:
            pass
        files = {data for _, _, data, _ in held}
        self.state.forget_file_layouts(bytes(fh))
        return functools.partial(self._revoke_removed, files)

    async def _revoke_removed(self, files):
        try:
            await self.pnfs.revoke_files(files)
        except OSError as e:
            # The PURGE of its data revokes it too, once that iod is back.
            log.warning("pNFS: revoking the layouts of a removed file: %s", e)

    def truncation_fence(self, fh):
        """What must happen before a file cut by any protocol's SETATTR is
        answered, as a coroutine function (None: nothing): the handles of
        the clients holding RW layouts on it revoked at the iods. The fence
        of nfspd/fs/inflight.py's rule for writes through layouts, without a
        back channel to recall them: a DS WRITE sent before the truncation
        either landed before the fence, and is cut with the rest when the
        truncation is carried out, or is refused with NFS4ERR_STALE; Linux
        then drops the layout, sends that WRITE through the metaserver (after
        the truncation) and asks for a new layout, whose LAYOUTGET carries
        the truncation out first (MetaFS.settled). Never bytes past the new
        end that no LAYOUTCOMMIT accounts for."""
        if self.pnfs is None:
            return None
        writers = sorted({ip for _, ip, _, writable in self.state.layouts_of_file(bytes(fh))
                          if writable and ip is not None})
        if not writers:
            return None
        return functools.partial(self.pnfs.fence, writers)

    def secure_port_required(self, c, fh):
        return self.registry.secure_port_required(c.ctx, fh)

    def pnfs_allowed(self, c, fh):
        return self.registry.pnfs_allowed(c.ctx, fh)

    def attrs_for(self, c, fh):
        """The AttrConfig this client sees for objects of fh's export."""
        if self.attrs.layout_types and not self.pnfs_allowed(c, fh):
            return self.attrs_without_layouts
        return self.attrs

    def state_delegreturn(self, c, sid):
        self.state.delegreturn(self._clientid(c), _sid(sid))


def _denied(e):
    """LOCK4denied from the state's LockDenied."""
    d = e.denied
    if d is None:
        return e
    return Nfs4Error(e.status, denied=nfs4.LOCK4denied(
        d.offset, d.length, nfs4.nfs_lock_type4(d.locktype), nfs4.lock_owner4(d.clientid, d.owner)))
