"""Data-server file handles (common/dsfh.py) and the iod's revocations
(iod/dsrevoked.py): a handle is the metaserver's capability for one file and
one client, and nothing without the key makes or bends one."""

import ipaddress
import threading

import pytest

from common import dsfh
from common.iodproto import Keys
from common.nfs4 import nfsstat4
from iod.dsrevoked import Revoked, Stale
from tools.dev.netns import wait_until

KEYS = Keys((3, b"k" * 32))
OTHER_KEYS = Keys((3, b"x" * 32))


def mint(keys=KEYS, **kw):
    args = dict(ino=42, seed=0x1234_5678_9ABC_DEF0, layout_gen=2, minted=1_700_000_000_000,
                client="192.0.2.7", write=True, secure=False)
    args.update(kw)
    return dsfh.mint(keys, **args)


def test_a_handle_round_trips_and_is_64_bytes():
    fh = mint()
    assert len(fh) == dsfh.SIZE == 64
    h = dsfh.verify(KEYS, fh)
    assert (h.ino, h.seed, h.layout_gen, h.minted) == (42, 0x1234_5678_9ABC_DEF0, 2,
                                                       1_700_000_000_000)
    assert h.may_write and not h.secure
    assert h.client == ipaddress.IPv6Address("::ffff:192.0.2.7")
    assert h.client_matches("192.0.2.7") and not h.client_matches("192.0.2.8")
    assert not h.client_matches("not an address")


def test_the_byte_layout_is_the_documented_one():
    fh = mint(ino=1, seed=2, layout_gen=3, minted=4, client="10.0.0.1", write=False, secure=True)
    assert fh[:4] == bytes([dsfh.VERSION, 3, dsfh.RIGHT_SECURE, 0])
    assert fh[4:8] == (3).to_bytes(4, "big")
    assert fh[8:32] == b"".join(n.to_bytes(8, "big") for n in (1, 2, 4))
    assert fh[32:48] == ipaddress.IPv6Address("::ffff:10.0.0.1").packed
    h = dsfh.verify(KEYS, fh)
    assert h.secure and not h.may_write


def test_ipv6_clients_are_kept_as_they_are():
    h = dsfh.verify(KEYS, mint(client="2001:db8::5"))
    assert h.client_matches("2001:db8::5") and not h.client_matches("2001:db8::6")


@pytest.mark.parametrize("offset", range(dsfh.SIZE))
def test_changing_any_byte_makes_it_a_bad_handle(offset):
    fh = bytearray(mint())
    fh[offset] ^= 0x01
    with pytest.raises(dsfh.DsHandleError) as e:
        dsfh.verify(KEYS, bytes(fh))
    assert e.value.status == nfsstat4.NFS4ERR_BADHANDLE


def test_another_file_or_client_or_more_rights_cannot_be_made_from_a_handle():
    fh = mint(write=False)
    h = dsfh.verify(KEYS, fh)
    # the fields rewritten, the MAC kept: every variation is refused
    for changed in (mint(KEYS, ino=43, write=False), mint(KEYS, client="192.0.2.8", write=False),
                    mint(KEYS, write=True)):
        forged = changed[:48] + fh[48:]
        with pytest.raises(dsfh.DsHandleError):
            dsfh.verify(KEYS, forged)
    assert not h.may_write


@pytest.mark.parametrize("fh", [b"", b"\0" * 64, b"\1" * 63, b"\1" * 65, b"\xff" * 128])
def test_what_is_not_a_handle_is_refused(fh):
    with pytest.raises(dsfh.DsHandleError) as e:
        dsfh.verify(KEYS, fh)
    assert e.value.status == nfsstat4.NFS4ERR_BADHANDLE


def test_a_handle_made_with_another_key_is_refused():
    with pytest.raises(dsfh.DsHandleError):
        dsfh.verify(KEYS, mint(OTHER_KEYS))


def test_key_rotation_a_handle_verifies_while_its_key_is_listed():
    old = Keys((3, b"k" * 32))
    fh = mint(old)
    rotated = Keys((4, b"n" * 32), [(3, b"k" * 32)])
    assert dsfh.verify(rotated, fh).ino == 42
    assert dsfh.verify(rotated, mint(rotated)).ino == 42
    with pytest.raises(dsfh.DsHandleError):
        dsfh.verify(Keys((4, b"n" * 32)), fh)


@pytest.mark.parametrize("field,value", [("ino", -1), ("seed", 1 << 64), ("layout_gen", 1 << 32),
                                         ("minted", -5)])
def test_mint_refuses_values_out_of_range(field, value):
    with pytest.raises(ValueError):
        mint(**{field: value})


# -- revocations ----------------------------------------------------------------

def handle(ino=1, seed=1, minted=1000):
    return dsfh.verify(KEYS, mint(ino=ino, seed=seed, minted=minted))


def test_handles_minted_before_the_iod_started_are_stale():
    r = Revoked(floor=1000)
    assert r.stale(handle(minted=999))
    assert not r.stale(handle(minted=1000))


def test_a_purged_file_is_stale_whatever_its_handle_says():
    r = Revoked(floor=0)
    r.revoke_file(1, 1, at=5000)
    assert r.stale(handle(1, 1, minted=100)) and r.stale(handle(1, 1, minted=9000))
    assert not r.stale(handle(1, 2)) and not r.stale(handle(2, 1))


def test_past_its_limit_the_oldest_revocation_becomes_the_floor():
    r = Revoked(floor=0, limit=2)
    r.revoke_file(1, 1, at=100)
    r.revoke_file(2, 2, at=200)
    r.revoke_file(3, 3, at=300)
    assert len(r) == 2 and r.floor == 100
    # file 1's handles, all minted before its removal, stay refused
    assert r.stale(handle(1, 1, minted=99))
    assert not r.stale(handle(4, 4, minted=100))
    assert r.stale(handle(2, 2, minted=150)) and r.stale(handle(3, 3, minted=150))


def test_a_revoked_client_loses_the_handles_minted_before():
    r = Revoked(floor=0)
    r.revoke_client("192.0.2.7", at=5000)
    assert r.stale(handle(minted=4999)) and not r.stale(handle(minted=5000))
    other = dsfh.verify(KEYS, mint(client="192.0.2.8", minted=100))
    assert not r.stale(other)
    with pytest.raises(ValueError):
        r.revoke_client("nope", at=1)


def test_revoking_everything_raises_the_floor_and_never_lowers_it():
    r = Revoked(floor=1000)
    r.revoke_all(3000)
    r.revoke_all(2000)
    assert r.floor == 3000 and r.stale(handle(minted=2999)) and not r.stale(handle(minted=3000))


def test_a_revocation_returns_only_once_the_writes_admitted_before_it_have_landed():
    """What lets the metaserver truncate right after an iod acknowledged its
    REVOKE: no write through a revoked handle lands after that."""
    r = Revoked(floor=0)
    h = handle(1, 1, minted=100)
    landing, landed, revoked = threading.Event(), threading.Event(), threading.Event()

    def write():
        with r.writing(h):
            landing.set()
            landed.wait(60)

    def revoke():
        r.revoke(5000, files=[(1, 1)])
        revoked.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert landing.wait(60)
    revoker = threading.Thread(target=revoke)
    revoker.start()
    # The revocation is in (a new write is refused) but has not returned.
    wait_until(lambda: r.stale(h), 60, what="the revocation recorded")
    with pytest.raises(Stale), r.writing(h):
        pass
    assert not revoked.is_set()
    landed.set()
    assert revoked.wait(60)
    writer.join(60)
    revoker.join(60)

