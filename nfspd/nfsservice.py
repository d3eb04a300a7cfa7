"""What the NFS procedures of both versions work on: the NFS Program's service.

The handlers (nfspd/nfs2proc.py, nfspd/nfs3proc.py) are module-level functions;
they find this in ``ctx.service``, as Linux's nfsd procedures find their
server's state through the request. ``resolve(ctx, fh)`` gives (MetaFS, Caller)
for a handle or raises FsError (BADHANDLE, STALE, ACCES, PERM): the contract
of nfspd/exports.py's ExportRegistry. ``datapath`` is the data path every
export's MetaFS was made with (nfspd/datapath.py): the handlers ask it
directly whether a READ or WRITE can be forwarded to an iod, for its write
verifier and its transfer sizes. ``clock`` gives the time in seconds (NFSv2's
SETATTR tells a `touch` by it). ``v4`` is what NFSv4.1 adds (nfspd/nfs4service.py:
the pseudo root, client and session state), None when v4 is not served.
"""

import time


class NfsService:
    __slots__ = ("clock", "datapath", "resolve", "v4")

    def __init__(self, resolver, datapath, clock=time.time, v4=None):
        self.resolve = resolver.resolve
        self.datapath = datapath
        self.clock = clock
        self.v4 = v4
