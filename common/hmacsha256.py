"""HMAC-SHA256 (RFC 2104) from inner and outer hash states prepared once per
key. hmac.new and hmac.digest set the key up again at every call: with
OpenSSL 3, hmac.digest of a 17-byte body took 1.44 us here, against 0.59 from
prepared states (the bytes are the same; tests/test_hmacsha256.py)."""

import hashlib

BLOCK = 64  # SHA-256's block size


def states(key):
    """The inner and outer SHA-256 states of ``key``, to be copied, never
    updated themselves."""
    if len(key) > BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(BLOCK, b"\0")
    return (hashlib.sha256(bytes(b ^ 0x36 for b in key)),
            hashlib.sha256(bytes(b ^ 0x5C for b in key)))


class Prepared:
    """hmac.digest(key, data, "sha256"), for one key used many times."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key):
        self._inner, self._outer = states(key)

    def digest(self, data):
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()
