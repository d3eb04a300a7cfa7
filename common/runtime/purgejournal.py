"""The purge journal: pending (inode, seed) purges on the metaserver's disk.

The metaserver appends one record per file whose last link went away and makes
it durable before the client gets its REMOVE answer; unlinkd reads it, sends
the records to every iod and trims it once every iod has acknowledged them. So
a pending purge survives a crash of either process and an iod down for hours.

Layout: a directory of segments ``purge-<first seq, 16 hex>.seg``. A record's
sequence number is its segment's first seq plus its index; a record is::

    ino u64 | seed u64 | crc32(seq | ino | seed) u32        (20 bytes, big-endian)

A segment has one of two forms. Preallocated (the default): created full of
zeros and written in place, so the fdatasync after each append flushes one
data block and no size or extent change: no file system journal commit per
REMOVE (on an idle ext4 VM ~100 us instead of 130-230 us for an append).
Appended: created empty and grown record by record, so that each fdatasync
commits the file system's journal, and with it every change made on that
file system before the records were written. Where the exports share an
ext3/ext4 (with its journal) with the purge journal, the group commit makes
the records durable first and the removals with them, in one commit instead
of two (nfspd/fs/commit.py). The first record that does not verify (zeros,
a torn write, the end of the file) ends a segment. The writer never reopens a
segment: each writer's first record, each full segment and each change of
form begins a new one, so every segment but the newest is final and the
reader never mistakes a torn tail for a record still being written. Only
unlinkd deletes segments, and never the newest one, so sequence numbers keep
increasing across restarts.

A record is written before it is durable, and a reader of the page cache sees
it at once. A reader that acts on records (unlinkd: ``durable=True``) makes
them durable itself before it reports them: an fdatasync of their segment,
which on an appended segment also commits the removals written before them.

unlinkd's per-iod progress is a watermark (every record below it acknowledged),
kept in ``progress`` (JSON, replaced atomically). Losing it only means resending:
purging is idempotent, and the seed makes a purged (inode, seed) pair unique
forever.
"""

import errno
import fcntl
import json
import os
import re
import struct
import tempfile
import time
import zlib

RECORD = struct.Struct(">QQI")
_CRC_INPUT = struct.Struct(">QQQ")
SEGMENT_RECORDS = 16384  # 320 KiB per segment: the unit of trimming
_SEGMENT = re.compile(r"^purge-([0-9a-f]{16})\.seg$")
PROGRESS = "progress"
WRITER_LOCK = "writer.lock"


class JournalError(OSError):
    pass


def encode_record(seq, ino, seed):
    return RECORD.pack(ino, seed, zlib.crc32(_CRC_INPUT.pack(seq, ino, seed)))


def decode_record(seq, data):
    """(ino, seed), or None if these 20 bytes are not the record number ``seq``."""
    ino, seed, crc = RECORD.unpack(data)
    if seed == 0 or zlib.crc32(_CRC_INPUT.pack(seq, ino, seed)) != crc:
        return None
    return ino, seed


def segment_name(first):
    return f"purge-{first:016x}.seg"


def list_segments(directory):
    """[(first seq, path)] in seq order."""
    out = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return out
    for name in names:
        m = _SEGMENT.match(name)
        if m:
            out.append((int(m.group(1), 16), os.path.join(directory, name)))
    out.sort()
    return out


def _valid_records(path, first, start=0, limit=None):
    """How many records of the segment verify, counting from index ``start``
    (which the caller already knows to be valid up to)."""
    n = start
    try:
        with open(path, "rb") as f:
            f.seek(start * RECORD.size)
            while limit is None or n < limit:
                chunk = f.read(RECORD.size * 4096)
                if not chunk:
                    break
                for off in range(0, len(chunk) - RECORD.size + 1, RECORD.size):
                    if decode_record(first + n, chunk[off:off + RECORD.size]) is None:
                        return n
                    n += 1
                if len(chunk) % RECORD.size:
                    break
    except FileNotFoundError:
        pass
    return n


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JournalWriter:
    """The metaserver's end: append() returns once the record is on disk.

    One writer per journal (an flock on writer.lock says so; a second nfspd on
    the same state directory fails instead of interleaving records)."""

    def __init__(self, directory, segment_records=SEGMENT_RECORDS, appending=False):
        self.directory = os.path.abspath(directory)
        self.segment_records = segment_records
        self._appending = appending
        created = not os.path.isdir(self.directory)
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        if created:
            fsync_dir(os.path.dirname(self.directory))
        self._lock_fd = os.open(os.path.join(self.directory, WRITER_LOCK),
                                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise JournalError(errno.EBUSY, f"{self.directory}: another process writes this "
                                            f"purge journal (is another nfspd running?)") from None
        self._fd = None
        self._unsynced = False
        for name in os.listdir(self.directory):
            if name.startswith(".new-"):  # a segment we died creating
                os.unlink(os.path.join(self.directory, name))
        segments = list_segments(self.directory)
        if segments:
            first, path = segments[-1]
            nxt = first + _valid_records(path, first)
        else:
            # A fresh journal starts at the time in microseconds: if a journal
            # directory is ever wiped while unlinkd's progress file survives
            # elsewhere, the new records still lie above every old watermark.
            nxt = time.time_ns() // 1000
        # The segment is made at the first append, in the form chosen by then.
        self._first, self._index = nxt, 0

    @property
    def appending(self):
        """Whether the segment being written is appended (grows) rather than
        preallocated."""
        return self._appending

    def set_appending(self, appending):
        """Write appended or preallocated segments from now on (a new segment
        begins if the form changes)."""
        if appending != self._appending:
            self._appending = appending
            if self._fd is not None:
                self._open_segment(self.next_seq)

    def _open_segment(self, first):
        if self._fd is not None:
            if self._unsynced:
                os.fdatasync(self._fd)
                self._unsynced = False
            os.close(self._fd)
            self._fd = None
        size = 0 if self._appending else self.segment_records * RECORD.size
        fd, tmp = tempfile.mkstemp(prefix=".new-", suffix=".seg", dir=self.directory)
        try:
            # Written, not fallocated: unwritten extents would turn every later
            # in-place write into a metadata change for fdatasync to commit.
            view = memoryview(bytes(size))
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            os.rename(tmp, os.path.join(self.directory, segment_name(first)))
        except BaseException:
            os.close(fd)
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        fsync_dir(self.directory)
        self._fd = fd
        self._first = first
        self._index = 0

    @property
    def next_seq(self):
        return self._first + self._index

    def append(self, ino, seed, sync=True):
        """Make the purge of (ino, seed) durable (with ``sync`` False: once
        sync() is next called, so that one flush covers many records);
        returns its sequence number."""
        if not (0 <= ino < 1 << 64 and 0 < seed < 1 << 64):
            raise ValueError(f"bad purge record ({ino}, {seed})")
        if self._fd is None or self._index >= self.segment_records:
            self._open_segment(self.next_seq)
        seq = self.next_seq
        data = encode_record(seq, ino, seed)
        if os.pwrite(self._fd, data, self._index * RECORD.size) != len(data):
            raise JournalError(errno.EIO, "short journal write")
        self._index += 1
        if sync:
            os.fdatasync(self._fd)
        else:
            self._unsynced = True
        return seq

    def sync(self):
        """Make every record appended so far durable."""
        if self._unsynced:
            os.fdatasync(self._fd)
            self._unsynced = False

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


class JournalReader:
    """unlinkd's (and scrub's) end: which records exist, and their contents.

    refresh() rescans (cheap: the newest segment from where it was left);
    segments have ranges [first, end) with end capped by the next segment's
    first, so a torn tail or a damaged record merely shortens a final segment."""

    def __init__(self, directory, durable=False):
        self.directory = os.path.abspath(directory)
        self.durable = durable
        self._final = {}     # path -> valid records of a segment that has a successor
        self._newest = None  # (path, valid records so far)
        self.segments = []   # [(first, end, path)]

    def refresh(self):
        """Rescan; returns the tail (one past the last record). With ``durable``,
        records not reported before are made durable first (the module's
        docstring): their segment is fdatasynced after they were read, so the
        sync covers them."""
        listed = list_segments(self.directory)  # before reading: see the class docstring
        segments = []
        for i, (first, path) in enumerate(listed):
            if i + 1 < len(listed):
                valid = self._final.get(path)
                if valid is None:
                    start = self._newest[1] if self._newest and self._newest[0] == path else 0
                    valid = self._new_records(path, first, start)
                    self._final[path] = valid
                end = min(first + valid, listed[i + 1][0])
            else:
                start = self._newest[1] if self._newest and self._newest[0] == path else 0
                valid = self._new_records(path, first, start)
                self._newest = (path, valid)
                end = first + valid
            segments.append((first, max(first, end), path))
        live = {p for _, p in listed}
        for path in list(self._final):
            if path not in live:
                del self._final[path]
        self.segments = segments
        return self.tail

    def _new_records(self, path, first, start):
        valid = _valid_records(path, first, start)
        if self.durable and valid > start:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return valid  # trimmed meanwhile: acknowledged by every iod
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
        return valid

    @property
    def tail(self):
        return self.segments[-1][1] if self.segments else 0

    @property
    def oldest(self):
        return self.segments[0][0] if self.segments else 0

    def read(self, start, stop):
        """The (ino, seed) of the records in [start, stop), in order (gaps left by
        torn segments are skipped)."""
        out = []
        for first, end, path in self.segments:
            lo, hi = max(start, first), min(stop, end)
            if lo >= hi:
                continue
            try:
                with open(path, "rb") as f:
                    f.seek((lo - first) * RECORD.size)
                    data = f.read((hi - lo) * RECORD.size)
            except FileNotFoundError:
                continue  # trimmed meanwhile by unlinkd: acknowledged by every iod
            for i in range(len(data) // RECORD.size):
                rec = decode_record(lo + i, data[i * RECORD.size:(i + 1) * RECORD.size])
                if rec is not None:
                    out.append(rec)
        return out

    def read_batch(self, start, stop, limit):
        """Up to ``limit`` records from [start, stop), skipping gaps (a fresh
        journal starts far above 0): (records, where the next batch starts)."""
        out = []
        pos = start
        for first, end, path in self.segments:
            lo = max(pos, first)
            hi = min(stop, end, lo + limit - len(out))
            if lo >= hi:
                if first >= stop:
                    break
                continue
            out += self.read(lo, hi)
            pos = hi
            if len(out) >= limit:
                return out, pos
        return out, stop

    def pending(self):
        """Every (ino, seed) still in the journal (scrub: these are in flight)."""
        self.refresh()
        return self.read(self.oldest, self.tail)

    def trim(self, upto):
        """Delete the segments whose records all lie below ``upto`` (acknowledged
        by every iod), except the newest, which the writer may still fill."""
        removed = 0
        for first, end, path in self.segments[:-1]:
            if end > upto:
                break
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            self._final.pop(path, None)
            removed += 1
        if removed:
            self.segments = self.segments[removed:]
            fsync_dir(self.directory)
        return removed


def load_progress(directory):
    """{iod name: watermark}; {} when absent or unreadable (we then resend, which
    is safe)."""
    path = os.path.join(directory, PROGRESS)
    try:
        with open(path) as f:
            data = json.load(f)
        acked = data["acked"]
        if not isinstance(acked, dict) or not all(
                isinstance(k, str) and type(v) is int and v >= 0 for k, v in acked.items()):
            raise ValueError("bad acked map")
        return dict(acked)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def save_progress(directory, acked):
    path = os.path.join(directory, PROGRESS)
    fd, tmp = tempfile.mkstemp(prefix=".progress-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"version": 1, "acked": acked}, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)


def backlog(directory, iod_names):
    """{iod name: records not yet acknowledged by it} (tools, tests)."""
    reader = JournalReader(directory)
    tail = reader.refresh()
    acked = load_progress(directory)
    out = {}
    for name in iod_names:
        mark = acked.get(name, 0)
        if mark > tail:  # stale (see Unlinkd): it will resend from the oldest record
            mark = 0
        out[name] = tail - max(mark, reader.oldest)
    return out
