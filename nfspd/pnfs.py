"""The metaserver's side of pNFS (files layout, RFC 8881 sections 12-13) over
the iods' data servers (iod --ds-port): which files can be given a layout, the
device of each layout generation, the data-server handles, and revocation at
the iods. The NFSv4.1 operations (nfspd/nfs4proc.py: LAYOUTGET, GETDEVICEINFO,
LAYOUTRETURN, LAYOUTCOMMIT) call it; the layout state is nfs4layoutstate's.
On whenever nfspd has iods, unless it runs with --no-pnfs.

A layout can be given for a file when every iod of its layout generation is
up and told its data server's port (PONG ds_port, nfspd/iodlink.py);
otherwise, and for a file of generation 0 (the local store), LAYOUTGET is
NFS4ERR_LAYOUTUNAVAILABLE and the client does its I/O through the metaserver
(Linux: pnfs_update_layout falls back to the MDS and asks again later).

Where clients reach a data server: iods.conf's ds=ADDRESS[:PORT] for the iod
when it has one (common/iodsconf.py), else the iod's own address, and the
port its PONG reports. ADDRESS 0.0.0.0 is the address this client reached
the metaserver at (an iod beside nfspd, serving its data server on every
interface while the metaserver talks to it on loopback): a device's
addresses, and so its id, then depend on that address, which one client's
mount keeps.

Handles (common/dsfh.py) are minted in the iods' time (the earliest clock
among the generation's iods, from the link's clock offsets): a revocation
stamped at an iod in its own time then covers every handle minted before it,
whatever the skew between iods. ``revoke_*`` waits until a millisecond has
passed since the last handle was minted, so a handle minted just before a
revocation is never stamped as late as it.
"""

import logging
import time

import trio

from common import dsfh, fileslayout
from common.iodsconf import WILDCARD
from common.nfs3 import nfsstat3
from common.nfs4 import NFS4_DEVICEID4_SIZE, nfsstat4
from common.nfs4error import Nfs4Error
from nfspd.fs.types import FsError

log = logging.getLogger(__name__)


class Pnfs:
    """``datapath`` an IodDataPath (nfspd/iodpath.py); ``data_servers``
    {(iod host, port): (ds address or None, ds port or None)}, iods.conf's
    ds= of the iods that have one."""

    layout_types = (fileslayout.FILES,)

    def __init__(self, datapath, data_servers=None, wall=time.time):
        self.datapath = datapath
        self.data_servers = dict(data_servers or {})
        self.keys = datapath.keys
        self.blksize = datapath.stripe_unit
        self._wall = wall
        self.last_mint = 0          # ms, the iods' time, of the last handle minted

    # -- devices -----------------------------------------------------------------

    def _addresses(self, gen, local):
        """[(ip, port)] where a client that reached the metaserver at
        ``local`` (an IPv4 address) finds generation ``gen``'s data servers,
        or None when one of its iods is down or serves no data server."""
        links = self.datapath.links_of(gen)
        if not links:
            return None
        out = []
        for link in links:
            if not link.up or link.ds_port is None or link.ip is None:
                return None
            host, port = self.data_servers.get((link.host, link.port), (None, None))
            if host == WILDCARD:
                host = local
            out.append((host or link.ip, port or link.ds_port))
        return out

    def device(self, meta, local):
        """(device id, data-server count) for a file, or LAYOUTUNAVAILABLE."""
        if meta.layout_gen == 0:
            raise Nfs4Error(nfsstat4.NFS4ERR_LAYOUTUNAVAILABLE)
        addresses = self._addresses(meta.layout_gen, local)
        if addresses is None:
            raise Nfs4Error(nfsstat4.NFS4ERR_LAYOUTUNAVAILABLE)
        return fileslayout.device_id(meta.layout_gen, addresses), len(addresses)

    def device_address(self, devid, local):
        """GETDEVICEINFO's device_addr4 for ``devid``; NOENT for an id that
        names no generation, or one whose data servers have moved since."""
        devid = bytes(devid)
        if len(devid) != NFS4_DEVICEID4_SIZE:
            raise Nfs4Error(nfsstat4.NFS4ERR_NOENT)
        gen = int.from_bytes(devid[:4], "big")
        addresses = self._addresses(gen, local)
        if addresses is None or fileslayout.device_id(gen, addresses) != devid:
            raise Nfs4Error(nfsstat4.NFS4ERR_NOENT)
        return fileslayout.device_address(addresses)

    # -- handles -------------------------------------------------------------------

    def _iod_now_ms(self, gen):
        links = self.datapath.links_of(gen) or self.datapath.links
        offset = min((link.clock_offset or 0.0) for link in links)
        return int((self._wall() + offset) * 1000)

    def handle(self, meta, ino, client, write, secure):
        minted = self._iod_now_ms(meta.layout_gen)
        self.last_mint = max(self.last_mint, minted)
        return dsfh.mint(self.keys, ino=ino, seed=meta.seed, layout_gen=meta.layout_gen,
                         minted=minted, client=client, write=write, secure=secure)

    # -- revocation -----------------------------------------------------------------

    async def _after_last_mint(self):
        while self._iod_now_ms(self.datapath.layout_gen) <= self.last_mint + 1:
            await trio.sleep(0.001)

    async def revoke_files(self, files):
        """Every handle of ``files`` [(ino, seed, layout_gen)] refused by the
        iods holding them, once this returns (OSError if an iod could not be
        told: it is down)."""
        await self._after_last_mint()
        by_gen = {}
        for ino, seed, gen in files:
            by_gen.setdefault(gen, []).append((ino, seed))
        for gen, pairs in by_gen.items():
            await self.datapath.revoke(files=pairs, layout_gen=gen)

    async def fence(self, ips):
        """Before a truncation: every handle minted so far for the clients at
        ``ips`` refused by every iod, or FsError JUKEBOX (NFS4ERR_DELAY: an
        iod that cannot be told is down, and the truncation could not be
        carried out either; the client retries). All of those clients' handles, not only the
        file's: the iods' revocation of a file (iod/dsrevoked.py) is for
        good, as fits a removed file, and would refuse its new layouts too.
        Their other layouts fail once with NFS4ERR_STALE and are fetched
        again."""
        await self._after_last_mint()
        try:
            await self.datapath.revoke(clients=ips)
        except OSError as e:
            log.warning("pNFS: fencing %s before a truncation: %s", ", ".join(ips), e)
            raise FsError(nfsstat3.NFS3ERR_JUKEBOX, "an iod is unavailable") from None

    async def revoke_clients(self, ips, everything=False):
        """The handles minted so far for the clients at ``ips`` (or for
        anyone): refused by every iod. Best effort: an iod that cannot be told
        now is down, and one that restarts refuses every older handle anyway."""
        if not ips and not everything:
            return
        await self._after_last_mint()
        try:
            await self.datapath.revoke(clients=ips, everything=everything)
        except OSError as e:
            log.warning("pNFS: revoking the layouts of %s at the iods: %s",
                        "every client" if everything else ", ".join(ips), e)
