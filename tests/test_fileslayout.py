"""An NFSP file as a pNFS files layout (common/fileslayout.py): the bytes the
metaserver will send, and a client computing from them which data server
holds each offset reaches the iod NFSP's striping put it on."""

import random
import struct

import pytest

from common import fileslayout, nfs4, striping
from common.xdr import decode

FH = bytes(range(64))
IODS = [("10.0.0.1", 2049), ("10.0.0.2", 2051)]


def xdr_string(b):
    return struct.pack(">I", len(b)) + b + bytes(-len(b) & 3)


def test_universal_addresses_carry_the_port_in_two_decimal_bytes():
    assert fileslayout.universal_address("192.0.2.1", 2049) == nfs4.netaddr4(b"tcp",
                                                                            b"192.0.2.1.8.1")
    assert fileslayout.universal_address("2001:db8::1", 2051) == nfs4.netaddr4(
        b"tcp6", b"2001:db8::1.8.3")


def test_device_address_bytes():
    body = fileslayout.ds_addr_body(IODS)
    expected = (struct.pack(">III", 2, 0, 1)                          # nflda_stripe_indices
                + struct.pack(">I", 2)                                # nflda_multipath_ds_list
                + struct.pack(">I", 1) + xdr_string(b"tcp") + xdr_string(b"10.0.0.1.8.1")
                + struct.pack(">I", 1) + xdr_string(b"tcp") + xdr_string(b"10.0.0.2.8.3"))
    assert body == expected
    addr = fileslayout.device_address(IODS)
    assert addr.da_layout_type == nfs4.layouttype4.LAYOUT4_NFSV4_1_FILES
    assert addr.da_addr_body == expected


def test_layout_bytes():
    devid = fileslayout.device_id(3, IODS)
    body = fileslayout.layout_body(devid, 65536, seed=7, n=2, fh=FH)
    expected = (devid + struct.pack(">I", 65536)     # nfl_util: stripe unit, sparse, DS commits
                + struct.pack(">I", 1)               # nfl_first_stripe_index = 7 mod 2
                + struct.pack(">Q", 0)               # nfl_pattern_offset
                + struct.pack(">I", 1) + xdr_string(FH))
    assert body == expected
    layout = fileslayout.whole_file_layout(nfs4.layoutiomode4.LAYOUTIOMODE4_RW, devid, 65536,
                                           7, 2, FH)
    assert (layout.lo_offset, layout.lo_length) == (0, nfs4.NFS4_UINT64_MAX)
    assert layout.lo_content.loc_body == expected


def test_device_ids_are_16_bytes_and_change_with_the_generation_or_an_address():
    a = fileslayout.device_id(1, IODS)
    assert len(a) == nfs4.NFS4_DEVICEID4_SIZE and a[:4] == b"\0\0\0\1"
    assert a == fileslayout.device_id(1, list(IODS))
    assert a != fileslayout.device_id(2, IODS)
    assert a != fileslayout.device_id(1, [IODS[0], ("10.0.0.2", 2049)])


@pytest.mark.parametrize("unit", [0, 100, 1 << 32, -64])
def test_stripe_units_the_layout_cannot_say_are_refused(unit):
    with pytest.raises(ValueError):
        fileslayout.layout_body(bytes(16), unit, 1, 2, FH)


def client_data_server(layout_body, ds_addr_body, offset):
    """What a client does with the two bodies (RFC 8881 13.4.1, Linux
    nfs4_fl_calc_j_index / nfs4_fl_select_ds_fh): (data server, handle)."""
    layout = decode(nfs4.nfsv4_1_file_layout4, layout_body)
    device = decode(nfs4.nfsv4_1_file_layout_ds_addr4, ds_addr_body)
    unit = layout.nfl_util & nfs4.NFL4_UFLG_STRIPE_UNIT_SIZE_MASK
    assert not layout.nfl_util & nfs4.NFL4_UFLG_DENSE
    count = len(device.nflda_stripe_indices)
    j = ((offset - layout.nfl_pattern_offset) // unit + layout.nfl_first_stripe_index) % count
    ds = device.nflda_stripe_indices[j]
    fh = layout.nfl_fh_list[0] if len(layout.nfl_fh_list) == 1 else layout.nfl_fh_list[ds]
    return device.nflda_multipath_ds_list[ds][0], fh


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_every_offset_goes_to_the_iod_nfsp_striped_it_to(n):
    rng = random.Random(n)
    iods = [(f"10.0.0.{k + 1}", 2049 + k) for k in range(n)]
    ds_body = fileslayout.ds_addr_body(iods)
    for _ in range(20):
        seed, unit = rng.getrandbits(64), rng.choice([64, 4096, 65536, 1 << 20])
        body = fileslayout.layout_body(fileslayout.device_id(1, iods), unit, seed, n, FH)
        for offset in [0, unit - 1, unit, 5 * unit + 3] + [rng.randrange(1 << 40)
                                                            for _ in range(20)]:
            addr, fh = client_data_server(body, ds_body, offset)
            want = striping.iod_of(seed, striping.stripe_index(offset, unit), n)
            assert addr == fileslayout.universal_address(*iods[want])
            assert fh == FH
