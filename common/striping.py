"""Striping: which iod holds which bytes of a file (paper 5.5.3). Pure.

Stripe i of a file (bytes [i*unit, (i+1)*unit)) lives on iod (seed + i) mod n,
n being the number of iods of the file's layout generation; the seed spreads
the first stripes of small files over the iods. Datafiles hold data at the
file's real offsets, so a range that stays on one iod is one pread/pwrite there,
whatever its length, and with n == 1 nothing is ever split.
"""

import collections

Piece = collections.namedtuple("Piece", "iod offset length")
"""Bytes [offset, offset+length) of the file, all on iod number ``iod``."""


def stripe_index(offset, unit):
    return offset // unit


def iod_of(seed, stripe, n):
    return (seed + stripe) % n


def run_end(offset, unit, n):
    """Where the bytes from ``offset`` stop being on the same iod: the next
    stripe boundary, or None (never) when there is a single iod."""
    if n == 1:
        return None
    return (offset // unit + 1) * unit


def split(offset, length, unit, seed, n):
    """[Piece, ...] covering [offset, offset+length) in order, cut where the
    iod changes."""
    if length <= 0:
        return []
    if n == 1:
        return [Piece(0, offset, length)]
    out = []
    end = offset + length
    stripe = offset // unit
    while offset < end:
        boundary = min((stripe + 1) * unit, end)
        out.append(Piece((seed + stripe) % n, offset, boundary - offset))
        offset = boundary
        stripe += 1
    return out


def clamp_read(offset, count, size, unit, n, at_stripe=True):
    """(count, eof) of a READ of the file of real size ``size``: cut at EOF and,
    with at_stripe, where the next byte would come from another iod (a short
    read, which NFSv3 clients continue by themselves)."""
    if offset >= size or count <= 0:
        return 0, offset >= size
    count = min(count, size - offset)
    if at_stripe:
        end = run_end(offset, unit, n)
        if end is not None:
            count = min(count, end - offset)
    return count, offset + count >= size


def io_size(unit, limit, page=4096):
    """The largest multiple of ``page`` not above ``limit`` that divides
    ``unit``: advertised as rtmax/wtmax, it keeps a client's aligned reads and
    writes inside one stripe. Falls back to min(unit, limit) when unit is not a
    multiple of page."""
    if unit % page:
        return max(1, min(unit, limit))
    k = unit // page
    best = 1
    for d in range(1, min(k, limit // page) + 1):
        if k % d == 0:
            best = d
    return best * page


def valid_stripe_unit(unit, page=4096, maximum=1 << 26):
    """Whether ``unit`` is a usable stripe unit: a multiple of the page size
    (so stripes never split a client's page-aligned I/O), at most 64 MiB."""
    return isinstance(unit, int) and page <= unit <= maximum and unit % page == 0
