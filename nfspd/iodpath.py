"""The data path over iods (paper 5.5.3-5.6): striping, forwarding, relaying.

A file of layout generation g is striped over the n iods of g
(common/striping.py). Three ways for data to move:

- forward (UDP clients): the metaserver sends one READ or WRITE frame, with the
  client's address, the address the client wrote to, and the pre-encoded NFS
  reply (head), over UDP to the iod holding the bytes; the iod answers the
  client itself from that address. An error comes back as a REPLY to the
  forwarding socket, and the metaserver answers the client with the NFS error
  (``on_error``); a WRITE is acknowledged with a REPLY too, once its data is
  written (``done``, called on either answer: a truncation of the file waits
  for it, nfspd/fs/inflight.py; an iod refuses a forwarded WRITE stamped more
  than FORWARD_MAX_AGE ago, so one unanswered after ``forward_ttl`` never
  lands any more). The forward is remembered for that purpose
  for ``forward_ttl`` seconds at most, in a ring of the last ``max_forwards``
  request ids (an iod answers within milliseconds; the ring makes no object
  per forward for the garbage collector to walk).
- relay (TCP clients, a WRITE crossing a stripe boundary, anything that cannot
  be forwarded): the metaserver asks the iods over their persistent TCP links
  (nfspd/iodlink.py), all pieces of one request in parallel, and replies; the
  requesting task wakes once, when all pieces are in (or one failed).
- commit/truncate: to every iod of the file's generation, in parallel.

Failures surface as OSError, which MetaFS maps to NFS statuses: an iod that is
down or restarting is EAGAIN (NFS3ERR_JUKEBOX; no reply for NFSv2, so the
client retries), a request unanswered within its timeout ETIMEDOUT (JUKEBOX
too), an iod's own errno (ENOSPC, EIO) as is.

The write verifier is one value for the cluster: a hash of this process's boot
nonce and every iod's boot verifier, so it changes whenever any iod (or the
metaserver, whose unsynced metafile sizes die with it) restarts.

Generation 0 means "created without iods": such files stay in the local store
(``local``, a LocalDataPath) if there is one.

Every request frame is stamped against replays (common/iodproto.py): frames
over a link are built when their turn on the connection comes (a partial of
the Signer method, see IodLink.submit), forwarded frames by the link's
forwarding sequencer as they leave. A key file re-read on nfspd's SIGHUP is
swapped into the Keys object they all share. With an iod listening below 1024 (iod --secure-port) the
forwarding socket is bound below 1024 too.
"""

import collections
import errno
import functools
import hashlib
import itertools
import logging
import os
import secrets
import socket
import time

import trio

from common import striping
from common.iodproto import FORWARD_MAX_AGE, MAX_EXTENTS, IodProtoError, Op, pack_extents
from nfspd.datapath import DataPath
from nfspd.iodframes import Signer, Verifier
from nfspd.iodlink import Gathering, IodLink, IodUnavailable
from common.runtime import pktinfo
from common.runtime.resvport import PRIVILEGED_PORTS, reserve_port

log = logging.getLogger(__name__)
_monotonic = time.monotonic

UDP_LIMIT = 32 << 10          # largest READ/WRITE forwarded in one datagram
TCP_LIMIT = 1 << 20           # NFSv3 over TCP rtmax/wtmax (iodproto.MAX_DATA)
MAX_FORWARD_FRAME = 65000     # a frame must fit one UDP datagram (65507) with room to spare


class IodDataPath(DataPath):
    forwards = True

    def __init__(self, layouts, keys, stripe_unit, *, local=None, bind="0.0.0.0",
                 request_timeout=10.0, sync_timeout=30.0, forward_ttl=10.0,
                 max_forwards=8192, startup_wait=3.0, purge_batch=4096, purge_delay=0.5,
                 purge_backlog=1 << 20, link_options=None, stores=None):
        if forward_ttl <= FORWARD_MAX_AGE:
            # Past forward_ttl a truncation stops waiting for a forwarded
            # WRITE: by then the iod must refuse it if it comes.
            raise ValueError(f"forward_ttl must exceed the iods' FORWARD_MAX_AGE "
                             f"({FORWARD_MAX_AGE:g} s)")
        self.layouts = layouts
        self.layout_gen = layouts.current
        self.stripe_unit = stripe_unit
        # Over UDP, what divides the stripe unit: aligned I/O then stays on one iod.
        self._udp_io = striping.io_size(stripe_unit, UDP_LIMIT)
        self.keys = keys
        self.local = local
        self.bind = bind
        self.request_timeout = request_timeout
        self.sync_timeout = sync_timeout
        self.forward_ttl = forward_ttl
        self.max_forwards = max_forwards
        self.startup_wait = startup_wait
        self.purge_batch, self.purge_delay, self.purge_backlog = purge_batch, purge_delay, \
            purge_backlog
        ids = itertools.count(secrets.randbits(40))
        self.signer = Signer(keys)
        self._answers = Verifier(keys)   # the iods' REPLYs to forwards
        # stores: common/runtime/iodstores.IodStores (each iod's data store checked), or None.
        self.stores = stores
        self.links = [IodLink(i, host, port, keys, ids, self._link_changed, signer=self.signer,
                              stores=stores, **(link_options or {}))
                      for i, (host, port) in enumerate(layouts.all_iods())]
        self._ids = ids
        self._gen_links = {g: self.links[:len(iods)] for g, iods in layouts.generations.items()}
        self._boot = os.urandom(8)
        self._verifier = self._fold()
        self._fwd_sock = None
        self._reply_sock = None
        # Forwards that may still be answered with an error (_send_forward).
        size = 1 << max(0, max_forwards - 1).bit_length()
        self._ring_mask = size - 1
        self._ring_id = [-1] * size
        self._ring_expires = [0.0] * size
        self._ring_client = [None] * size
        self._ring_local = [None] * size
        self._ring_error = [None] * size
        self._ring_done = [None] * size
        self._purges = [collections.deque() for _ in self.links]
        self._purge_wake = [None] * len(self.links)
        self._purge_dropped = [0] * len(self.links)
        self._warned = {}
        self.counters = collections.Counter()

    # -- layout ----------------------------------------------------------------

    def _links(self, meta):
        links = self._gen_links.get(meta.layout_gen)
        if links is None:
            self._warn(("gen", meta.layout_gen),
                       "a file has layout generation %d, which layouts.json does not know "
                       "(state directory from another cluster?); its data is not served",
                       meta.layout_gen)
            raise OSError(errno.EIO, f"unknown layout generation {meta.layout_gen}")
        return links

    def _local_for(self, meta):
        if meta.layout_gen == 0:
            if self.local is None:
                raise OSError(errno.EIO, "file created without iods and no local store")
            return self.local
        return None

    def links_of(self, layout_gen):
        """The IodLinks of a layout generation, in its order (empty if unknown)."""
        return self._gen_links.get(layout_gen, [])

    def iod_count(self, meta):
        if meta.layout_gen == 0:
            return 1
        links = self._gen_links.get(meta.layout_gen)
        return len(links) if links else 1

    def max_io(self, transport):
        return TCP_LIMIT if transport == "tcp" else self._udp_io

    def ready(self, meta, offset, length):
        if meta.layout_gen == 0:
            return
        links = self._links(meta)
        n = len(links)
        if length <= 0:
            return
        unit = meta.stripe_unit
        first = offset // unit
        last = (offset + length - 1) // unit
        for stripe in range(first, min(last, first + n - 1) + 1):
            link = links[(meta.seed + stripe) % n]
            if not link.up:
                raise IodUnavailable(link)

    # -- the write verifier -------------------------------------------------------

    @property
    def verifier(self):
        return self._verifier

    def _fold(self):
        h = hashlib.sha256(self._boot)
        for link in self.links:
            h.update(link.verifier or bytes(8))
        return h.digest()[:8]

    def _link_changed(self, link):
        self._verifier = self._fold()

    # -- relay ---------------------------------------------------------------------

    def _checked(self, link, reply):
        if reply.op != Op.REPLY:
            raise OSError(errno.EIO, f"iod {link.name}: unexpected {reply.op.name}")
        link.note_verifier(reply.verifier)
        if reply.status:
            raise _iod_error(link, reply)
        return reply

    async def _call(self, link, msg_id, frame, timeout, what):
        return self._checked(link, await link.call(msg_id, frame, timeout, what))

    async def _gather(self, requests, timeout, what, sinks=None):
        """Send every (link, msg_id, frame) at once (the answer to the i-th
        received into ``sinks[i]``, see IodLink.submit), then collect the answers in
        order: the iods work on all of them in parallel, without a task per
        request, and this task wakes once for all of them (a Gathering). The
        first failure (an error answer, a lost link, ``timeout`` for the whole
        lot) is raised; answers still due are then ignored."""
        if not requests:
            return []
        slots = []
        gathering = Gathering(len(requests))
        try:
            with trio.move_on_after(timeout):
                for i, (link, msg_id, frame) in enumerate(requests):
                    sink = None if sinks is None else sinks[i]
                    slots.append((link, await link.submit(msg_id, frame, gathering, sink)))
                await gathering.event.wait()
            if gathering.event.is_set():
                # Everything answered, or a failure (raised here) woke us --
                # perhaps just as the deadline passed, which then changes nothing.
                for link, slot in slots:
                    if slot.done:
                        self._checked(link, link.answer(slot))
                return [slot.reply for _, slot in slots]
            late = [link for link, slot in slots if not slot.done]
            late += [link for link, _, _ in requests[len(slots):]]
            late[0].timed_out(what, timeout)
        finally:
            for link, slot in slots:
                link.release(slot)

    async def read(self, meta, ino, offset, count):
        """The data as a bytearray, which the iods' answers are received
        straight into (zeros where an iod sends less: holes, datafile end):
        the NFS reply sends it on from there (nfspd/transport.py). Each iod
        gets one READ for all its stripes of the range (``more``), not one
        per stripe unit."""
        local = self._local_for(meta)
        if local is not None:
            return await local.read(meta, ino, offset, count)
        links = self._links(meta)
        count = max(0, min(count, meta.size - offset))
        if count == 0:
            return b""
        pieces = striping.split(offset, count, meta.stripe_unit, meta.seed, len(links))
        self.counters["relayed_reads"] += 1
        buf = bytearray(count)
        view = memoryview(buf)
        held = {}   # iod -> its pieces, in order
        for piece in pieces:
            held.setdefault(piece.iod, []).append(piece)
        requests, sinks, sizes = [], [], []
        read = self.signer.read
        for iod, mine in held.items():
            link = links[iod]
            for at in range(0, len(mine), MAX_EXTENTS + 1):
                group = mine[at:at + MAX_EXTENTS + 1]
                first = group[0]
                more = pack_extents((p.offset, p.length) for p in group[1:])
                msg_id = link.next_id()
                requests.append((link, msg_id, functools.partial(
                    read, msg_id, ino, meta.seed, first.offset, first.length, more=more)))
                sinks.append([view[p.offset - offset:p.offset - offset + p.length]
                              for p in group])
                sizes.append(sum(p.length for p in group))
        replies = await self._gather(requests, self.request_timeout, "READ", sinks)
        for (link, _, _), sink, size, reply in zip(requests, sinks, sizes, replies):
            data = reply.data
            if type(data) is not list and data is not None:
                # Not received in place (too long, or from a test's iod).
                if len(data) > size:
                    raise OSError(errno.EIO, f"iod {link.name} sent {len(data)} bytes for "
                                             f"{size}")
                pos = 0
                for part in sink:
                    n = min(len(part), len(data) - pos)
                    part[:n] = data[pos:pos + n]
                    pos += n
            link.read_bytes += size
        return buf

    async def write(self, meta, ino, offset, data, stable):
        local = self._local_for(meta)
        if local is not None:
            return await local.write(meta, ino, offset, data, stable)
        links = self._links(meta)
        if not data:
            return
        view = memoryview(data)
        self.counters["relayed_writes"] += 1
        requests = []
        pieces = striping.split(offset, len(data), meta.stripe_unit, meta.seed, len(links))
        for piece in pieces:
            start = piece.offset - offset
            link = links[piece.iod]
            msg_id = link.next_id()
            requests.append((link, msg_id, functools.partial(
                self.signer.write_parts, msg_id, ino, meta.seed, piece.offset,
                view[start:start + piece.length], bool(stable))))
        await self._gather(requests, self.sync_timeout if stable else self.request_timeout,
                           "WRITE")
        for piece in pieces:
            links[piece.iod].written_bytes += piece.length

    async def commit(self, meta, ino):
        local = self._local_for(meta)
        if local is not None:
            return await local.commit(meta, ino)
        requests = []
        for link in self._links(meta):
            msg_id = link.next_id()
            requests.append((link, msg_id,
                             functools.partial(self.signer.commit, msg_id, ino, meta.seed)))
        await self._gather(requests, self.sync_timeout, "COMMIT")

    async def truncate(self, meta, ino, size):
        local = self._local_for(meta)
        if local is not None:
            return await local.truncate(meta, ino, size)
        requests = []
        for link in self._links(meta):
            msg_id = link.next_id()
            requests.append((link, msg_id, functools.partial(
                self.signer.truncate, msg_id, ino, meta.seed, size)))
        await self._gather(requests, self.sync_timeout, "TRUNCATE")

    async def revoke(self, files=(), clients=(), everything=False, layout_gen=None):
        """Tell the iods' pNFS data servers to refuse, from now on, the
        handles of ``files`` [(ino, seed)], those minted before now for
        ``clients`` [ip] or for anyone (``everything``): the iods of
        ``layout_gen``, or all. Returns once every iod has it in force;
        OSError (EAGAIN for one that is down) otherwise."""
        links = self.links if layout_gen is None else self._gen_links.get(layout_gen, [])
        requests = []
        for link in links:
            msg_id = link.next_id()
            requests.append((link, msg_id, functools.partial(
                self.signer.revoke, msg_id, list(files), list(clients), everything)))
        await self._gather(requests, self.sync_timeout, "REVOKE")
        self.counters["revocations"] += 1

    def space(self):
        known = [link for link in self.links if link.total is not None]
        if not known:
            return None
        total = sum(link.total for link in known)
        free = sum(link.free for link in known)
        return total, free, free

    # -- forward ---------------------------------------------------------------------

    def _forward_link(self, meta, offset, count):
        """The link that holds all of [offset, offset+count), None if the range
        spans iods or cannot be forwarded at all."""
        if self._fwd_sock is None or meta.layout_gen == 0:
            return None
        links = self._gen_links.get(meta.layout_gen) or self._links(meta)
        if len(links) == 1:
            link = links[0]
        else:
            unit = meta.stripe_unit
            stripe = offset // unit
            if offset + count > (stripe + 1) * unit:
                return None
            link = links[(meta.seed + stripe) % len(links)]
        if not link.up:
            raise IodUnavailable(link)
        return link

    def forward_read(self, meta, ino, offset, count, head, client, local, on_error):
        link = self._forward_link(meta, offset, count)
        if link is None or not _spoofable(link, client, local):
            return False
        msg_id = next(self._ids)
        frame = self.signer.read(msg_id, ino, meta.seed, offset, count, client, local, head,
                                 link.forward_stamp())
        if not self._send_forward(link, msg_id, frame, client, local, on_error):
            return False
        self.counters["forwarded_reads"] += 1
        link.read_bytes += count
        return True

    def forward_write(self, meta, ino, offset, data, stable, reply, client, local, on_error,
                      done=None):
        link = self._forward_link(meta, offset, len(data))
        if link is None or not _spoofable(link, client, local):
            return False
        if len(data) + len(reply) + 512 > MAX_FORWARD_FRAME:
            return False
        msg_id = next(self._ids)
        parts = self.signer.write_parts(msg_id, ino, meta.seed, offset, data, bool(stable),
                                        client, local, reply, link.forward_stamp())
        if sum(map(len, parts)) > MAX_FORWARD_FRAME:
            return False
        if not self._send_forward(link, msg_id, parts, client, local, on_error, done):
            return False
        self.counters["forwarded_writes"] += 1
        link.written_bytes += len(data)
        return True

    def _send_forward(self, link, msg_id, frame, client, local, on_error, done=None):
        """Send ``frame`` (bytes, or a list of buffers making one datagram);
        ``done()`` is called once the iod answers it, whatever the answer."""
        try:
            if type(frame) is list:
                sent = self._fwd_sock.sendmsg(frame, (), 0, link.udp_addr)
            else:
                sent = self._fwd_sock.sendto(frame, link.udp_addr)
        except OSError as e:
            # A full socket buffer (EAGAIN) or a route problem: relay this one.
            self.counters["forward_send_failed"] += 1
            log.debug("forward to iod %s failed (%s); relaying", link.name, e)
            return False
        link.requests += 1
        link.bytes_out += sent
        # Remembered in a ring indexed by request id: no lookup, no expiry
        # sweep, no resizing, no object made per forward (the garbage
        # collector would walk each one) on the hot path; a slot is
        # overwritten by the forward max_forwards ids later (ids are
        # consecutive), and an answer is taken only from its own, unexpired
        # entry.
        i = msg_id & self._ring_mask
        self._ring_id[i] = msg_id
        self._ring_expires[i] = _monotonic() + self.forward_ttl
        self._ring_client[i] = client
        self._ring_local[i] = local
        self._ring_error[i] = on_error
        # A slot overwritten before its answer came loses its ``done``: the
        # write is then presumed lost once forward_ttl has passed.
        self._ring_done[i] = done
        return True

    def _forward_done(self, msg_id):
        """The ``done`` of a forward, taken out (expired or not: an answer
        that comes late still says the request is over)."""
        i = msg_id & self._ring_mask
        if self._ring_id[i] != msg_id:
            return None
        done, self._ring_done[i] = self._ring_done[i], None
        return done

    def _forward_entry(self, msg_id):
        """The (expires, client, local, on_error) of a live forward, taken out."""
        i = msg_id & self._ring_mask
        if self._ring_id[i] != msg_id:
            return None
        self._ring_id[i] = -1
        entry = (self._ring_expires[i], self._ring_client[i], self._ring_local[i],
                 self._ring_error[i])
        self._ring_client[i] = self._ring_local[i] = self._ring_error[i] = None
        self._ring_done[i] = None
        if entry[0] <= _monotonic():
            return None
        return entry

    async def _receive_forward_answers(self):
        """REPLYs to forwarded requests: only errors are sent, and the client
        must get an answer from us instead of the iod's."""
        sock = self._fwd_sock
        while True:
            await trio.lowlevel.wait_readable(sock)
            while True:
                try:
                    data, addr = sock.recvfrom(65536)
                except BlockingIOError:
                    break
                except OSError:
                    continue  # an ICMP error for an earlier datagram
                try:
                    msg = self._answers.decode(data)
                except IodProtoError as e:
                    self.counters["bad_frames"] += 1
                    self._warn(("bad frame", addr[0]), "dropping bad frames on the forwarding "
                               "socket from %s (%s)", addr[0], e)
                    continue
                if msg.op != Op.REPLY:
                    continue
                done = self._forward_done(msg.id)
                if done is not None:
                    try:
                        done()
                    except Exception:
                        log.exception("noting the end of a forwarded request")
                entry = self._forward_entry(msg.id)
                if entry is None or msg.status == 0:
                    continue
                try:
                    await self._answer_error(entry, msg, addr)
                except Exception:
                    # One bad answer must not stop the data path.
                    log.exception("answering a failed forwarded request")

    async def _answer_error(self, entry, msg, addr):
        _, client, local, on_error = entry
        self.counters["forward_errors"] += 1
        code = msg.status if msg.status > 0 else errno.EIO
        self._warn(("iod errno", addr[0], code), "iod %s:%d answered %s: %s", addr[0], addr[1],
                   errno.errorcode.get(code, code), msg.message or os.strerror(code))
        try:
            reply = on_error(code, msg.message)
        except Exception:
            log.exception("building the error reply for a forwarded request failed")
            return
        if reply is None or self._reply_sock is None:
            return
        anc = pktinfo.source(local[0])
        sock = self._reply_sock
        with trio.move_on_after(self.request_timeout):
            while True:
                try:
                    sock.sendmsg([reply], anc, 0, client)
                    return
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)
                except OSError as e:
                    log.debug("error reply to %s failed: %s", client, e)
                    return

    # -- purge -----------------------------------------------------------------------

    def purge(self, ino, seed):
        if self.local is not None:
            self.local.purge(ino, seed)
        for i, queue in enumerate(self._purges):
            if len(queue) >= self.purge_backlog:
                queue.popleft()
                self._purge_dropped[i] += 1
                self._warn(("purge backlog", i), "iod %s: purge backlog full (%d); dropping "
                           "the oldest (space leaks until a scrub)", self.links[i].name,
                           self.purge_backlog)
            queue.append((ino, seed))
            wake = self._purge_wake[i]
            if wake is not None:
                wake.set()

    async def _purger(self, i):
        """Batches of PURGE to iod i: sent once the batch is full or has waited
        purge_delay; kept (and retried) while the iod is unreachable."""
        link, queue = self.links[i], self._purges[i]
        backoff = 0.1
        while True:
            if not queue:
                self._purge_wake[i] = trio.Event()
                await self._purge_wake[i].wait()
                self._purge_wake[i] = None
            if len(queue) < self.purge_batch:
                await trio.sleep(self.purge_delay)
            while not link.up:
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            batch = [queue[k] for k in range(min(len(queue), self.purge_batch))]
            msg_id = link.next_id()
            try:
                await self._call(link, msg_id, functools.partial(self.signer.purge, msg_id, batch),
                                 self.sync_timeout, "PURGE")
            except OSError as e:
                self._warn(("purge", i), "PURGE to iod %s failed: %s (will retry)", link.name, e)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            for _ in batch:
                queue.popleft()
            self.counters["purged"] += len(batch)

    def purge_pending(self):
        return sum(len(q) for q in self._purges)

    # -- life --------------------------------------------------------------------------

    def set_reply_socket(self, sock):
        """The NFS UDP socket (a non-blocking stdlib socket, nfspd/transport.py):
        answers to forwarded requests that failed leave from it."""
        self._reply_sock = sock

    async def run(self, task_status=trio.TASK_STATUS_IGNORED):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
            except OSError:
                pass
        if any(link.port < PRIVILEGED_PORTS for link in self.links):
            # iods with --secure-port take frames only from ports below 1024.
            if not reserve_port(sock, self.bind):
                log.warning("some iods listen below 1024 (--secure-port?) but no port below "
                            "1024 could be bound for forwarding (not root?): their UDP "
                            "requests may be refused")
                sock.bind((self.bind, 0))
        else:
            sock.bind((self.bind, 0))
        self._fwd_sock = sock
        try:
            async with trio.open_nursery() as nursery:
                for i, link in enumerate(self.links):
                    nursery.start_soon(link.run)
                    nursery.start_soon(self._purger, i)
                nursery.start_soon(self._receive_forward_answers)
                with trio.move_on_after(self.startup_wait):
                    for link in self.links:
                        await link.connected.wait()
                missing = [link.name for link in self.links if not link.up]
                if missing:
                    log.warning("serving with iods unreachable: %s (their stripes get JUKEBOX "
                                "until they answer)", ", ".join(missing))
                task_status.started(self)
        finally:
            self._fwd_sock = None
            sock.close()

    def status(self):
        """For logs and `nfsp status`."""
        return {"layout_gen": self.layout_gen, "stripe_unit": self.stripe_unit,
                "verifier": self._verifier.hex(),
                "iods": [{"name": link.name, "state": link.state, "restarts": link.restarts,
                          "timeouts": link.timeouts, "free": link.free, "total": link.total,
                          "purge_pending": len(self._purges[link.index]),
                          "requests": link.requests, "bytes_out": link.bytes_out,
                          "bytes_in": link.bytes_in, "read_bytes": link.read_bytes,
                          "written_bytes": link.written_bytes,
                          "clock_offset": link.clock_offset,
                          "store": link.store.hex() if link.store is not None else None,
                          "wrong_store": link.wrong_store}
                         for link in self.links],
                "counters": dict(self.counters)}

    def _warn(self, key, fmt, *args, period=60.0):
        """Log a recurring condition at most once per period."""
        now = trio.current_time() if _in_trio() else 0.0
        last = self._warned.get(key)
        if last is not None and now - last < period:
            return
        if len(self._warned) > 1000:
            self._warned.clear()
        self._warned[key] = now
        log.warning(fmt, *args)


def _iod_error(link, reply):
    code = reply.status if reply.status > 0 else errno.EIO
    return OSError(code, f"iod {link.name}: {reply.message or os.strerror(code)}")


def _spoofable(link, client, local):
    """Whether the iod can answer this client as ``local``: we must know the
    address the client wrote to, and a client on the metaserver's own loopback
    is reachable only from an iod on the same host."""
    if local is None or local[0] in ("0.0.0.0", ""):
        return False
    return link.loopback or not client[0].startswith("127.")


def _in_trio():
    try:
        trio.lowlevel.current_task()
        return True
    except RuntimeError:
        return False
