"""The operation table's precomputed replies (nfspd/nfs4proc.py OPERATIONS):
an operation whose success carries nothing answers with the bytes the
generic codec makes of it."""

import pytest

from common import nfs4
from common.nfs4 import nfs_opnum4, nfsstat4
from nfspd.nfs4proc import OPERATIONS

BARE = sorted(num for num, op in OPERATIONS.items() if op.ok_bytes is not None)


@pytest.mark.parametrize("num", BARE, ids=lambda n: n.name)
def test_a_bare_success_is_the_codecs_encoding(num):
    res_type = nfs4.OPERATIONS[num][1]
    assert OPERATIONS[num].ok_bytes == nfs4.encode_resop(
        nfs4.nfs_resop4(num, res_type(nfsstat4.NFS4_OK)))


def test_those_that_answer_more_than_a_status_have_no_bare_success():
    assert OPERATIONS[nfs_opnum4.OP_PUTFH].ok_bytes is not None
    assert OPERATIONS[nfs_opnum4.OP_SAVEFH].ok_bytes is not None
    for num in (nfs_opnum4.OP_GETATTR, nfs_opnum4.OP_GETFH, nfs_opnum4.OP_OPEN,
                nfs_opnum4.OP_SEQUENCE, nfs_opnum4.OP_SETATTR, nfs_opnum4.OP_ACCESS):
        assert OPERATIONS[num].ok_bytes is None, num.name
