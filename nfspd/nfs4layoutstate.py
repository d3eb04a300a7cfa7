"""pNFS layout state (RFC 8881 section 12.5.3, 18.43-18.44): which layouts each
client holds, under which layout stateid; the part of Nfs4State (nfs4state)
that LAYOUTGET, LAYOUTRETURN and LAYOUTCOMMIT use. Pure: no I/O, no clocks.

One layout stateid per (client, file), as Linux nfsd keeps one per (open or
lock stateid, layout type) and we hand out one layout type. Its ``other`` is
minted like the open and lock stateids' (nfs4stateid), so TEST_STATEID and a
forged or stale value behave the same way. The rules of 12.5.3:

- The first LAYOUTGET of a file names an open or lock stateid of that file
  (or a layout stateid the client still has); a new layout stateid is made
  and its seqid starts at 1. Each LAYOUTGET and each LAYOUTRETURN that leaves
  layouts bumps the seqid.
- A layout stateid's seqid from the future is BAD_STATEID; an older one is
  accepted (LAYOUTGETs and LAYOUTRETURNs cross on the wire), as Linux nfsd's
  nfsd4_preprocess_layout_stateid does.
- Layouts are whole-file (common/fileslayout.py), so a client holds per file
  only a set of iomodes. LAYOUTRETURN of the whole range of an iomode (or
  LAYOUTIOMODE4_ANY) drops it; with none left the stateid goes and the reply
  carries none (lrs_present false). A partial return keeps the layout.
- A client dropped (lease expired, replaced, destroyed) loses its layouts; the
  address it got them from is queued in ``revoke_clients`` so the shell tells
  the data servers to refuse the handles minted for it (iod/dsrevoked.py).

Each layout remembers what the shell needs to revoke it at the data servers:
``data`` (opaque here: the file's (ino, seed, layout generation)) and the
client's address.

Bounds: MAX_LAYOUTS in all (DELAY, as the global tables of nfs4opens) and
MAX_LAYOUTS_PER_CLIENT (SERVERFAULT: only the same client could free them);
``revoke_clients`` holds at most MAX_PENDING_REVOCATIONS addresses (beyond,
the oldest is dropped and ``revoke_everything`` set instead: the data servers
then refuse every handle minted before, which covers the lost ones).
"""

import collections

from common.nfs4 import NFS4_UINT64_MAX, layoutiomode4, nfsstat4
from common.nfs4error import Nfs4Error
from nfspd.nfs4stateid import Stateid, next_seqid, special_kind

MAX_LAYOUTS = 65536
MAX_LAYOUTS_PER_CLIENT = 16384
MAX_PENDING_REVOCATIONS = 1024

READ = layoutiomode4.LAYOUTIOMODE4_READ
RW = layoutiomode4.LAYOUTIOMODE4_RW
ANY = layoutiomode4.LAYOUTIOMODE4_ANY


class _Layout:
    __slots__ = ("clientid", "data", "file", "fsid", "index", "iomodes", "ip", "other",
                 "seqid")

    def __init__(self, index, other, clientid, file, fsid, ip, data):
        self.index, self.other, self.clientid = index, other, clientid
        self.file, self.fsid, self.ip, self.data = file, fsid, ip, data
        self.iomodes = set()
        self.seqid = 0

    def stateid(self):
        return Stateid(self.seqid, self.other)


class LayoutState:
    def _init_layouts(self):
        self._layouts = {}                  # stateid index -> _Layout
        self._layout_of = {}                # (clientid, file) -> _Layout
        self._layouts_by_file = {}          # file -> {clientid, ...}
        self._nlayouts = collections.Counter()   # clientid -> layouts held
        self.revoke_clients = collections.OrderedDict()   # ip -> None, oldest first
        self.revoke_everything = False

    # ---- LAYOUTGET ----------------------------------------------------------

    def layout_stateid_for(self, clientid, stateid, file):
        """The _Layout a LAYOUTGET's loga_stateid leads to, None when it names
        an open or lock stateid of a file without layouts of this client
        (layoutget() then makes one)."""
        if special_kind(stateid) is not None:
            raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
        index = self._minter.index_of(stateid.other)
        layout = self._layouts.get(index)
        if layout is not None:
            if layout.clientid != clientid or layout.file != file:
                raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
            if stateid.seqid > layout.seqid:
                raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
            return layout
        # An open or lock stateid of this file (checked as any other, seqid included).
        self._find(clientid, stateid, file, None)
        return self._layout_of.get((clientid, file))

    def layoutget(self, clientid, stateid, file, iomode, now, *, fsid=None, ip=None,
                  data=None):
        """LAYOUTGET's state part, once the shell knows it can hand out a
        layout: the layout stateid to return. ``iomode`` READ or RW (the
        shell answers BADIOMODE for others)."""
        client = self._client(clientid)
        if self.in_grace(now):
            # No new state during grace (RFC 8881 18.43.3: GRACE, as for OPEN).
            raise Nfs4Error(nfsstat4.NFS4ERR_GRACE)
        layout = self.layout_stateid_for(clientid, stateid, file)
        if layout is None:
            if self._nlayouts[clientid] >= MAX_LAYOUTS_PER_CLIENT:
                raise Nfs4Error(nfsstat4.NFS4ERR_SERVERFAULT)
            if len(self._layouts) >= MAX_LAYOUTS:
                self.expire(now)
                if len(self._layouts) >= MAX_LAYOUTS:
                    raise Nfs4Error(nfsstat4.NFS4ERR_DELAY)
            other, index = self._new_state(client, now)
            layout = _Layout(index, other, clientid, file, fsid, ip, data)
            self._layouts[index] = layout
            self._layout_of[(clientid, file)] = layout
            self._layouts_by_file.setdefault(file, set()).add(clientid)
            self._nlayouts[clientid] += 1
        layout.ip, layout.data = ip, data
        layout.iomodes.add(int(iomode))
        layout.seqid = next_seqid(layout.seqid)
        return layout.stateid()

    # ---- LAYOUTRETURN -------------------------------------------------------

    def layoutreturn_file(self, clientid, stateid, file, iomode, offset, length):
        """LAYOUTRETURN4_FILE: the layout stateid after it, or None when the
        client holds no layout of the file any more."""
        self._client(clientid)
        if special_kind(stateid) is not None:
            raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
        layout = self._layouts.get(self._minter.index_of(stateid.other))
        if layout is None or layout.clientid != clientid or layout.file != file:
            # Already returned (a retransmission, or crossed with a CLOSE).
            raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
        if stateid.seqid > layout.seqid:
            raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
        whole = offset == 0 and (length == NFS4_UINT64_MAX or offset + length >= NFS4_UINT64_MAX)
        if whole:
            if iomode == ANY:
                layout.iomodes.clear()
            else:
                layout.iomodes.discard(int(iomode))
        if not layout.iomodes:
            self._drop_layout(layout)
            return None
        layout.seqid = next_seqid(layout.seqid)
        return layout.stateid()

    def layoutreturn_all(self, clientid, fsid=None):
        """LAYOUTRETURN4_ALL (``fsid`` None) or _FSID: every layout of the
        client (on that file system)."""
        self._client(clientid)
        for layout in [lo for lo in self._layouts.values() if lo.clientid == clientid
                       and (fsid is None or lo.fsid == fsid)]:
            self._drop_layout(layout)

    # ---- LAYOUTCOMMIT -------------------------------------------------------

    def layoutcommit(self, clientid, stateid, file):
        """LAYOUTCOMMIT's state part: the stateid must be the client's layout
        stateid of this file, holding a RW layout (else BADLAYOUT: nothing
        it may have written)."""
        self._client(clientid)
        if special_kind(stateid) is not None:
            raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
        layout = self._layouts.get(self._minter.index_of(stateid.other))
        if layout is None or layout.clientid != clientid or layout.file != file \
                or stateid.seqid > layout.seqid:
            raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
        if int(RW) not in layout.iomodes:
            raise Nfs4Error(nfsstat4.NFS4ERR_BADLAYOUT)

    # ---- who holds what -----------------------------------------------------

    def layouts_of_file(self, file):
        """[(clientid, ip, data, writable)] of the layouts held on ``file``."""
        out = []
        for cid in self._layouts_by_file.get(file, ()):
            layout = self._layout_of[(cid, file)]
            out.append((cid, layout.ip, layout.data, int(RW) in layout.iomodes))
        return out

    def forget_file_layouts(self, file):
        """The file is gone (its handles revoked at the data servers): its
        layouts with it."""
        for cid in list(self._layouts_by_file.get(file, ())):
            self._drop_layout(self._layout_of[(cid, file)])

    def layout_count(self):
        return len(self._layouts)

    def _drop_layout(self, layout):
        self._layouts.pop(layout.index, None)
        self._layout_of.pop((layout.clientid, layout.file), None)
        holders = self._layouts_by_file.get(layout.file)
        if holders is not None:
            holders.discard(layout.clientid)
            if not holders:
                del self._layouts_by_file[layout.file]
        self._nlayouts[layout.clientid] -= 1
        if self._nlayouts[layout.clientid] <= 0:
            del self._nlayouts[layout.clientid]

    def _drop_client_layouts(self, clientid):
        """A client goes: its layouts with it, and its address queued for
        revocation at the data servers if it held any."""
        mine = [lo for lo in self._layouts.values() if lo.clientid == clientid]
        for layout in mine:
            self._drop_layout(layout)
        for ip in {lo.ip for lo in mine if lo.ip is not None}:
            self.revoke_clients.pop(ip, None)
            self.revoke_clients[ip] = None
            while len(self.revoke_clients) > MAX_PENDING_REVOCATIONS:
                self.revoke_clients.popitem(last=False)
                self.revoke_everything = True

    def take_revocations(self):
        """(client addresses, everything) to revoke at the data servers since
        the last call."""
        ips, everything = list(self.revoke_clients), self.revoke_everything
        self.revoke_clients.clear()
        self.revoke_everything = False
        return ips, everything
