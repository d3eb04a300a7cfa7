from hypothesis import given
from hypothesis import strategies as st

from common import striping
from common.striping import Piece, clamp_read, io_size, split

U = 65536


def test_stripe_i_lives_on_seed_plus_i_mod_n():
    assert [striping.iod_of(5, i, 3) for i in range(6)] == [2, 0, 1, 2, 0, 1]
    assert striping.stripe_index(U - 1, U) == 0 and striping.stripe_index(U, U) == 1


def test_split_at_stripe_boundaries():
    assert split(U - 10, 30, U, 0, 4) == [Piece(0, U - 10, 10), Piece(1, U, 20)]
    assert split(0, 3 * U, U, 1, 2) == [Piece(1, 0, U), Piece(0, U, U), Piece(1, 2 * U, U)]
    assert split(100, 0, U, 0, 2) == []


def test_single_iod_never_splits():
    assert split(U - 10, 5 * U, U, 7, 1) == [Piece(0, U - 10, 5 * U)]
    assert striping.run_end(123, U, 1) is None


@given(st.integers(0, 1 << 40), st.integers(0, 1 << 21), st.sampled_from([4096, 65536, 98304]),
       st.integers(0, (1 << 64) - 1), st.integers(1, 9))
def test_split_covers_the_range_in_order(offset, length, unit, seed, n):
    pieces = split(offset, length, unit, seed, n)
    pos = offset
    for p in pieces:
        assert p.offset == pos and p.length > 0
        assert 0 <= p.iod < n
        if n > 1:
            # A piece never crosses a boundary, and lives where the rule says.
            assert p.offset // unit == (p.offset + p.length - 1) // unit
            assert p.iod == (seed + p.offset // unit) % n
        pos += p.length
    assert pos == offset + length


def test_clamp_read_eof_and_boundary():
    # Past EOF, at EOF, across EOF.
    assert clamp_read(1000, 10, 1000, U, 2) == (0, True)
    assert clamp_read(990, 100, 1000, U, 2) == (10, True)
    assert clamp_read(0, 10, 1000, U, 2) == (10, False)
    # Cut at the stripe boundary (short read, not EOF), unless one iod holds it all.
    assert clamp_read(U - 100, 4096, 10 * U, U, 2) == (100, False)
    assert clamp_read(U - 100, 4096, 10 * U, U, 1) == (4096, False)
    assert clamp_read(U - 100, 4096, 10 * U, U, 2, at_stripe=False) == (4096, False)
    # Boundary and EOF together.
    assert clamp_read(U - 100, 4096, U, U, 2) == (100, True)
    assert clamp_read(5, 0, 100, U, 2) == (0, False)


def test_io_size_divides_the_stripe_unit():
    assert io_size(65536, 32768) == 32768
    assert io_size(16384, 32768) == 16384
    assert io_size(49152, 32768) == 24576      # 12 pages: the largest divisor <= 8 is 6
    assert io_size(4096 * 7, 32768) == 28672
    assert io_size(1 << 20, 1 << 20) == 1 << 20
    for unit in range(4096, 40 * 4096, 4096):
        size = io_size(unit, 32768)
        assert unit % size == 0 and size <= 32768 and size % 4096 == 0


def test_valid_stripe_unit():
    assert striping.valid_stripe_unit(65536)
    assert not striping.valid_stripe_unit(1000)
    assert not striping.valid_stripe_unit(0)
    assert not striping.valid_stripe_unit(1 << 27)
