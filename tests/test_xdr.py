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


# --- the decoders written for each struct and union ------------------------------------


def _reference(t, u):
    """What the reference decoders give, with none of the written ones anywhere inside
    (a type that decodes itself, fattr3 or an OpenEnum, is called as it is)."""
    if isinstance(t, xdr._StructMeta) and not xdr._own_decoder(t):
        obj = t.__new__(t)
        for fname, ftype in t._fields:
            object.__setattr__(obj, fname, _reference(ftype, u))
        return obj
    if isinstance(t, xdr._UnionMeta) and not xdr._own_decoder(t):
        disc = _reference(t.switch, u)
        arm = t.arms.get(disc, t.default)
        if arm is None:
            raise XdrError(f"{t.__name__}: no arm for {disc!r}")
        obj = t.__new__(t)
        obj.disc, obj.body = disc, _reference(arm, u)
        return obj
    if type(t) is Optional:
        return _reference(t.elem, u) if u.unpack_bool() else None
    if type(t) is LinkedList:
        out = []
        while u.unpack_bool():
            out.append(_reference(t.elem, u))
        return out
    if type(t) is Array:
        n = u.unpack_uint()
        if t.maxlen is not None and n > t.maxlen:
            raise XdrError(f"array length {n} exceeds maximum {t.maxlen}")
        if n * 4 > u.remaining() and t.elem is not Void:
            raise XdrError(f"array length {n} exceeds the remaining input")
        return [_reference(t.elem, u) for _ in range(n)]
    return t.unpack(u)


def _outcome(decode, t, data):
    u = xdr.Unpacker(data)
    try:
        value = decode(t, u)
    except XdrError as e:
        return "refused", str(e)
    return "decoded", value, u.pos


def _protocol_types():
    from common import mount, nfs2, nfs3, nfs4, portmap
    found = {}
    for module in (mount, nfs2, nfs3, nfs4, portmap):
        for value in vars(module).values():
            if isinstance(value, (xdr._StructMeta, xdr._UnionMeta)) \
                    and value not in (Struct, Union):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[k] for k in sorted(found)]


PROTOCOL_TYPES = _protocol_types()


def _xdr_like(rng):
    """Input shaped like XDR, so that decoding goes deep: small numbers
    (booleans, discriminants, lengths), lengths at the protocols' maxima and
    one past them, large numbers, and any bytes, in 4-byte words, sometimes
    cut short."""
    words = []
    for _ in range(rng.randrange(0, 48)):
        kind = rng.random()
        if kind < 0.6:
            words.append(rng.choice((0, 0, 0, 1, 1, 2, 3, 4, 5, 8, 16)).to_bytes(4, "big"))
        elif kind < 0.7:
            words.append(rng.choice((32, 33, 64, 65, 128, 129, 255, 256, 400, 401, 1024, 1025,
                                     4096, 4097)).to_bytes(4, "big"))
        elif kind < 0.8:
            words.append(rng.getrandbits(32).to_bytes(4, "big"))
        else:
            words.append(rng.randbytes(4))
    data = b"".join(words)
    if data and rng.random() < 0.2:
        data = data[:rng.randrange(len(data))]
    return data


def test_every_protocol_type_decodes_as_its_reference_decoders_do():
    # What is accepted, the values and where decoding stopped; what is
    # refused, and the message it is refused with.
    import random
    rng = random.Random(4506)
    assert len(PROTOCOL_TYPES) > 250
    decoded = 0
    for t in PROTOCOL_TYPES:
        for _ in range(60):
            data = _xdr_like(rng)
            written = _outcome(lambda t, u: t.unpack(u), t, data)
            assert written == _outcome(_reference, t, data), (t, data.hex())
            decoded += written[0] == "decoded"
    assert decoded > 2000  # not only refusals


@given(st.sampled_from(PROTOCOL_TYPES), st.binary(max_size=96))
def test_any_bytes_decode_as_the_reference_decoders_do(t, data):
    assert _outcome(lambda t, u: t.unpack(u), t, data) == _outcome(_reference, t, data)


def test_a_type_with_a_decoder_of_its_own_keeps_it_and_so_do_its_subclasses():
    from common import nfs3

    class mine(Struct):
        a: UInt32

        @classmethod
        def unpack(cls, u):
            return ("own", u.unpack_uint())

    class sub(mine):
        b: UInt32

    assert xdr.decode(mine, b"\0\0\0\7") == ("own", 7)
    assert xdr.decode(sub, b"\0\0\0\7") == ("own", 7)
    assert isinstance(nfs3.fattr3.__dict__["unpack"], classmethod)
    # Others get one written for them, at their first use.
    assert xdr.decode(point, xdr.encode(point, point(1, 2, b"", [], None))).x == 1
    assert point.__dict__["unpack"].__func__.__name__ == "unpack"
