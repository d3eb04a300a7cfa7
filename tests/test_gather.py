"""common/runtime/gather.unsent: what a partial sendmsg leaves to send."""

from common.runtime.gather import unsent


def test_after_a_partial_send_what_remains_is_the_rest_of_the_bytes():
    bufs = [b"abc", memoryview(b"defgh"), b"", bytearray(b"ij"), b"klmnop"]
    whole = b"".join(bufs)
    for sent in range(len(whole) + 1):
        rest = unsent(list(bufs), sent)
        assert b"".join(bytes(b) for b in rest) == whole[sent:]
        assert not rest or len(rest[0])   # no empty buffer ahead of the rest
