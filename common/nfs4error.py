"""Nfs4Error: the status an NFSv4.1 operation fails with.

Raised by the state modules (nfspd/nfs4state and its parts, the sessions
shared with the iod's data server) and turned into the operation's nfsstat4
by the COMPOUND loop; one class so the loop catches one thing. A LOCK or LOCKT refused by a conflicting lock carries the conflict
(``denied``) for LOCK4denied.
"""

from common.nfs4 import nfsstat4


class Nfs4Error(Exception):
    def __init__(self, status, denied=None):
        super().__init__(nfsstat4(status).name)
        self.status = nfsstat4(status)
        self.denied = denied
