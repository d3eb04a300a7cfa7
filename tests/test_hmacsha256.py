"""HMAC-SHA256 from prepared states, or in one call of OpenSSL, gives what hmac gives."""

import hmac
import platform

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import hmacsha256

# Both ways, whichever of them Prepared is on this interpreter.
WAYS = [hmacsha256.FromStates, hmacsha256.OneShot]


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("key_length", [0, 1, 32, 63, 64, 65, 200])
def test_keys_shorter_than_a_block_a_block_long_and_longer(key_length, way):
    # Longer than SHA-256's 64-byte block, a key is hashed first (RFC 2104).
    key = bytes(i % 251 for i in range(key_length))
    prepared = way(key)
    for message in (b"", b"x", bytes(range(256)) * 3):
        assert prepared.digest(message) == hmac.digest(key, message, "sha256")


@given(st.binary(max_size=200), st.lists(st.binary(max_size=300), max_size=3))
def test_prepared_states_give_the_standard_hmac(key, messages):
    for way in WAYS:
        prepared = way(key)
        for message in messages:
            assert prepared.digest(message) == hmac.digest(key, message, "sha256")


def test_cpython_prepares_states_and_pypy_calls_openssl_once():
    want = hmacsha256.OneShot if platform.python_implementation() == "PyPy" else \
        hmacsha256.FromStates
    assert hmacsha256.Prepared is want
