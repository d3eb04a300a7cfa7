"""An NFSP file as a pNFS files layout (RFC 8881 section 13), pure: the
bodies the metaserver puts in LAYOUTGET's layout_content4 and GETDEVICEINFO's
device_addr4, so that a client sends each stripe to the iod that holds it.

NFSP stripes a file as the files layout does natively: stripe i (bytes
[i*unit, (i+1)*unit)) lives on iod (seed + i) mod n of the file's layout
generation (common/striping.py), at its real offset in the datafile (sparse
packing: NFL4_UFLG_DENSE clear). So:

- one device per layout generation: its data servers are the generation's
  iods in order (nflda_multipath_ds_list[k] = iod k's data-server address;
  more addresses per entry would be multipath, kept for later) and
  nflda_stripe_indices = [0, 1, ..., n-1];
- the layout: stripe unit = the metafile's, nfl_first_stripe_index = seed
  mod n, nfl_pattern_offset = 0. The client computes (RFC 8881 13.4.1; Linux
  nfs4_fl_calc_j_index) j = (offset / unit + first_stripe_index) mod n and
  sends to stripe_indices[j] = (seed + i) mod n, the iod striping names;
- nfl_fh_list holds one handle (common/dsfh.py), used with every data
  server: it names the file, not the iod, and every iod checks it with the
  cluster key;
- COMMIT goes to the data servers (NFL4_UFLG_COMMIT_THRU_MDS clear): each
  iod syncs its datafile and answers with its own verifier, as it does for
  the metaserver's own COMMITs.

The device id is the generation and a digest of its data-server addresses:
a client caches devices by id, so one whose addresses changed (an iod
restarted with another --ds-port) must get a new id.
"""

import hashlib
import ipaddress
import struct

from common.nfs4 import (
    NFL4_UFLG_STRIPE_UNIT_SIZE_MASK,
    NFS4_DEVICEID4_SIZE,
    NFS4_UINT64_MAX,
    device_addr4,
    layout4,
    layout_content4,
    layouttype4,
    netaddr4,
    nfsv4_1_file_layout4,
    nfsv4_1_file_layout_ds_addr4,
)
from common.xdr import encode

FILES = layouttype4.LAYOUT4_NFSV4_1_FILES


def universal_address(host, port):
    """netaddr4 of a TCP endpoint (RFC 5665 universal address: the address,
    then the port's two bytes in decimal)."""
    addr = ipaddress.ip_address(host)
    netid = b"tcp" if addr.version == 4 else b"tcp6"
    return netaddr4(netid, f"{addr.compressed}.{port >> 8}.{port & 0xFF}".encode())


def device_id(layout_gen, ds_addresses):
    """The deviceid4 of a layout generation whose data servers are
    ``ds_addresses`` [(host, port), ...], in the generation's order."""
    digest = hashlib.sha256(repr(list(ds_addresses)).encode()).digest()
    return struct.pack(">I", layout_gen) + digest[:NFS4_DEVICEID4_SIZE - 4]


def ds_addr_body(ds_addresses):
    """nfsv4_1_file_layout_ds_addr4 (GETDEVICEINFO's da_addr_body), encoded."""
    return encode(nfsv4_1_file_layout_ds_addr4, nfsv4_1_file_layout_ds_addr4(
        list(range(len(ds_addresses))),
        [[universal_address(host, port)] for host, port in ds_addresses]))


def device_address(ds_addresses):
    return device_addr4(FILES, ds_addr_body(ds_addresses))


def layout_body(devid, stripe_unit, seed, n, fh):
    """nfsv4_1_file_layout4 (LAYOUTGET's loc_body), encoded, for a file of
    ``seed`` striped by ``stripe_unit`` over the ``n`` iods of device ``devid``."""
    if stripe_unit <= 0 or stripe_unit & ~NFL4_UFLG_STRIPE_UNIT_SIZE_MASK:
        raise ValueError(f"stripe unit {stripe_unit} is not a positive multiple of 64 "
                         f"below 4 GiB")
    if n < 1:
        raise ValueError("a layout needs at least one data server")
    return encode(nfsv4_1_file_layout4, nfsv4_1_file_layout4(
        devid, stripe_unit, seed % n, 0, [fh]))


def whole_file_layout(iomode, devid, stripe_unit, seed, n, fh):
    """The layout4 covering the whole file (one segment: the files layout
    describes every offset, so there is never a reason to hand out less)."""
    return layout4(0, NFS4_UINT64_MAX, iomode,
                   layout_content4(FILES, layout_body(devid, stripe_unit, seed, n, fh)))
