"""The metafile record: what the metaserver keeps in place of a file's data."""

import os
import struct
import zlib

import pytest
from hypothesis import given, strategies as st

from common.metafile import (DEFAULT_STRIPE_UNIT, FLAG_NO_DATA, MAGIC, MAX_SIZE, SIZE, Metafile,
                             MetafileError, new_seed)

metafiles = st.builds(
    Metafile,
    seed=st.integers(1, 2**64 - 1),
    size=st.integers(0, MAX_SIZE),
    stripe_unit=st.integers(1, 2**32 - 1),
    layout_gen=st.integers(0, 2**32 - 1),
    create_verf=st.none() | st.binary(min_size=8, max_size=8),
    trunc_to=st.none() | st.integers(0, MAX_SIZE),
    no_data=st.booleans(),
)


@given(metafiles)
def test_round_trip(m):
    data = m.encode()
    assert len(data) == SIZE
    assert Metafile.decode(data) == m


@given(metafiles, st.data())
def test_any_truncation_or_extension_is_rejected(m, data):
    raw = m.encode()
    cut = data.draw(st.integers(0, SIZE - 1))
    with pytest.raises(MetafileError):
        Metafile.decode(raw[:cut])
    with pytest.raises(MetafileError):
        Metafile.decode(raw + data.draw(st.binary(min_size=1, max_size=16)))


@given(metafiles, st.integers(0, SIZE - 1), st.integers(1, 255))
def test_any_flipped_byte_is_rejected(m, pos, flip):
    raw = bytearray(m.encode())
    raw[pos] ^= flip
    with pytest.raises(MetafileError):
        Metafile.decode(bytes(raw))


@given(st.binary(max_size=100))
def test_garbage_only_raises_metafile_error(data):
    try:
        Metafile.decode(data)
    except MetafileError:
        pass


def test_layout_starts_with_magic_and_version():
    raw = Metafile(seed=1, size=295456).encode()
    assert raw.startswith(MAGIC)
    assert raw[8] == 1
    assert Metafile.decode(raw).stripe_unit == DEFAULT_STRIPE_UNIT


def test_an_empty_file_is_not_a_metafile():
    with pytest.raises(MetafileError):
        Metafile.decode(b"")


@pytest.mark.parametrize("kw", [
    {"seed": 0, "size": 0}, {"seed": 1, "size": -1}, {"seed": 1, "size": MAX_SIZE + 1},
    {"seed": 1, "size": 0, "stripe_unit": 0}, {"seed": 1, "size": 0, "create_verf": b"short"},
    {"seed": 2**64, "size": 0}])
def test_out_of_range_fields_are_refused(kw):
    with pytest.raises(MetafileError):
        Metafile(**kw)


def test_seeds_are_random_and_nonzero():
    seeds = {new_seed() for _ in range(1000)}
    assert len(seeds) == 1000
    assert 0 not in seeds
    assert all(0 < s < 2**64 for s in seeds)


def test_replace_keeps_other_fields():
    m = Metafile(seed=5, size=10, create_verf=b"12345678")
    assert m.replace(size=20) == Metafile(seed=5, size=20, create_verf=b"12345678")
    assert m.replace(create_verf=None).create_verf is None


def with_flags(raw, flags):
    """``raw`` with its flags byte set to ``flags`` and its crc made right."""
    body = bytearray(raw[:-4])
    body[9] = flags
    return bytes(body) + struct.pack(">I", zlib.crc32(bytes(body)))


def test_no_data_is_a_flag_and_a_record_without_it_may_have_data():
    # Every metafile made before the flag existed lacks it: its removal
    # purges, as it always did.
    raw = Metafile(seed=7, size=0, no_data=True).encode()
    assert raw[9] == FLAG_NO_DATA
    assert Metafile.decode(with_flags(raw, 0)) == Metafile(seed=7, size=0)
    assert Metafile.decode(with_flags(raw, 0)).no_data is False


def test_an_unknown_flag_is_refused_even_with_a_right_crc():
    raw = Metafile(seed=7, size=0).encode()
    with pytest.raises(MetafileError):
        Metafile.decode(with_flags(raw, 0x08))


def test_a_forked_child_never_draws_a_seed_its_parent_will_draw():
    # Seeds are drawn from a batch; a worker forked with the batch in its
    # memory must not hand out the parent's next seeds (two files, one set
    # of datafiles).
    new_seed()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, b"".join(new_seed().to_bytes(8, "big") for _ in range(64)))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    childs = {int.from_bytes(data[i:i + 8], "big") for i in range(0, len(data), 8)}
    assert len(childs) == 64
    assert not childs & {new_seed() for _ in range(64)}
