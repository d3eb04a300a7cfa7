"""The NFSv4 pseudo file system: every export appears under one root as its path.

NFSv4 has no MOUNT protocol; a client starts at PUTROOTFH and LOOKUPs its way
down to an export (RFC 8881 section 7). The directories above the exports are
made up here, per client: a client sees exactly the exports MOUNT would let it
mount (the same client matching of the exports file), and the directories
leading to them, nothing else. Below an export root everything is the export's
MetaFS, with its ordinary handles, so a file's handle is the same for v3 and v4.

Pseudo handles are 16 bytes starting with 0xF4: real handles start with their
version byte 1 (nfspd/fs/handles.py), so the two cannot be confused. They name
a path, not an object, so they need no MAC: a forged one names at most a
directory the client may not see, which resolves as STALE like any handle of
an export the client may not use.
"""

import hashlib
import posixpath
import time

from common.nfs3 import nfsstat3
from nfspd.fs.types import Attr, FileType, FsError

PSEUDO_MAGIC = 0xF4
PSEUDO_FH_SIZE = 16
# The pseudo file system's fsid4: distinct from every export's (theirs are
# (export id, 0) with a u32 export id), so that a client sees a file-system
# boundary where an export begins.
PSEUDO_FSID = (1 << 63, 0)


def pseudo_fh(path):
    return bytes([PSEUDO_MAGIC]) + hashlib.sha256(b"nfsp-pseudo\0" + path.encode()).digest()[:15]


def is_pseudo(fh):
    return len(fh) == PSEUDO_FH_SIZE and fh[0] == PSEUDO_MAGIC


def _fileid(path):
    # Pseudo directories need fileids of their own; high numbers keep them apart
    # from the inode numbers of an export in practice, and the fsid differs anyway.
    return (1 << 62) | int.from_bytes(hashlib.sha256(path.encode()).digest()[:6], "big")


def mounted_on_fileid(export_path):
    """The fileid of the pseudo directory entry an export's root is reached by
    (its mounted_on_fileid), None for an export of "/"."""
    return None if export_path == "/" else _fileid(export_path)


def _ancestors(path):
    """"/a/b/c" -> ["/", "/a", "/a/b"]."""
    out = []
    while path != "/":
        path = posixpath.dirname(path)
        out.append(path)
    return out[::-1]


class Node:
    """What a handle names for one client: a pseudo directory (``path``,
    ``children``: name -> path) or, for an export, ``fs`` set."""

    __slots__ = ("children", "fs", "path")

    def __init__(self, path, fs=None):
        self.path, self.fs, self.children = path, fs, {}


class View:
    """The pseudo file system as one client sees it."""

    def __init__(self, exports, started):
        self.started = started
        self.exports = dict(exports)  # export path -> MetaFS
        self.nodes = {}  # pseudo path -> Node
        self.by_fh = {}
        for path in sorted(self.exports):
            for anc in _ancestors(path):
                if anc in self.exports:
                    break  # below another export: reached through it, not here
                self._node(anc)
            else:
                if path == "/":
                    continue
                parent = posixpath.dirname(path)
                self._node(parent).children[posixpath.basename(path)] = path

    def _node(self, path):
        node = self.nodes.get(path)
        if node is None:
            node = self.nodes[path] = Node(path)
            self.by_fh[pseudo_fh(path)] = node
            if path != "/":
                self._node(posixpath.dirname(path)).children[posixpath.basename(path)] = path
        return node

    def root(self):
        """(handle, MetaFS or None) of the root: an export's root if "/" is exported."""
        fs = self.exports.get("/")
        if fs is not None:
            return fs.root_fh, fs
        return pseudo_fh("/"), None

    def node(self, fh):
        node = self.by_fh.get(bytes(fh))
        if node is None:
            raise FsError(nfsstat3.NFS3ERR_STALE, "not a directory of this client's pseudo root")
        return node

    def lookup(self, fh, name):
        """(handle, MetaFS or None) of ``name`` in a pseudo directory."""
        node = self.node(fh)
        try:
            name = name.decode() if isinstance(name, (bytes, bytearray)) else name
        except UnicodeDecodeError:
            raise FsError(nfsstat3.NFS3ERR_NOENT) from None
        if name == "..":
            return self.lookupp(fh)
        path = node.children.get(name)
        if path is None:
            raise FsError(nfsstat3.NFS3ERR_NOENT)
        fs = self.exports.get(path)
        if fs is not None:
            return fs.root_fh, fs
        return pseudo_fh(path), None

    def lookupp(self, fh):
        node = self.node(fh)
        if node.path == "/":
            raise FsError(nfsstat3.NFS3ERR_NOENT)
        return pseudo_fh(posixpath.dirname(node.path)), None

    def parent_of_export(self, fs):
        """The pseudo directory an export's root hangs from (LOOKUPP from it), or
        None when there is none (the export is "/", or below another export)."""
        for path, efs in self.exports.items():
            if efs is fs:
                parent = posixpath.dirname(path)
                if path != "/" and parent in self.nodes:
                    return pseudo_fh(parent)
        return None

    def entries(self, fh):
        """[(name, handle, MetaFS or None)] of a pseudo directory, by name."""
        node = self.node(fh)
        out = []
        for name in sorted(node.children):
            path = node.children[name]
            fs = self.exports.get(path)
            out.append((name, fs.root_fh if fs else pseudo_fh(path), fs))
        return out

    def attr(self, fh):
        node = self.node(fh)
        t = int(self.started * 1e9)
        return Attr(type=FileType.DIR, mode=0o555, nlink=2 + len(node.children), uid=0, gid=0,
                    size=4096, used=4096, rdev_major=0, rdev_minor=0, fsid=PSEUDO_FSID[0],
                    fileid=_fileid(node.path), atime_ns=t, mtime_ns=t, ctime_ns=t)


class PseudoFS:
    """Builds each client's View from the export registry's own client rules
    (ExportRegistry.visible_exports), so that it follows exports reloads."""

    def __init__(self, registry, clock=time.time):
        self.registry = registry
        self.started = clock()

    def view(self, ctx):
        return View(self.registry.visible_exports(ctx), self.started)
