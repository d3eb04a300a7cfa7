"""`nfsp scrub`: find (and with --purge remove) data no metafile owns, and
metafiles whose data is missing.

Leaks: an iod stores a datafile (inode, seed) that no metafile of any export
names, and that is not waiting in the purge journal (those are in flight:
unlinkd will remove them). Every export that uses these iods must be walked
(the default reads them all from the exports file), or the others' data would
look leaked.

Missing data: the iod protocol's LIST tells which datafiles exist, not their
sizes, and a file legitimately has no datafile on an iod for a range nobody
wrote (a sparse file, or one grown by SETATTR alone). So the only sound
statement is about a non-empty file of which *no* iod holds *any* datafile:
such a file either lost its data or was never written (only sized). scrub
reports those as "without data" when every iod answered, and only for files
that did not change since the scrub began. Finer checks (a missing stripe of a
written range) need datafile sizes that LIST does not give.

Order, so that a busy cluster yields no false leak: the journal is read, then
the iods are listed, then the exports walked, then the journal read again; a
file created after its iod was listed has no listed datafile, one removed
meanwhile is in the journal. --purge confirms every candidate with a second
walk and journal read before purging it.

Exit status: 0 nothing found (or every leak purged); 1 leaks left, files
without data or unreadable metafiles; 3 incomplete: an iod could not be listed
or purged (leaks on the others are still purged), or a directory of an export
could not be read (then nothing is purged: the files under it are unknown, so
their data would look leaked). Data of an inode whose metafile is unreadable is
never called a leak.
"""

import dataclasses
import errno
import itertools
import os
import stat
import sys
import time

import click
import trio

from common.iodproto import Op
from common.metafile import Metafile, MetafileError
from common.runtime import metarecord
from common.runtime.iodclient import IodConnection, IodError, iod_name
from common.runtime.purgejournal import JournalReader
from tools import embedded
from unlinkd.daemon import MAX_BATCH

EXIT_CLEAN, EXIT_FOUND, EXIT_INCOMPLETE = 0, 1, 3
LIST_TIMEOUT = 60.0
PURGE_TIMEOUT = 300.0
MAX_LISTED = 1 << 28  # per iod: a runaway cursor is an error, not an endless loop


@dataclasses.dataclass
class Owned:
    path: str
    meta: Metafile
    changed_ns: int


@dataclasses.dataclass
class Walk:
    owned: dict = dataclasses.field(default_factory=dict)       # (ino, seed) -> Owned
    bad: list = dataclasses.field(default_factory=list)          # (path, reason)
    bad_inos: set = dataclasses.field(default_factory=set)       # of unreadable metafiles
    incomplete: bool = False     # a directory could not be read: its files are unknown
    entries: int = 0


def walk_exports(roots, progress=None):
    """Every metafile under ``roots`` (not following symlinks, not leaving each
    root's file system, each inode once)."""
    walk = Walk()
    seen = set()
    for root in roots:
        try:
            root_dev = os.stat(root).st_dev
        except OSError as e:
            walk.bad.append((root, f"cannot read export: {e.strerror}"))
            walk.incomplete = True
            continue
        stack = [root]
        while stack:
            path = stack.pop()
            try:
                it = os.scandir(path)
            except OSError as e:
                walk.bad.append((path, f"cannot read directory: {e.strerror}"))
                walk.incomplete = True
                continue
            with it:
                for entry in it:
                    walk.entries += 1
                    if progress is not None:
                        progress(1)
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue  # removed meanwhile
                    if st.st_dev != root_dev or (st.st_dev, st.st_ino) in seen:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        seen.add((st.st_dev, st.st_ino))
                        stack.append(entry.path)
                    elif stat.S_ISREG(st.st_mode):
                        seen.add((st.st_dev, st.st_ino))
                        _metafile(entry.path, st, walk)
    return walk


def _metafile(path, st, walk):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return
    except OSError as e:
        walk.bad.append((path, f"cannot open: {e.strerror}"))
        walk.bad_inos.add(st.st_ino)
        return
    try:
        now = os.fstat(fd)
        if now.st_ino != st.st_ino:
            return  # replaced since the scan saw it; the new one is a new file
        meta = metarecord.load(fd, now.st_size)
    except MetafileError as e:
        walk.bad.append((path, f"not a metafile: {e}"))
        walk.bad_inos.add(st.st_ino)
        return
    except OSError as e:
        walk.bad.append((path, f"cannot read: {e.strerror}"))
        walk.bad_inos.add(st.st_ino)
        return
    finally:
        os.close(fd)
    walk.owned[(st.st_ino, meta.seed)] = Owned(path, meta, max(st.st_mtime_ns, st.st_ctime_ns))


async def list_iod(host, port, keys, progress=None):
    """Every (ino, seed) the iod stores."""
    conn = await IodConnection.connect(host, port, keys)
    out = set()
    try:
        cursor = None
        while True:
            answer = await conn.call(Op.LIST, LIST_TIMEOUT, cursor=cursor)
            if answer.status != 0:
                raise IodError(f"{conn.name}: LIST failed: "
                               f"{errno.errorcode.get(answer.status, answer.status)} "
                               f"{answer.message}")
            files = answer.files or []
            out.update(files)
            if progress is not None:
                progress(len(files))
            if answer.cursor is None:
                return out
            if answer.cursor == cursor or len(out) > MAX_LISTED:
                raise IodError(f"{conn.name}: LIST does not progress (cursor {answer.cursor!r})")
            cursor = answer.cursor
    finally:
        await conn.aclose()


async def list_iods(iods, keys, progress=None):
    """{name: set of pairs or IodError}, all iods at once."""
    results = {}

    async def one(host, port):
        try:
            results[iod_name(host, port)] = await list_iod(host, port, keys, progress)
        except IodError as e:
            results[iod_name(host, port)] = e

    async with trio.open_nursery() as nursery:
        for host, port in iods:
            nursery.start_soon(one, host, port)
    return results


async def purge_iod(host, port, keys, files):
    conn = await IodConnection.connect(host, port, keys)
    try:
        files = sorted(files)
        for i in range(0, len(files), MAX_BATCH):
            answer = await conn.call(Op.PURGE, PURGE_TIMEOUT, files=files[i:i + MAX_BATCH])
            if answer.status != 0:
                raise IodError(f"{conn.name}: PURGE failed: "
                               f"{errno.errorcode.get(answer.status, answer.status)} "
                               f"{answer.message}")
    finally:
        await conn.aclose()


def journal_pending(journal_dir):
    """The purges waiting in nfspd's journal. Unreadable or absent: none,
    which only makes them count as leaks (purging a removed file's data early
    is harmless)."""
    if journal_dir is None or not os.path.isdir(journal_dir):
        return set()
    try:
        return set(JournalReader(journal_dir).pending())
    except OSError as e:
        click.echo(f"warning: cannot read the purge journal {journal_dir}: {e.strerror}; "
                   f"purges in flight will show as leaks", err=True)
        return set()


@dataclasses.dataclass
class Findings:
    leaks: dict          # iod name -> sorted [(ino, seed)]
    without_data: list   # [Owned]
    bad: list            # [(path, reason)]
    unreachable: dict    # iod name -> message
    in_flight: int
    metafiles: int
    datafiles: int


def analyse(walk, listed, pending, started_ns):
    leaks, unreachable, held = {}, {}, set()
    datafiles = 0
    for name, result in listed.items():
        if isinstance(result, Exception):
            unreachable[name] = str(result)
            continue
        datafiles += len(result)
        held |= result
        # Data of an inode whose metafile could not be read may be that
        # file's: never called a leak (and so never purged).
        mine = sorted(p for p in result if p not in walk.owned and p not in pending
                      and p[0] not in walk.bad_inos)
        if mine:
            leaks[name] = mine
    without = []
    if not unreachable:
        without = [o for key, o in walk.owned.items()
                   if o.meta.size > 0 and key not in held and o.changed_ns < started_ns]
        without.sort(key=lambda o: o.path)
    return Findings(leaks, without, walk.bad, unreachable,
                    in_flight=len(pending & held), metafiles=len(walk.owned), datafiles=datafiles)


def _load_roots(exports_file, export_dirs):
    if export_dirs:
        return [os.path.abspath(d) for d in export_dirs]
    from common.exports import parse_exports
    with open(exports_file, encoding="utf-8", errors="surrogateescape") as f:
        return [e.path for e in parse_exports(f.read(), exports_file)]


class _Progress:
    """A click progress bar on stderr (drawn only on a terminal)."""

    def __init__(self, label):
        # A counting iterable: the totals are unknown until the end, so the bar
        # shows a running count rather than a percentage.
        self.bar = click.progressbar(itertools.count(), label=label, file=sys.stderr,
                                     show_pos=True, show_eta=False)

    def __enter__(self):
        self.bar.__enter__()
        return self.bar.update

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)


@click.command("scrub", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("export_dirs", nargs=-1, type=click.Path(file_okay=False, exists=True))
@embedded.dir_option
@click.option("--exports", "exports_file", type=click.Path(dir_okay=False),
              help="Walk every export listed here (when no EXPORT_DIRS are given). "
                   f"[default: {embedded.SYSTEM.exports}, or DIR/exports of the cluster --dir "
                   "picks]")
@click.option("--iods", "iods_path", type=click.Path(dir_okay=False, exists=True),
              help=f"iods.conf: the iods to inspect. [default: {embedded.SYSTEM.iods_conf}, "
                   "or DIR's]")
@click.option("--key", "key_path", type=click.Path(dir_okay=False),
              help=f"Cluster key file. [default: {embedded.SYSTEM.key}, or DIR's]")
@click.option("--state-dir", type=click.Path(file_okay=False),
              help="nfspd's state directory: purges pending in STATE_DIR/purge are in flight, "
                   f"not leaks. [default: {embedded.SYSTEM.state}, or DIR/state]")
@click.option("--purge", "do_purge", is_flag=True,
              help="Remove the leaked datafiles (after confirming each with a second walk).")
@click.option("--show", default=20, show_default=True, type=click.IntRange(0),
              help="List at most this many items per finding.")
def cli(export_dirs, up_dir, exports_file, iods_path, key_path, state_dir, do_purge, show):
    """Find datafiles no metafile owns (leaks; removed with --purge) and
    non-empty files of which no iod holds any data. EXPORT_DIRS must cover
    every export whose data these iods hold."""
    from common import keyfile
    from common.iodsconf import load_iods
    if None in (exports_file, iods_path, key_path, state_dir):
        cluster, note = embedded.choose(up_dir)
        if note:
            click.echo(f"nfsp scrub: {note}", err=True)
        if iods_path is None:
            if isinstance(cluster, embedded.Directory) and not os.path.exists(cluster.iods_conf):
                raise click.UsageError(f"{cluster.path} has no iods.conf: its cluster keeps "
                                       f"the data in the metaserver's local store, no iods "
                                       f"to scrub")
            if not os.path.exists(cluster.iods_conf):
                raise click.UsageError(
                    f"no {cluster.iods_conf}: name the iods with --iods FILE (and --key FILE), "
                    f"or the cluster of `nfsp up DIR` with --dir DIR")
            iods_path = cluster.iods_conf
        exports_file = exports_file or cluster.exports
        key_path = key_path or cluster.key
        state_dir = state_dir or cluster.state
    try:
        keys = keyfile.load(key_path)
        iods = load_iods(iods_path)
        roots = _load_roots(exports_file, export_dirs)
    except (OSError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    journal_dir = os.path.join(state_dir, "purge")
    started_ns = time.time_ns()

    pending = journal_pending(journal_dir)
    with _Progress(f"listing {len(iods)} iods") as tick:
        listed = trio.run(list_iods, iods, keys, tick)
    with _Progress(f"walking {len(roots)} export(s)") as tick:
        walk = walk_exports(roots, tick)
    pending |= journal_pending(journal_dir)
    found = analyse(walk, listed, pending, started_ns)

    purged = 0
    purge_failed = {}
    # Leaks on the iods that answered are leaks whatever the others say; but
    # the files under a directory we could not read are unknown, so their
    # data would look leaked: then nothing is purged.
    if do_purge and found.leaks and not walk.incomplete:
        with _Progress("confirming") as tick:
            again = walk_exports(roots, tick)
        pending |= journal_pending(journal_dir)
        by_addr = {iod_name(h, p): (h, p) for h, p in iods}
        for name, pairs in list(found.leaks.items()):
            if again.incomplete:
                break
            confirmed = [p for p in pairs if p not in again.owned and p not in pending
                         and p[0] not in again.bad_inos]
            try:
                trio.run(purge_iod, *by_addr[name], keys, confirmed)
            except IodError as e:
                purge_failed[name] = str(e)
                continue
            purged += len(confirmed)
            left = sorted(set(pairs) - set(confirmed))
            if left:
                found.leaks[name] = left
            else:
                del found.leaks[name]

    _report(found, purged, purge_failed, do_purge, show, len(roots), len(iods))
    if do_purge and found.leaks and walk.incomplete:
        click.echo("not purging: part of the exports could not be read")
    if found.unreachable or purge_failed or walk.incomplete:
        sys.exit(EXIT_INCOMPLETE)
    if found.leaks or found.without_data or found.bad:
        sys.exit(EXIT_FOUND)
    sys.exit(EXIT_CLEAN)


def _report(found, purged, purge_failed, do_purge, show, nroots, niods):
    echo = click.echo

    def listing(items, fmt):
        for item in items[:show]:
            echo("  " + fmt(item))
        if len(items) > show:
            echo(f"  ... and {len(items) - show} more")

    for name, message in sorted(found.unreachable.items()):
        echo(f"iod {name}: NOT LISTED: {message}")
    for name, message in sorted(purge_failed.items()):
        echo(f"iod {name}: purge failed: {message}")
    for name, pairs in sorted(found.leaks.items()):
        echo(f"iod {name}: {len(pairs)} leaked datafiles (no metafile owns them):")
        listing(pairs, lambda p: f"inode {p[0]} seed {p[1]:#018x}")
    if found.without_data:
        echo(f"{len(found.without_data)} non-empty files have no data on any iod "
             f"(lost, or only ever sized, never written):")
        listing(found.without_data, lambda o: f"{o.path} ({o.meta.size} bytes)")
    if found.bad:
        echo(f"{len(found.bad)} entries could not be checked:")
        listing(found.bad, lambda b: f"{b[0]}: {b[1]}")
    leaked = sum(len(v) for v in found.leaks.values())
    listed = niods - len(found.unreachable)
    echo(f"scrub: {nroots} export(s), {found.metafiles} metafiles, {len(found.bad)} unreadable; "
         f"{listed}/{niods} iods listed, {found.datafiles} datafiles; "
         f"{found.in_flight} files awaiting purge (in flight); "
         f"{leaked} leaked datafiles{' left' if do_purge else ''}, {purged} purged; "
         f"{len(found.without_data)} non-empty files without data")

if __name__ == "__main__":
    cli()
