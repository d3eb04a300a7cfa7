"""The purge journal (common/runtime/purgejournal.py): records, segments, torn tails,
trimming, progress; and the batching rule (unlinkd/batching.py)."""

import errno
import json
import os

import pytest

from common.runtime import purgejournal
from unlinkd.batching import Batcher
from common.runtime.purgejournal import RECORD, JournalReader, JournalWriter


def pairs(n, base=1):
    return [(base + i, 0x1000 + base + i) for i in range(n)]


def write_all(directory, items, **kw):
    w = JournalWriter(directory, **kw)
    seqs = [w.append(ino, seed) for ino, seed in items]
    w.close()
    return seqs


def test_records_verify_only_at_their_own_position():
    rec = purgejournal.encode_record(7, 42, 99)
    assert len(rec) == RECORD.size == 20
    assert purgejournal.decode_record(7, rec) == (42, 99)
    assert purgejournal.decode_record(8, rec) is None  # a record copied elsewhere is not valid
    assert purgejournal.decode_record(7, bytes(20)) is None  # preallocated zeros end a segment
    flipped = bytearray(rec)
    flipped[3] ^= 1
    assert purgejournal.decode_record(7, bytes(flipped)) is None


def test_appended_records_are_read_back_in_order(tmp_path):
    d = str(tmp_path / "j")
    seqs = write_all(d, pairs(10))
    assert seqs == list(range(seqs[0], seqs[0] + 10))
    r = JournalReader(d)
    assert r.refresh() == seqs[-1] + 1
    assert r.read(r.oldest, r.tail) == pairs(10)
    assert r.read(seqs[3], seqs[6]) == pairs(10)[3:6]


def test_a_group_commits_records_flushed_together_are_read_back_across_segments(tmp_path):
    # The group commit appends a batch of purges, then flushes once; a
    # segment filled meanwhile is flushed before the next is started.
    d = str(tmp_path / "j")
    w = JournalWriter(d, segment_records=4)
    seqs = [w.append(ino, seed, sync=False) for ino, seed in pairs(10)]
    w.sync()
    w.close()
    assert seqs == list(range(seqs[0], seqs[0] + 10))
    r = JournalReader(d)
    r.refresh()
    assert r.read(r.oldest, r.tail) == pairs(10)


def test_rejects_seed_zero_and_out_of_range(tmp_path):
    w = JournalWriter(str(tmp_path / "j"))
    with pytest.raises(ValueError):
        w.append(1, 0)
    with pytest.raises(ValueError):
        w.append(1 << 64, 1)
    w.close()


def test_each_writers_first_record_begins_a_new_segment_continuing_the_numbers(tmp_path):
    d = str(tmp_path / "j")
    first = write_all(d, pairs(3))
    write_all(d, [])  # a writer that appended nothing made nothing
    second = write_all(d, pairs(2, base=100))
    assert second[0] == first[-1] + 1
    assert len(purgejournal.list_segments(d)) == 2
    r = JournalReader(d)
    r.refresh()
    assert r.read(r.oldest, r.tail) == pairs(3) + pairs(2, base=100)


def test_full_segments_rotate(tmp_path):
    d = str(tmp_path / "j")
    write_all(d, pairs(10), segment_records=4)
    assert len(purgejournal.list_segments(d)) == 3
    r = JournalReader(d)
    r.refresh()
    assert r.read(r.oldest, r.tail) == pairs(10)


def test_a_torn_tail_ends_its_segment_and_the_next_writer_carries_on(tmp_path):
    d = str(tmp_path / "j")
    seqs = write_all(d, pairs(5))
    (_, path), = purgejournal.list_segments(d)
    with open(path, "r+b") as f:  # a crash in the middle of writing record 3
        f.seek(3 * RECORD.size)
        f.write(b"\x01\x02\x03")
    more = write_all(d, pairs(2, base=50))
    assert more[0] == seqs[3]  # numbering resumes where the valid records end
    r = JournalReader(d)
    r.refresh()
    assert r.read(r.oldest, r.tail) == pairs(3) + pairs(2, base=50)


def test_an_appended_segment_grows_by_each_record_and_reads_like_a_preallocated_one(tmp_path):
    d = str(tmp_path / "j")
    w = JournalWriter(d, segment_records=4, appending=True)
    sizes = []
    for ino, seed in pairs(6):
        w.append(ino, seed, sync=False)
        sizes.append(os.path.getsize(purgejournal.list_segments(d)[-1][1]))
    w.sync()
    w.close()
    assert sizes == [20, 40, 60, 80, 20, 40]  # the fifth record began a new segment
    r = JournalReader(d)
    r.refresh()
    assert r.read(r.oldest, r.tail) == pairs(6)


def test_a_change_of_form_begins_a_new_segment_and_the_numbers_carry_on(tmp_path):
    d = str(tmp_path / "j")
    w = JournalWriter(d, appending=True)
    w.set_appending(False)  # before any record: no segment made in the first form
    assert not w.appending
    seqs = [w.append(ino, seed) for ino, seed in pairs(2)]
    w.set_appending(True)
    w.set_appending(True)  # no change: no new segment
    assert w.appending
    seqs += [w.append(ino, seed) for ino, seed in pairs(2, base=50)]
    w.close()
    assert seqs == list(range(seqs[0], seqs[0] + 4))
    (_, old), (_, new) = purgejournal.list_segments(d)
    assert os.path.getsize(old) == purgejournal.SEGMENT_RECORDS * RECORD.size
    assert os.path.getsize(new) == 2 * RECORD.size
    r = JournalReader(d)
    r.refresh()
    assert r.read(r.oldest, r.tail) == pairs(2) + pairs(2, base=50)


def test_a_durable_reader_syncs_records_before_it_first_reports_them(tmp_path, monkeypatch):
    # nfspd may write a batch's records before the flush that makes them,
    # and the removals before them, durable (nfspd/fs/commit.py): unlinkd
    # must not purge on a record a crash could still take back.
    d = str(tmp_path / "j")
    w = JournalWriter(d, segment_records=2, appending=True)
    synced, late = [], []
    real = os.fdatasync

    def fdatasync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        synced.append(path)
        while late and path == newest:  # a record written while its segment syncs
            w.append(*late.pop(), sync=False)
        real(fd)
    monkeypatch.setattr(purgejournal.os, "fdatasync", fdatasync)
    newest = None
    for ino, seed in pairs(3):  # a full segment and one record in the next
        w.append(ino, seed, sync=False)
    (_, full), (_, newest) = purgejournal.list_segments(d)
    synced.clear()  # (the writer's own, when the first segment filled)

    r = JournalReader(d, durable=True)
    late.append((4, 0x1004))
    tail = r.refresh()
    assert synced == [full, newest]
    assert r.read(r.oldest, tail) == pairs(3)  # not the record written during the sync
    assert r.refresh() == tail + 1 and synced[2:] == [newest]
    assert r.read(r.oldest, r.tail) == pairs(4)
    r.refresh()
    assert len(synced) == 3  # nothing new: nothing synced
    JournalReader(d).refresh()
    assert len(synced) == 3  # a reader that only looks syncs nothing
    w.close()


def test_reader_follows_a_live_writer(tmp_path):
    d = str(tmp_path / "j")
    w = JournalWriter(d, segment_records=3)
    r = JournalReader(d)
    start = r.refresh()
    assert r.read(start, r.tail) == []
    got = []
    for i, (ino, seed) in enumerate(pairs(8)):
        w.append(ino, seed)
        if i % 3 == 1:
            tail = r.refresh()
            got += r.read(start, tail)
            start = tail
    got += r.read(start, r.refresh())
    assert got == pairs(8)
    w.close()


def test_a_second_writer_is_refused(tmp_path):
    d = str(tmp_path / "j")
    w = JournalWriter(d)
    with pytest.raises(purgejournal.JournalError) as e:
        JournalWriter(d)
    assert e.value.errno == errno.EBUSY
    w.close()
    JournalWriter(d).close()


def test_trim_keeps_unacknowledged_segments_and_always_the_newest(tmp_path):
    d = str(tmp_path / "j")
    seqs = write_all(d, pairs(10), segment_records=4)  # segments of 4, 4, 2
    r = JournalReader(d)
    r.refresh()
    assert r.trim(seqs[0] + 3) == 0            # first segment not fully acknowledged
    assert r.trim(seqs[0] + 4) == 1
    assert r.read(r.oldest, r.tail) == pairs(10)[4:]
    assert r.trim(r.tail) == 1                 # the newest (writer's) segment stays
    assert len(purgejournal.list_segments(d)) == 1
    assert r.read(r.oldest, r.tail) == pairs(10)[8:]


def test_batches_are_read_across_segments_and_over_the_gap_below_a_fresh_journal(tmp_path):
    d = str(tmp_path / "j")
    seqs = write_all(d, pairs(10), segment_records=4)
    r = JournalReader(d)
    r.refresh()
    got, nxt = r.read_batch(0, r.tail, 3)          # from 0: far below the first record
    assert got == pairs(3) and nxt == seqs[3]
    got, nxt = r.read_batch(nxt, r.tail, 6)        # across two segment boundaries
    assert got == pairs(10)[3:9] and nxt == seqs[9]
    got, nxt = r.read_batch(nxt, seqs[9], 6)       # nothing released beyond
    assert got == [] and nxt == seqs[9]
    got, nxt = r.read_batch(nxt, r.tail + 5, 6)    # the rest, and nothing is lost beyond it
    assert got == pairs(10)[9:] and nxt == r.tail + 5


def test_fresh_journal_numbers_lie_above_any_old_watermark(tmp_path):
    d = str(tmp_path / "j")
    seqs = write_all(d, pairs(3))
    for _, path in purgejournal.list_segments(d):
        os.unlink(path)
    again = write_all(d, pairs(1))
    assert again[0] > seqs[-1]


def test_progress_round_trip_and_damage_means_resend(tmp_path):
    d = str(tmp_path)
    assert purgejournal.load_progress(d) == {}
    purgejournal.save_progress(d, {"a:1": 5, "b:2": 7})
    assert purgejournal.load_progress(d) == {"a:1": 5, "b:2": 7}
    with open(os.path.join(d, purgejournal.PROGRESS), "w") as f:
        json.dump({"acked": {"a:1": -1}}, f)
    assert purgejournal.load_progress(d) == {}
    with open(os.path.join(d, purgejournal.PROGRESS), "w") as f:
        f.write("{trunc")
    assert purgejournal.load_progress(d) == {}


def test_backlog_per_iod(tmp_path):
    d = str(tmp_path / "j")
    seqs = write_all(d, pairs(6))
    purgejournal.save_progress(d, {"a:1": seqs[4], "b:1": seqs[-1] + 1, "stale:1": seqs[-1] + 99})
    assert purgejournal.backlog(d, ["a:1", "b:1", "new:1", "stale:1"]) == {
        "a:1": 2, "b:1": 0, "new:1": 6, "stale:1": 6}


# --- batching ------------------------------------------------------------------------


def test_full_batches_go_at_once_remainder_waits():
    b = Batcher(batch_max=10, batch_delay=1.0)
    b.arrived(25, now=0.0)
    assert b.release(now=0.0)
    assert b.released == 20 and b.waiting == 5
    assert not b.release(now=0.5)
    assert b.deadline() == 1.0


def test_quiet_period_releases_a_partial_batch():
    b = Batcher(batch_max=10, batch_delay=1.0)
    b.arrived(3, now=0.0)
    assert not b.release(now=0.9)
    b.arrived(4, now=0.9)          # a new arrival restarts the inactivity delay
    assert not b.release(now=1.5)
    assert b.deadline() == pytest.approx(1.9)
    assert b.release(now=1.9)
    assert b.released == 4 and b.deadline() is None


def test_a_steady_trickle_still_goes_out_within_max_age():
    b = Batcher(batch_max=1000, batch_delay=1.0, max_age=5.0)
    t = 0.0
    b.arrived(1, now=t)
    while not b.release(now=t):
        t += 0.5
        b.arrived(b.tail + 1, now=t)
        assert t <= 5.0
    assert t == 5.0 and b.released == b.tail


def test_a_journal_appearing_after_start_is_batched_by_its_records_not_its_numbers():
    b = Batcher(batch_max=10, batch_delay=1.0)   # started on an empty directory
    b.rebase(1_700_000_000_000_000)
    b.arrived(1_700_000_000_000_003, now=0.0)
    assert b.waiting == 3 and not b.release(now=0.5)
    assert b.release(now=1.0) and b.released == 1_700_000_000_000_003


def test_start_releases_what_the_journal_already_holds():
    b = Batcher(batch_max=10, batch_delay=1.0, released=100)
    assert b.released == b.tail == 100 and b.deadline() is None
    b.arrived(100, now=3.0)
    assert not b.release(now=3.0)
