"""One iod as the metaserver sees it: a persistent TCP connection carrying
iodproto frames, requests multiplexed by id, and the iod's health.

The link connects, PINGs (the PONG brings the iod's boot verifier, version and
free space) and then PINGs every ``ping_interval`` seconds. A connection that
closes, a frame that does not verify, or a PONG missing for ``ping_timeout``
takes the link down: waiting requests fail at once with IodUnavailable (the
NFS layer answers JUKEBOX), and the link reconnects with a bounded exponential
backoff. Each transition is logged once, not once per request.

Stamps (replay protection, common/iodproto.py): every request frame is
stamped when it joins the outbox, so sequence numbers leave in order on the
connection however long callers waited for an in-flight token; ``submit``
takes a function of the stamp that builds the frame. Forwarded (UDP) frames
have a sequencer of their own (``forward_stamp``). Both stamp in the iod's
time: its PONGs carry its clock, and the offset from ours is added (so clock
skew between the metaserver and an iod never gets frames refused).

The hot path: frames queued while the writer was busy leave together, in
one sendmsg of all their buffers (a relayed WRITE's data is never joined into
its frame); answers are received into one buffer and decoded from views of it
(iodframes.Verifier), a READ's data trailer straight into the buffer its
caller gave (``sink``: the NFS reply's); both work on the plain socket, as
nfspd/transport.py does, parking in trio only when the socket would block.

Store identity (common/runtime/iodstores.py): every PONG names the data store the
iod serves; an iod whose store is not the one remembered for it stays down
(state "wrong store": JUKEBOX, as for an unreachable iod) while the
heartbeat goes on, so it comes back by itself once its own store is.

An iod listening below 1024 (iod --secure-port) is connected to from a port
below 1024 too (common/runtime/resvport.py, as kernel NFS clients do).

Counters for `nfsp status` and metrics: ``requests`` (request frames sent,
forwards included), ``bytes_out``/``bytes_in`` (frame bytes each way),
``read_bytes``/``written_bytes`` (file data the iod served, counted by
nfspd/iodpath.py).
"""

import errno
import logging
import math
import socket
import time

import trio

from common import iodproto
from common.iodproto import IodProtoError, Op
from nfspd.iodframes import Signer, Verifier
from common.runtime.gather import unsent
from common.runtime.iodclient import open_iod_stream

log = logging.getLogger(__name__)

RECV_MIN = 256 << 10   # bytes the receive buffer has room for at least
SEND_BUFFERS = 512     # at most this many per sendmsg (Linux takes up to IOV_MAX, 1024)
RECV_STREAK = 16       # receives in a row before other tasks get a turn
HEADER_SIZE = iodproto.HEADER.size
_wall = time.time
CLOCK_WARN = 5.0  # seconds of clock difference with an iod worth a log line


class IodUnavailable(OSError):
    """The iod holding the data cannot be reached now (EAGAIN: try again later)."""

    def __init__(self, link, why="down"):
        super().__init__(errno.EAGAIN, f"iod {link.name} is unavailable ({why})")


class Gathering:
    """One wake-up for the task waiting on several slots (IodDataPath._gather):
    ``event`` is set once ``pending`` slots are filled, or as soon as one holds
    a failure (an error status or a lost link), rather than once per slot."""

    __slots__ = ("pending", "event")

    def __init__(self, pending):
        self.pending = pending
        self.event = trio.Event()


class _Slot:
    __slots__ = ("id", "counted", "event", "reply", "error", "done", "gathering", "sink")

    def __init__(self, msg_id, counted, gathering=None, sink=None):
        self.id = msg_id
        self.counted = counted   # holds one of the link's in-flight tokens (until answered)
        self.gathering = gathering
        # Where the answer's data trailer is received (writable memoryviews,
        # filled in order), or None: a buffer of its own.
        self.sink = sink
        self.event = trio.Event() if gathering is None else gathering.event
        self.reply = None
        self.error = None
        self.done = False

    def finish(self):
        """The reply or the error is in: wake whoever waits."""
        self.done = True
        g = self.gathering
        if g is None:
            self.event.set()
            return
        g.pending -= 1
        if g.pending <= 0 or self.error is not None or self.reply.op != Op.REPLY \
                or self.reply.status:
            g.event.set()


class IodLink:
    """``ids`` is an iterator of request ids shared by every link (ids unique
    per metaserver); ``on_change(link)`` is called when the link goes up or
    down or the iod's boot verifier changes."""

    def __init__(self, index, host, port, keys, ids, on_change=None, *, signer=None,
                 stores=None, connect_timeout=3.0,
                 ping_interval=2.0, ping_timeout=5.0, send_timeout=10.0, backoff_min=0.05,
                 backoff_max=2.0, max_inflight=64):
        self.index = index
        self.host, self.port = host, port
        self.name = f"{host}:{port}"
        self.keys = keys
        self.signer = signer or Signer(keys)
        self._verifier = Verifier(keys)
        self._ids = ids
        self._on_change = on_change or (lambda link: None)
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.send_timeout = send_timeout
        self.backoff_min, self.backoff_max = backoff_min, backoff_max
        self._inflight = trio.Semaphore(max_inflight)
        self.stores = stores     # common/runtime/iodstores.IodStores, or None: no check
        self.store = None        # store id of the last PONG (`nfsp status`)
        self.wrong_store = None  # why its store is refused; the link then stays down
        self.up = False
        self.state = "starting"  # starting -> up <-> down, up|down <-> wrong store
        self.ip = None           # resolved address, for UDP forwarding
        self.udp_addr = None
        self.loopback = False
        self.verifier = None
        self.version = None
        self.free = self.total = None
        self.ds_port = None      # its pNFS data server's TCP port (PONG), None: none
        self.restarts = 0        # verifier changes seen
        self.timeouts = 0
        self.rtt = None          # seconds, PING to PONG, last heartbeat (`nfsp status`)
        self.clock_offset = None  # the iod's wall clock minus ours, from the last PONG
        self.sequencer = iodproto.Sequencer()       # frames on the TCP connection
        self.fwd_sequencer = iodproto.Sequencer()   # frames forwarded over UDP
        self.requests = 0
        self.bytes_out = self.bytes_in = 0
        self.read_bytes = self.written_bytes = 0
        self.reserved_port = None  # whether the last connection came from a port < 1024
        self._stream = None
        self._outbox = []
        self._outbox_ready = trio.Event()
        self._waiting = {}
        self._session_scope = None
        self._lost = None
        self._ever_up = False
        self.connected = trio.Event()  # set the first time the link comes up

    def __repr__(self):
        return f"IodLink(#{self.index} {self.name} {self.state})"

    # -- requests ------------------------------------------------------------

    def next_id(self):
        return next(self._ids)

    async def submit(self, msg_id, frame, gathering=None, sink=None):
        """Queue ``frame`` (carrying request id ``msg_id``) for sending and
        return the slot its answer will fill; several submitted at once travel
        together and are answered in parallel. ``frame`` is bytes, or a
        function of a stamp (keyword ``stamp``) returning them, called once
        the frame's turn has come; a frame may be a list of buffers
        (Signer.write_parts), sent without joining them. Every slot must be given back with
        release(). Raises IodUnavailable when the link is down. With a
        Gathering, its event (counting this slot) is the slot's event. With a
        ``sink`` (a list of writable memoryviews), the answer's data is
        received straight into them, in order, when it fits (its ``data`` is
        then the list of the views filled); otherwise ``data`` is a buffer
        of its own, which the caller refuses or copies."""
        if not self.up:
            raise IodUnavailable(self)
        try:
            self._inflight.acquire_nowait()
        except trio.WouldBlock:
            await self._inflight.acquire()
        if not self.up or self._stream is None:
            self._inflight.release()
            raise IodUnavailable(self)
        if not isinstance(frame, (bytes, bytearray, list)):
            try:
                frame = frame(stamp=self.sequencer.stamp_list(time.time()))
            except BaseException:
                self._inflight.release()
                raise
        self.requests += 1
        return self._enqueue(msg_id, frame, True, gathering, sink)

    def forward_stamp(self):
        """A stamp for a frame forwarded to this iod over UDP (Sequencer.stamp_list)."""
        seq = self.fwd_sequencer
        seq.seq += 1
        return [seq.sender, seq.seq, _wall() + seq.offset]

    def _enqueue(self, msg_id, frame, counted, gathering=None, sink=None):
        slot = _Slot(msg_id, counted, gathering, sink)
        self._waiting[msg_id] = slot
        # The writer task sends whole frames back to back (several per system
        # call when requests come together): a caller that gives up only stops
        # waiting, it never cuts a frame short.
        if type(frame) is list:
            self._outbox += frame
        else:
            self._outbox.append(frame)
        self._outbox_ready.set()
        return slot

    def release(self, slot):
        if self._waiting.get(slot.id) is slot:
            del self._waiting[slot.id]
        if slot.counted:
            slot.counted = False
            self._inflight.release()

    def answer(self, slot):
        """The answer in a filled slot, or the error that ended the wait."""
        if slot.error is not None:
            raise slot.error
        return slot.reply

    async def call(self, msg_id, frame, timeout, what="request"):
        """submit, wait at most ``timeout`` seconds (OSError ETIMEDOUT), release."""
        slot = None
        try:
            with trio.move_on_after(timeout):
                slot = await self.submit(msg_id, frame)
                await slot.event.wait()
                return self.answer(slot)
            self.timed_out(what, timeout)
        finally:
            if slot is not None:
                self.release(slot)

    def timed_out(self, what, timeout):
        self.timeouts += 1
        raise OSError(errno.ETIMEDOUT, f"iod {self.name}: no answer to a {what} "
                                       f"within {timeout:g}s")

    async def _writer(self, sock):
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready = trio.Event()
            bufs, self._outbox = self._outbox, []
            if not bufs:
                continue
            self.bytes_out += sum(map(len, bufs))
            # Whole frames back to back, gathered by sendmsg (a relayed
            # WRITE's data is copied once, by the kernel).
            try:
                sent = sock.sendmsg(bufs[:SEND_BUFFERS])
            except BlockingIOError:
                sent = 0
            except OSError as e:
                self._lose(f"send failed: {e}")
                return
            bufs = unsent(bufs, sent)
            if not bufs:
                continue
            with trio.move_on_after(self.send_timeout) as timer:
                while bufs:
                    await trio.lowlevel.wait_writable(sock)
                    try:
                        sent = sock.sendmsg(bufs[:SEND_BUFFERS])
                    except BlockingIOError:
                        continue
                    except OSError as e:
                        self._lose(f"send failed: {e}")
                        return
                    bufs = unsent(bufs, sent)
            if timer.cancelled_caught:
                self._lose(f"the iod took no data for {self.send_timeout:g}s")
                return

    # -- the connection ----------------------------------------------------------

    async def run(self):
        """Keep the link up, forever (cancel to stop)."""
        backoff = self.backoff_min
        while True:
            started = trio.current_time()
            try:
                reason = await self._session()
            except OSError as e:
                reason = e.strerror or str(e)
            except IodProtoError as e:
                reason = f"bad frame: {e}"
            self._set_down(reason)
            if trio.current_time() - started > 2 * self.backoff_max:
                backoff = self.backoff_min
            await trio.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max)

    async def _connect(self):
        with trio.fail_after(self.connect_timeout):
            infos = await trio.socket.getaddrinfo(self.host, self.port, socket.AF_INET,
                                                  socket.SOCK_STREAM)
            if not infos:
                raise OSError(errno.EHOSTUNREACH, f"cannot resolve {self.host}")
            ip = infos[0][4][0]
            stream, reserved = await open_iod_stream(ip, self.port)
        if reserved is False and self.reserved_port is not False:
            log.warning("iod %s listens below 1024 (--secure-port?) but no port below 1024 "
                        "could be bound here (not root?): connecting from an ordinary port",
                        self.name)
        self.reserved_port = reserved
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return ip, stream

    async def _session(self):
        try:
            ip, stream = await self._connect()
        except trio.TooSlowError:
            return f"connect timed out after {self.connect_timeout:g}s"
        self.ip, self.udp_addr = ip, (ip, self.port)
        self.loopback = ip.startswith("127.")
        self._lost = None
        # The plain socket, as nfspd/transport.py uses its own: a trio stream
        # or socket method yields to the scheduler on every call, which costs
        # more than the call when frames come and go in the thousands.
        sock = socket.socket(fileno=stream.socket.detach())
        sock.setblocking(False)
        try:
            self._stream = sock
            async with trio.open_nursery() as nursery:
                self._session_scope = nursery.cancel_scope
                nursery.start_soon(self._receive, sock)
                nursery.start_soon(self._writer, sock)
                nursery.start_soon(self._heartbeat)
        finally:
            self._session_scope = None
            self._stream = None
            self._outbox = []
            self._fail_waiting()
            trio.lowlevel.notify_closing(sock)
            sock.close()
        return self._lost or "connection closed"

    def _lose(self, why):
        if self._lost is None:
            self._lost = why
        if self._session_scope is not None:
            self._session_scope.cancel()

    def _fail_waiting(self):
        for slot in self._waiting.values():
            if not slot.done:
                slot.error = IodUnavailable(self, "connection lost")
                self._answered(slot)
        self._waiting.clear()

    def _answered(self, slot):
        """The reply (or the error) is in the slot. Its in-flight token goes
        back now, not at release(): the token bounds the requests the iod has
        still to answer, and a caller gathering many pieces (a 1 MiB READ is
        16 of them) keeps its slots until the last one is answered. Tokens
        kept that long are a hold-and-wait deadlock: concurrent gatherers,
        each holding part of a link's tokens and waiting for more, until the
        first one's timeout (relayed READs stalled 10 s, then JUKEBOX)."""
        if slot.counted:
            slot.counted = False
            self._inflight.release()
        slot.finish()

    async def _receive(self, sock):
        try:
            await self._read_frames(sock)
        except IodProtoError as e:
            self._lose(f"bad frame from the iod: {e} (same --key on both sides?)")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            self._lose(f"connection lost: {e}")

    async def _read_frames(self, sock):
        """Frames from the iod, received into one buffer and decoded from
        views of it. A REPLY's data trailer goes where its slot's sink says
        (the NFS reply's buffer): what of it came with the frame is copied
        there, the rest is received straight into it, so a relayed MiB is
        never copied in Python but for that first part."""
        decode = self._verifier.decode_signed
        waiting = self._waiting
        buf = bytearray(RECV_MIN)
        start = end = 0      # buf[start:end]: received, not yet decoded
        received_before = self.bytes_in
        need = 0             # bytes of the frame at start up to its MAC, once its header is in
        streak = 0           # receives since this task last let others run
        while True:
            if len(buf) - start < max(need, RECV_MIN):
                # Room for the frame being received (frame_sizes bounds it)
                # and a good receive after it; only its first part moves.
                size = max(len(buf), need + RECV_MIN)
                if size > len(buf):
                    grown = bytearray(size)
                    grown[:end - start] = memoryview(buf)[start:end]
                    buf = grown
                else:
                    buf[:end - start] = buf[start:end]
                end -= start
                start = 0
            try:
                with memoryview(buf) as view:
                    n = sock.recv_into(view[end:])
            except BlockingIOError:
                streak = 0
                await trio.lowlevel.wait_readable(sock)
                continue
            if not n:
                self._closed(silent=self.bytes_in == received_before)
                return
            self.bytes_in += n
            end += n
            while end - start >= HEADER_SIZE:
                need, data_len = iodproto.frame_sizes(bytes(buf[start:start + HEADER_SIZE]))
                if end - start < need:
                    break
                with memoryview(buf) as view:
                    msg = decode(view[start:start + need])
                start += need
                need = 0
                if data_len:
                    slot = waiting.get(msg.id)
                    targets = _scatter(slot.sink if slot is not None else None, data_len)
                    if targets is None:
                        # Not wanted any more, or not where it should fit
                        # (the caller refuses it: it knows what it asked).
                        msg.data = memoryview(bytearray(data_len))
                        targets = [msg.data]
                    else:
                        msg.data = targets
                    for target in targets:
                        have = min(end - start, len(target))
                        with memoryview(buf) as view:
                            target[:have] = view[start:start + have]
                        start += have
                        if have < len(target) and not await self._receive_into(
                                sock, target[have:]):
                            return
                slot = waiting.get(msg.id)
                if slot is not None and not slot.done and (msg.op == Op.REPLY
                                                           or msg.op == Op.PONG):
                    slot.reply = msg
                    self._answered(slot)
            if start == end:
                start = end = 0
            streak += 1
            if streak >= RECV_STREAK:
                # An iod that keeps the socket full must not keep the
                # rest of the server from running.
                streak = 0
                await trio.lowlevel.checkpoint()

    async def _receive_into(self, sock, view):
        """Fill ``view`` from the socket; False once the iod closed it."""
        got, size = 0, len(view)
        while got < size:
            try:
                n = sock.recv_into(view[got:])
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            if not n:
                self._closed()
                return False
            self.bytes_in += n
            got += n
        return True

    def _closed(self, silent=False):
        if self.reserved_port is False:
            why = (" (it takes connections only from ports below 1024 with --secure-port: "
                   "is nfspd root?)")
        elif silent:
            # An iod of another protocol version closes at our first frame
            # (its log says which version it got).
            why = (" before answering anything (an iod of another release, speaking another "
                   "iod protocol version? see its log)")
        else:
            why = ""
        self._lose("connection closed by the iod" + why)

    async def _heartbeat(self):
        while True:
            msg_id = self.next_id()
            pong = None
            sent = trio.current_time()
            wall_sent = time.time()
            slot = self._enqueue(msg_id, self.signer.ping(msg_id), counted=False)
            try:
                with trio.move_on_after(self.ping_timeout):
                    await slot.event.wait()
                    if slot.error is not None:
                        return
                    pong = slot.reply
            finally:
                self.release(slot)
            if pong is None or pong.op != Op.PONG:
                self._lose(f"no PONG within {self.ping_timeout:g}s")
                return
            self.rtt = trio.current_time() - sent
            if pong.time is not None:
                self._set_clock(pong.time - (wall_sent + time.time()) / 2)
            if await self._store_accepted(pong):
                self._set_up(pong)
            await trio.sleep(self.ping_interval)

    # -- state -------------------------------------------------------------------

    def _set_clock(self, offset):
        before = self.clock_offset
        self.clock_offset = offset
        self.sequencer.offset = self.fwd_sequencer.offset = offset
        if abs(offset) >= CLOCK_WARN and (before is None or abs(before) < CLOCK_WARN / 2):
            log.warning("iod %s (#%d): its clock is %+.1f s off ours; frames to it are stamped "
                        "in its time, but run NTP on every node", self.name, self.index, offset)

    async def _store_accepted(self, pong):
        """Its stripes are only in its own store: any other would read as
        zeros. The heartbeat goes on, so the link comes back by itself once
        the right disk is mounted and the iod restarted."""
        self.store = pong.store
        stores = self.stores
        if stores is None:
            return True
        if stores.would_remember(self.name, pong.store):
            # A first sight writes (and fsyncs) iod-stores.json: not on the event loop.
            why = await trio.to_thread.run_sync(stores.check, self.name, pong.store)
        else:
            why = stores.check(self.name, pong.store)
        if why is None:
            if self.wrong_store is not None:
                self.wrong_store = None
                log.warning("iod %s (#%d) serves its own data store again", self.name,
                            self.index)
            return True
        if why != self.wrong_store:
            self.wrong_store = why
            log.error("iod %s (#%d) %s; it stays down (JUKEBOX: clients wait). Mount or "
                      "restore its disk and restart the iod; if its data is really gone, run "
                      "`nfsp accept-iod-store %s` (then `nfsp scrub`)", self.name, self.index,
                      why, self.name)
        if self.state != "wrong store":
            was_up = self.up
            self.up, self.state = False, "wrong store"
            if was_up:
                self._on_change(self)
        return False

    def _set_up(self, pong):
        self.version, self.free, self.total = pong.version, pong.free, pong.total
        self.ds_port = pong.ds_port
        changed = pong.verifier != self.verifier
        restarted = changed and self.verifier is not None
        if restarted:
            self.restarts += 1
        self.verifier = pong.verifier
        if not self.up:
            self.up = True
            if not self._ever_up:
                self._ever_up = True
                log.info("iod %s (#%d) up: version %s, %s free", self.name, self.index,
                         pong.version, _human(pong.free))
            else:
                log.warning("iod %s (#%d) is back%s", self.name, self.index,
                            " (restarted: new boot verifier, clients will resend unstable "
                            "writes)" if restarted else "")
            self.state = "up"
            self.connected.set()
            self._on_change(self)
        elif changed:
            log.warning("iod %s (#%d) restarted between two PINGs (new boot verifier)",
                        self.name, self.index)
            self._on_change(self)

    def note_verifier(self, verifier):
        """A REPLY's verifier: an iod that restarted under a live link shows here first."""
        if verifier is not None and self.verifier is not None and verifier != self.verifier:
            self.verifier = verifier
            self.restarts += 1
            log.warning("iod %s (#%d) answered with a new boot verifier (restarted)",
                        self.name, self.index)
            self._on_change(self)

    def _set_down(self, reason):
        was = self.state
        self.up = False
        if was == "down":
            return
        self.state = "down"
        if was == "wrong store":
            # Already down for its clients (and logged): only unreachable now.
            log.info("iod %s (#%d), refused for its data store, is unreachable: %s",
                     self.name, self.index, reason)
            return
        if was == "starting":
            log.warning("iod %s (#%d) not reachable: %s (retrying in the background)",
                        self.name, self.index, reason)
        else:
            log.warning("iod %s (#%d) is unavailable: %s; requests for its stripes get "
                        "JUKEBOX (v3) or no reply (v2) until it is back", self.name, self.index,
                        reason)
            self._on_change(self)


def _scatter(sink, size):
    """The views of ``sink`` (a list of memoryviews) that ``size`` bytes fill,
    the last one cut; None when they do not fit (or no sink)."""
    if sink is None:
        return None
    out = []
    for view in sink:
        if size <= 0:
            break
        if len(view) > size:
            view = view[:size]
        out.append(view)
        size -= len(view)
    return out if size <= 0 else None


def _human(n):
    if n is None:
        return "?"
    if n <= 0:
        return "0 B"
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    i = min(int(math.log(n, 1024)), len(units) - 1)
    return f"{n / 1024 ** i:.1f} {units[i]}"
