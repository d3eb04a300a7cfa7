"""Layout generations: which iods a file's stripes are spread over.

A file keeps, for its whole life, the iod count it was created with
(Metafile.layout_gen names a generation). The generations are kept in
STATE_DIR/layouts.json as ``{"version": 1, "generations": {"1": ["host:port",
...], ...}}``: generation g's list is the iods.conf of the day it was created.

iods.conf may only grow by appending: then a new generation is recorded and
new files use it, while older files keep finding their stripes where they put
them. Removing, replacing or reordering an iod that holds data would send reads
to the wrong iod, so it is refused with the difference spelled out. Generation
0 is never recorded here: it means "no iods" (the metaserver's local store).
"""

import json
import os
import re

from common.iodsconf import format_iod

FILENAME = "layouts.json"
VERSION = 1


class LayoutError(ValueError):
    pass


class Layouts:
    def __init__(self, generations):
        if not generations:
            raise LayoutError("no layout generation")
        self.generations = {int(g): list(iods) for g, iods in generations.items()}
        self.current = max(self.generations)

    def iods(self, gen):
        """The ordered [(host, port)] of a generation, None if unknown."""
        return self.generations.get(gen)

    def all_iods(self):
        """Every iod of every generation; generations only append, so it is the
        current one's list."""
        return self.generations[self.current]

    def to_json(self):
        return {"version": VERSION,
                "generations": {str(g): [format_iod(*a) for a in iods]
                                for g, iods in sorted(self.generations.items())}}

    @classmethod
    def from_json(cls, doc, where):
        try:
            if doc.get("version") != VERSION:
                raise LayoutError(f"{where}: unknown version {doc.get('version')!r}")
            gens = {}
            for g, iods in doc["generations"].items():
                gen = int(g)
                if not 1 <= gen < 1 << 32:
                    raise LayoutError(f"{where}: generation {g} out of range")
                gens[gen] = [_addr(a, where) for a in iods]
                if not gens[gen]:
                    raise LayoutError(f"{where}: generation {g} has no iod")
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            if isinstance(e, LayoutError):
                raise
            raise LayoutError(f"{where}: malformed ({type(e).__name__}: {e})") from None
        ordered = sorted(gens)
        for a, b in zip(ordered, ordered[1:]):
            if gens[b][:len(gens[a])] != gens[a]:
                raise LayoutError(f"{where}: generation {b} does not extend generation {a}")
        return cls(gens)


def _addr(text, where):
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port):
        raise LayoutError(f"{where}: bad iod address {text!r}")
    return (host, int(port))


def reconcile(layouts, iods, conf_name="iods.conf"):
    """The layouts to use with ``iods`` (from iods.conf): the same, or with one
    more generation when iods.conf grew by appending. Raises LayoutError when
    iods.conf drops, replaces or reorders an iod that files depend on."""
    iods = list(iods)
    if layouts is None:
        return Layouts({1: iods}), True
    latest = layouts.all_iods()
    for i, old in enumerate(latest):
        if i >= len(iods):
            missing = ", ".join(format_iod(*a) for a in latest[i:])
            raise LayoutError(
                f"{conf_name} lists {len(iods)} iods but layout generation {layouts.current} "
                f"has {len(latest)}: {missing} missing. Files hold stripes on every iod of "
                f"their generation; iods can be added at the end of {conf_name}, never removed")
        if iods[i] != old:
            raise LayoutError(
                f"{conf_name}: iod #{i + 1} is {format_iod(*iods[i])}, but layout generation "
                f"{layouts.current} has {format_iod(*old)} there. Files find their stripes by "
                f"position; iods can only be appended to {conf_name} (to move an iod to a new "
                f"address, keep its line and give it the old address)")
    if len(iods) == len(latest):
        return layouts, False
    gens = dict(layouts.generations)
    gens[layouts.current + 1] = iods
    return Layouts(gens), True


def load(state_dir):
    """The recorded Layouts, or None when none were recorded yet."""
    path = os.path.join(state_dir, FILENAME)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise LayoutError(f"{path}: unreadable ({e})") from None
    if not isinstance(doc, dict):
        raise LayoutError(f"{path}: malformed")
    return Layouts.from_json(doc, path)


def save(state_dir, layouts):
    """Written to a temporary file, fsynced, renamed: a crash leaves the old
    generations or the new ones, never a torn file."""
    path = os.path.join(state_dir, FILENAME)
    tmp = path + ".tmp"
    data = json.dumps(layouts.to_json(), indent=1).encode() + b"\n"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dfd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def open_layouts(state_dir, iods, conf_name="iods.conf"):
    """Load, reconcile with iods.conf, record a new generation if it grew.
    Returns (Layouts, what changed as a log line or None)."""
    old = load(state_dir)
    layouts, changed = reconcile(old, iods, conf_name)
    if not changed:
        return layouts, None
    save(state_dir, layouts)
    if old is None:
        return layouts, f"layout generation 1: {len(iods)} iods"
    return layouts, (f"{conf_name} grew from {len(old.all_iods())} to {len(iods)} iods: new files "
                     f"use layout generation {layouts.current}, older files keep theirs")
