"""XDR (RFC 4506) primitives and declarative types."""

import enum

import pytest
from hypothesis import given, strategies as st

from common import xdr
from common.xdr import (Array, Bool, Enum, FixedOpaque, Int32, Int64, LinkedList, Opaque,
                        Optional, Struct, UInt32, UInt64, Union, Void, XdrError)


class color(enum.IntEnum):
    RED = 0
    GREEN = 1


class point(Struct):
    x: Int32
    y: UInt64
    name: Opaque(8)
    tags: Array(UInt32, 3)
    next: Optional(Int32)


class result(Union, switch=Enum(color)):
    arms = {color.RED: point}
    default = Void


def test_primitives_are_big_endian_four_byte_units():
    assert xdr.encode(UInt32, 1) == b"\0\0\0\1"
    assert xdr.encode(Int32, -1) == b"\xff\xff\xff\xff"
    assert xdr.encode(UInt64, 1 << 32) == b"\0\0\0\1\0\0\0\0"
    assert xdr.encode(Bool, True) == b"\0\0\0\1"


def test_opaque_is_length_prefixed_and_padded_to_four_bytes():
    assert xdr.encode(Opaque(), b"abcde") == b"\0\0\0\5abcde\0\0\0"
    assert xdr.encode(FixedOpaque(3), b"abc") == b"abc\0"


def test_struct_and_union_layout_byte_for_byte():
    p = point(x=-2, y=3, name=b"ab", tags=[7], next=None)
    wire = xdr.encode(result, result(color.RED, p))
    assert wire == bytes.fromhex(
        "00000000" "fffffffe" "0000000000000003" "00000002" "61620000" "00000001" "00000007" "00000000")
    assert xdr.decode(result, wire) == result(color.RED, p)
    assert xdr.decode(result, b"\0\0\0\1") == result(color.GREEN, None)


def test_unknown_enum_value_is_a_decode_error():
    with pytest.raises(XdrError):
        xdr.decode(Enum(color), b"\0\0\0\7")


def test_lengths_over_the_declared_maximum_are_rejected_before_reading_data():
    with pytest.raises(XdrError, match="exceeds maximum"):
        xdr.decode(Opaque(8), b"\0\0\0\x09" + b"x" * 12)
    with pytest.raises(XdrError, match="exceeds maximum"):
        xdr.decode(Array(UInt32, 3), b"\0\0\0\4" + b"\0" * 16)


def test_absurd_lengths_do_not_allocate():
    # 2**32-1 elements announced, 4 bytes present: rejected at once.
    with pytest.raises(XdrError):
        xdr.decode(Array(UInt32), b"\xff\xff\xff\xff\0\0\0\0")
    with pytest.raises(XdrError):
        xdr.decode(Opaque(), b"\xff\xff\xff\xff")


def test_packing_an_out_of_range_value_is_an_xdr_error():
    with pytest.raises(XdrError):
        xdr.encode(UInt32, -1)
    with pytest.raises(XdrError):
        xdr.encode(Opaque(2), b"abc")


def test_linked_list_round_trip():
    t = LinkedList(UInt32)
    assert xdr.encode(t, [5, 6]) == bytes.fromhex("00000001 00000005 00000001 00000006 00000000")
    assert xdr.decode(t, xdr.encode(t, [5, 6])) == [5, 6]


def test_trailing_bytes_are_an_error_only_when_exact():
    assert xdr.decode(UInt32, b"\0\0\0\1\0\0\0\0", exact=False) == 1
    with pytest.raises(XdrError):
        xdr.decode(UInt32, b"\0\0\0\1\0\0\0\0")


points = st.builds(point, x=st.integers(-(1 << 31), (1 << 31) - 1), y=st.integers(0, (1 << 64) - 1),
                   name=st.binary(max_size=8), tags=st.lists(st.integers(0, (1 << 32) - 1), max_size=3),
                   next=st.none() | st.integers(-(1 << 31), (1 << 31) - 1))


@given(points)
def test_struct_round_trip(p):
    assert xdr.decode(point, xdr.encode(point, p)) == p


@given(points, st.data())
def test_truncated_input_only_ever_raises_xdr_error(p, data):
    wire = xdr.encode(point, p)
    cut = data.draw(st.integers(0, len(wire) - 1))
    with pytest.raises(XdrError):
        xdr.decode(point, wire[:cut])


@given(st.binary(max_size=64))
def test_garbage_only_ever_raises_xdr_error(blob):
    try:
        xdr.decode(result, blob)
    except XdrError:
        pass


def test_int64_round_trip_extremes():
    for v in (-(1 << 63), (1 << 63) - 1):
        assert xdr.decode(Int64, xdr.encode(Int64, v)) == v
