"""HMAC-SHA256 from prepared states gives what hmac gives."""

import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import hmacsha256


@pytest.mark.parametrize("key_length", [0, 1, 32, 63, 64, 65, 200])
def test_keys_shorter_than_a_block_a_block_long_and_longer(key_length):
    # Longer than SHA-256's 64-byte block, a key is hashed first (RFC 2104).
    key = bytes(i % 251 for i in range(key_length))
    prepared = hmacsha256.Prepared(key)
    for message in (b"", b"x", bytes(range(256)) * 3):
        assert prepared.digest(message) == hmac.digest(key, message, "sha256")


@given(st.binary(max_size=200), st.lists(st.binary(max_size=300), max_size=3))
def test_prepared_states_give_the_standard_hmac(key, messages):
    prepared = hmacsha256.Prepared(key)
    for message in messages:
        assert prepared.digest(message) == hmac.digest(key, message, "sha256")
