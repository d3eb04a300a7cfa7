"""HMAC-SHA256 from prepared states gives what hmac gives."""

import hmac

from hypothesis import given
from hypothesis import strategies as st

from common import hmacsha256


@given(st.binary(max_size=200), st.lists(st.binary(max_size=300), max_size=3))
def test_prepared_states_give_the_standard_hmac(key, messages):
    # Keys shorter than a block, a block long and longer (hashed first).
    prepared = hmacsha256.Prepared(key)
    for message in messages:
        assert prepared.digest(message) == hmac.digest(key, message, "sha256")
