"""READ/WRITE/ACCESS permission decisions, as a kernel NFS server makes them."""

import stat

import pytest

from nfspd.fs.access import (ACCESS3_ALL, ACCESS3_DELETE, ACCESS3_EXECUTE, ACCESS3_EXTEND,
                          ACCESS3_LOOKUP, ACCESS3_MODIFY, ACCESS3_READ, R, W, X, access3,
                          may_read, may_write, permitted)
from nfspd.fs.types import Caller

REG, DIR = stat.S_IFREG, stat.S_IFDIR
OWNER, GROUP, OTHER = 1000, 100, 2000
alice = Caller(OWNER, 1, ())
bob_in_group = Caller(1001, 1, (100,))
bob_primary = Caller(1001, 100)
eve = Caller(OTHER, 2)
root = Caller(0, 0)


@pytest.mark.parametrize("caller, mode, want, ok", [
    (alice, 0o400, R, True), (alice, 0o040, R, False),  # the owner class decides for the owner
    (bob_in_group, 0o040, R, True), (bob_primary, 0o040, R, True),
    (bob_in_group, 0o404, R, False),  # the group class decides, even if "other" would allow
    (eve, 0o004, R, True), (eve, 0o770, R, False),
    (alice, 0o600, R | W, True), (alice, 0o400, R | W, False),
    (root, 0o000, R | W, True),
    (root, REG | 0o000, X, False), (root, REG | 0o001, X, True),
    (root, DIR | 0o000, X, True),
])
def test_permitted(caller, mode, want, ok):
    assert permitted(mode, OWNER, GROUP, caller, want) is ok


def test_owner_may_read_and_write_whatever_the_mode():
    assert may_read(REG | 0o000, OWNER, GROUP, alice)
    assert may_write(REG | 0o444, OWNER, GROUP, alice)
    assert not may_read(REG | 0o000, OWNER, GROUP, eve)
    assert not may_write(REG | 0o444, OWNER, GROUP, eve)


def test_read_is_allowed_by_execute():
    assert may_read(REG | 0o711, OWNER, GROUP, eve)
    assert not may_read(REG | 0o700, OWNER, GROUP, eve)


def test_readonly_client_never_writes():
    ro = Caller(OWNER, 1, (), readonly=True)
    assert not may_write(REG | 0o666, OWNER, GROUP, ro)
    assert may_read(REG | 0o666, OWNER, GROUP, ro)
    granted = access3(DIR | 0o777, OWNER, GROUP, ro, ACCESS3_ALL)
    assert granted == ACCESS3_READ | ACCESS3_LOOKUP


def test_access3_on_a_directory():
    assert access3(DIR | 0o755, OWNER, GROUP, alice, ACCESS3_ALL) == (
        ACCESS3_READ | ACCESS3_LOOKUP | ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_DELETE)
    assert access3(DIR | 0o755, OWNER, GROUP, eve, ACCESS3_ALL) == ACCESS3_READ | ACCESS3_LOOKUP
    # Write without search permits no change to the entries.
    assert access3(DIR | 0o602, OWNER, GROUP, eve, ACCESS3_ALL) == 0


def test_access3_on_a_file():
    assert access3(REG | 0o644, OWNER, GROUP, alice, ACCESS3_ALL) == (
        ACCESS3_READ | ACCESS3_MODIFY | ACCESS3_EXTEND)
    assert access3(REG | 0o755, OWNER, GROUP, eve, ACCESS3_ALL) == ACCESS3_READ | ACCESS3_EXECUTE
    # DELETE means nothing for a file, and no owner override in ACCESS.
    assert access3(REG | 0o000, OWNER, GROUP, alice, ACCESS3_ALL) == 0


def test_access3_answers_only_what_was_asked():
    assert access3(REG | 0o777, OWNER, GROUP, alice, ACCESS3_READ) == ACCESS3_READ
    assert access3(REG | 0o777, OWNER, GROUP, alice, 0) == 0


def test_root_executes_only_with_an_x_bit():
    assert access3(REG | 0o644, OWNER, GROUP, root, ACCESS3_EXECUTE | ACCESS3_READ) == ACCESS3_READ
    assert access3(REG | 0o100, OWNER, GROUP, root, ACCESS3_EXECUTE) == ACCESS3_EXECUTE
