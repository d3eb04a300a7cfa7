"""MetaFS: the exported namespace kept in an ordinary directory (paper 5.3-5.5).

Every regular file is a small metafile (common/metafile.py) holding the real
size, a seed and the stripe parameters; directories, symlinks, devices, fifos
and hard links are plain objects. Attributes come from the underlying file
system except size and used bytes, which come from the metafile.

MetaFS is the file-system layer every protocol front-end calls (NFSv2 and
NFSv3 today, NFSv4.1 next), as Linux nfsd's procedures call its vfs.c: it
knows no XDR and no protocol version. This module is its namespace facade, on
top of the layers listed in nfspd/fs/__init__.py.

Permissions: the caller's (already squashed) uid/gids are enforced the way a
kernel server does. Namespace changes and SETATTR run under the caller's file
system credentials, so the kernel applies its own rules (search and write
permission, sticky directories, who may chmod/chown/utimes, setgid clearing),
except where its answer to the caller is root's (the owner of a directory
looking up, creating, removing or renaming names in it: access.py
owner_may, objects.py searchable_by), which spares a switch; READ,
WRITE and ACCESS are decided by access.py, since the data does not live
here.
"""

import errno
import os
import stat

from common.metafile import HEADER as META_HEADER
from common.metafile import MAX_SIZE
from common.nfs3 import nfsstat3
from nfspd.fs.access import R, W, X, access3, check_writable, may_write, owner_may, permitted
from nfspd.fs.attrcache import AttrCache, Pages
from nfspd.fs.creds import as_caller
from nfspd.fs.dirplus import lookup_entries
from nfspd.fs.fileio import FileIO
from nfspd.fs.listings import Listings
from nfspd.fs.objects import Objects, clear_setid, open_pinned, stat_pinned
from nfspd.fs.syscalls import O_PATH, chown, link_fd, proc_path, rename_noreplace, set_times
from nfspd.fs.types import (NAME_MAX, PATH_MAX, SET_TO_SERVER_TIME, CreateHow, FileType, FsError,
                            FsStat, SetAttr, TargetExists, Wcc, WccAttr, fs_error_of,
                            maps_oserror)

_ZERO_VERF = bytes(8)
_MKNOD_BITS = {FileType.CHR: stat.S_IFCHR, FileType.BLK: stat.S_IFBLK,
               FileType.SOCK: stat.S_IFSOCK, FileType.FIFO: stat.S_IFIFO}


# What may change an attribute of something (attrcache.py): counted as a
# change when ``changes`` is given. Every other public method of MetaFS is in
# UNCHANGING; tests/test_attrcache.py holds the two lists to the class.
CHANGING = ("setattr", "create", "create_or_open", "mkdir", "symlink", "mknod", "link",
            "remove", "rmdir", "rename", "write_plan_now", "write_plan", "write_data",
            "write", "write_failed", "write_landed", "commit", "settled", "read_plan", "read",
            "readlink")
# Atimes move on reads too: READLINK's (above); a metafile's on read_plan_now
# and a directory's when readdir reads it, which FileIO and Listings count
# themselves (only now and then is there a change: relatime).
UNCHANGING = ("close", "hold", "release", "stable_ticket", "stable", "getattr", "access",
              "lookup", "readdir", "readdirplus", "listing_pages", "cookieverf", "fsstat",
              "pathconf", "read_plan_now", "read_data")


_NO_SWITCH = as_caller(0, 0)


def _remover(caller, *dir_sts):
    """Whose credentials remove or rename names in these directories (their
    stats): the caller's, unless the kernel's answer would be root's
    (access.owner_may)."""
    for st in dir_sts:
        if not owner_may(st, caller, W | X):
            return as_caller(caller.uid, caller.gid, caller.gids)
    return _NO_SWITCH


def _made_as_root(dir_st, caller, mode):
    """Whether a regular file of ``mode`` the caller creates in this directory
    can be made as root and given to the caller before it gets its name
    (Metafiles.make's ``owner``), the kernel then answering as it would the
    caller (access.owner_may) and the file ending up as it would have:
    not with a setuid or setgid bit (a chown clears them, and the kernel
    strips setgid from a creator outside the group), nor in a directory of
    root's group (where a file made by root could not tell whether the
    directory handed its group down). A switch is four system calls, a
    fchown and a fstat two: in-process, a CREATE's CPU went from 148-155 to
    142-144 us (the median call of the fastest of 9 rounds, three
    alternating runs). (Root acting as itself switches nothing anyway.)"""
    return (owner_may(dir_st, caller, W | X) and not mode & 0o6000 and dir_st.st_gid != 0
            and (caller.uid != 0 or caller.gid != 0))


def _name(name, creating=False):
    """A single path component from the client, as bytes. NFS3ERR_INVAL for what
    cannot be one (empty, "/" or NUL inside); EXIST for "." and ".." when
    creating (they always exist)."""
    if isinstance(name, str):
        name = os.fsencode(name)
    if not isinstance(name, bytes):
        raise FsError(nfsstat3.NFS3ERR_INVAL, "name is not bytes")
    if len(name) > NAME_MAX:
        raise FsError(nfsstat3.NFS3ERR_NAMETOOLONG)
    if not name or b"/" in name or b"\0" in name:
        raise FsError(nfsstat3.NFS3ERR_INVAL, f"bad name {name!r}")
    if creating and name in (b".", b".."):
        raise FsError(nfsstat3.NFS3ERR_EXIST, f"{name!r} exists")
    return name


class MetaFS:
    """One exported directory.

    The contract, for every front-end:

    - Objects are named by handles: bytes, at most 32 as made here; zeros
      padding one (NFSv2 pads to 32) are accepted. ``root_fh`` is the
      export's root.
      Returned handles are canonical. Every call taking one raises BADHANDLE
      for a malformed or forged handle or one of another export, and STALE for
      an object that no longer exists.
    - The caller is a Caller (nfspd/fs/types.py): uid, gid and gids after the
      export's squashing, and readonly; every change raises ROFS for a
      read-only caller before anything else.
    - Names are single components, bytes: INVAL for empty, "/" or NUL inside,
      NAMETOOLONG beyond 255 bytes, EXIST when creating "." or "..".
    - Results are values of nfspd/fs/types.py: Attr, Wcc (pre- and
      post-operation attributes, either possibly None), DirEntry, FsStat,
      ReadPlan, WritePlan.
    - Failures raise FsError with an nfsstat3 ``status``; an error of the
      kernel maps by errno (types.fs_error_of), so besides the statuses named
      per call: ACCES, PERM, NOENT, EXIST, NOTDIR, ISDIR, NOSPC, DQUOT, IO.

    All calls are synchronous (small local metadata system calls) except
    read_plan, read_data, read, write_plan, write_data, write and commit,
    which may wait on the data path. Use from one thread (the event loop's);
    the data path may use worker threads of its own.

    READ and WRITE come in two halves (nfspd/fs/fileio.py, whose methods are
    the ones bound here): ``read_plan(fh, caller, offset, count,
    at_stripe=False)`` / ``read_plan_now`` give a ReadPlan and
    ``read_data(plan)`` its bytes; ``write_plan(fh, caller, offset, length,
    stable)`` / ``write_plan_now`` a WritePlan and ``write_data(plan, data)``
    the verifier; ``read`` and ``write`` do both; ``commit(fh, caller, offset,
    count)`` gives (verifier, Wcc); ``settled(fh)`` the (Metafile, inode) a pNFS
    layout describes, any pending truncation carried out.

    ``purge(ino, seed)`` receives the data of files whose last link went away
    (default: datapath.purge). ``sync_metadata``: namespace changes and metafile
    size changes are made durable (fsync) before replying, as an NFS server must
    unless exported "async" (or the Caller's ``sync`` is False: its export
    entry says "async").

    ``commit``: a GroupCommit (nfspd/fs/commit.py). Without one, each
    namespace change is flushed before its call returns. With one, it is
    noted there, and the front-end answers once ``await stable(ticket)``
    returns, the ticket taken with ``stable_ticket()`` right after the call
    (None: nothing to wait for).

    ``changes``: an attrcache.Changes, one for every MetaFS of the process
    (exports may overlap), or a SharedChanges, one for every process that
    changes the exports (nfspd and its workers). Given, each change counts
    there, and READDIRPLUS reuses the lookups of a listing read again while
    nothing has changed (nfspd/fs/attrcache.py)."""

    def __init__(self, export_path, export_id, handle_key, datapath, purge=None, *,
                 sync_metadata=True, cache_size=4096, commit=None, changes=None):
        objects = Objects(export_path, export_id, handle_key,
                          purge if purge is not None else datapath.purge,
                          sync_metadata=sync_metadata, cache_size=cache_size, commit=commit)
        self._commit = commit
        self._objects = objects
        self.export_path = objects.export_path
        self.export_id = export_id
        self.fsid = objects.fsid
        self.dev = objects.dev
        self.root_fh = objects.root_fh
        self._root_ino = objects.root_ino
        self._codec = objects.codec
        self._metafiles = objects.metafiles
        self._listings = Listings(handle_key, None if changes is None else changes.made,
                                  getattr(changes, "others_quiet", None))
        # Bound once: GETATTR and LOOKUP pay no extra call for the layering.
        self._open = objects.open
        self._dir = objects.dir
        self._attr = objects.attr
        self._attr_of = objects.attr_of
        self._wcc_attr = objects.wcc_attr
        self._post = objects.post
        self._pin = objects.pin
        self._adopt = objects.adopt
        self._sync_dir = objects.sync_dir
        self._gone = objects.gone
        self._searchable_by = objects.searchable_by
        self._listing_changed = self._listings.changed
        io = FileIO(objects, datapath, None if changes is None else changes.made)
        self._io = io
        self.read_plan = io.read_plan
        self.read_plan_now = io.read_plan_now
        self.read_data = io.read_data
        self.read = io.read
        self.write_plan = io.write_plan
        self.write_plan_now = io.write_plan_now
        self.write_data = io.write_data
        self.write_failed = io.write_failed
        self.write_landed = io.write_landed
        self.write = io.write
        self.commit = io.commit
        self.settled = io.settled
        self._attrcache = None
        if changes is not None:
            self._attrcache = AttrCache(changes)
            for name in CHANGING:
                setattr(self, name, changes.counting(getattr(self, name)))

    def close(self):
        self._objects.close()

    def hold(self, fh):
        """Keep a regular file usable by its handle after it loses its last
        link (NFSv4's OPEN4_RESULT_PRESERVE_UNLINKED: REMOVE of a file a client
        holds open), until release(); its data goes to the purge sink only
        then. False when too many files are held already. STALE, BADHANDLE."""
        try:
            return self._objects.hold(fh)
        except OSError as e:
            raise fs_error_of(e) from None

    def release(self, fh):
        """Undo one hold() (a file whose last link went meanwhile goes now)."""
        self._objects.release(fh)

    def stable_ticket(self):
        """What to pass to stable() for the changes made so far to be
        durable; None if there is nothing to wait for."""
        return self._commit.ticket() if self._commit is not None else None

    async def stable(self, ticket):
        """Return once the changes before stable_ticket() gave ``ticket`` are
        durable. IO if the flush failed."""
        try:
            await self._commit.stable(ticket)
        except OSError as e:
            raise fs_error_of(e) from None

    @property
    def sync_metadata(self):
        return self._objects.sync_metadata

    @sync_metadata.setter
    def sync_metadata(self, value):
        self._objects.sync_metadata = value

    @property
    def parent_fsync_suffices(self):
        """Whether the export's file system writes an inode made in a
        directory with that directory's fsync (it journals: journal.py)."""
        return self._objects.parent_fsync_suffices

    @property
    def dir_fsync_commits_all(self):
        """Whether a directory's fsync on the export's file system commits
        every change made there before it (ext3/ext4 with a journal)."""
        return self._objects.dir_fsync_commits_all

    @property
    def meta_lookups(self):
        """Metafile-cache effectiveness, for `nfsp status`."""
        return self._metafiles.lookups

    @property
    def meta_hits(self):
        return self._metafiles.hits

    @property
    def listing_counts(self):
        """(entries listed by READDIRPLUS and NFSv4 READDIR, of them given
        from what was kept: attrcache.py), for `nfsp status`; (0, 0)
        without ``changes``."""
        cache = self._attrcache
        return (0, 0) if cache is None else (cache.listed, cache.reused)

    @property
    def meta_reads(self):
        """Metafiles read (a stat told the size of the others)."""
        return self._metafiles.reads

    # -- attributes ---------------------------------------------------------------

    # getattr, lookup and access map OSError themselves: maps_oserror's
    # *args/**kwargs call was a tenth of a GETATTR.

    def getattr(self, fh):
        """The Attr of an object. IO for a regular file that is not a valid metafile."""
        try:
            fd, _, st = self._open(fh)
            return self._attr(fd, st)
        except OSError as e:
            raise fs_error_of(e) from None

    @maps_oserror
    def setattr(self, fh, caller, sattr, guard_ctime_ns=None):
        """Apply a SetAttr as the caller: Wcc of the object. With
        ``guard_ctime_ns``, NOT_SYNC unless the object's ctime is that.
        A size: ISDIR for a directory, INVAL for another non-regular file,
        FBIG beyond the largest size, ACCES without write permission; the data
        beyond it is cut before data next moves. A mode on a symlink is
        ignored."""
        check_writable(caller)
        fd, cfh, st = self._open(fh)
        if guard_ctime_ns is not None and st.st_ctime_ns != guard_ctime_ns:
            raise FsError(nfsstat3.NFS3ERR_NOT_SYNC)
        regular = stat.S_ISREG(st.st_mode)
        meta = self._metafiles.get(fd, st) if regular else None
        pre = WccAttr(meta.size if regular else st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        size = sattr.size
        if size is not None:
            if stat.S_ISDIR(st.st_mode):
                raise FsError(nfsstat3.NFS3ERR_ISDIR)
            if not regular:
                raise FsError(nfsstat3.NFS3ERR_INVAL)
            if size > MAX_SIZE:
                raise FsError(nfsstat3.NFS3ERR_FBIG)
            if not may_write(st.st_mode, st.st_uid, st.st_gid, caller):
                raise FsError(nfsstat3.NFS3ERR_ACCES)
        mode = sattr.mode
        if mode is not None and stat.S_ISLNK(st.st_mode):
            mode = None  # Linux symlinks have no mode of their own
        with as_caller(caller.uid, caller.gid, caller.gids):
            if sattr.uid is not None or sattr.gid is not None:
                chown(fd, sattr.uid, sattr.gid)
            if mode is not None:
                os.chmod(proc_path(fd), mode & 0o7777)
        if regular and (size is not None or meta.create_verf is not None):
            new = meta.replace(create_verf=None)
            if size is not None and size != meta.size:
                new = new.replace(size=size)
                if size < meta.size:
                    pending = size if meta.trunc_to is None else min(meta.trunc_to, size)
                    new = new.replace(trunc_to=pending)
            self._metafiles.store(fd, new, self._objects.durable(caller), st)
            if size is not None:
                # A truncate changes mtime/ctime (even to the same size) and
                # costs an unprivileged caller its setuid/setgid bits.
                set_times(fd, None, SET_TO_SERVER_TIME)
                clear_setid(fd, caller)
        if sattr.atime is not None or sattr.mtime is not None:
            with as_caller(caller.uid, caller.gid, caller.gids):
                set_times(fd, sattr.atime, sattr.mtime)
        return Wcc(pre, self._post(fd))

    def access(self, fh, caller, mask):
        """(the ACCESS3 bits of ``mask`` granted to the caller, Attr); see
        access.access3 for how each bit is decided."""
        try:
            fd, _, st = self._open(fh)
            return access3(st.st_mode, st.st_uid, st.st_gid, caller, mask), self._attr(fd, st)
        except OSError as e:
            raise fs_error_of(e) from None

    # -- names --------------------------------------------------------------------

    def lookup(self, dir_fh, name, caller):
        """(handle, Attr, directory Attr) of ``name`` in a directory, not
        following a symlink; "." and ".." included (".." of the root is the
        root). NOTDIR, NOENT, ACCES without search permission, ACCES for a
        mount point inside the export (not exported with it)."""
        try:
            return self._lookup(dir_fh, name, caller)
        except OSError as e:
            raise fs_error_of(e) from None

    def _lookup(self, dir_fh, name, caller):
        dfd, dcfh, dst = self._dir(dir_fh)
        name = _name(name)
        if name == b"." or name == b"..":
            if not permitted(dst.st_mode, dst.st_uid, dst.st_gid, caller, X):
                raise FsError(nfsstat3.NFS3ERR_ACCES)
            dattr = self._attr(dfd, dst)
            if name == b"." or dst.st_ino == self._root_ino:
                if name == b"..":
                    return self.root_fh, self._attr_of(self.root_fh), dattr
                return dcfh, dattr, dattr
            pfd = os.open("..", O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dfd)
        else:
            dattr = self._attr(dfd, dst)
            # Usually the object is in the handle cache already: one fstatat
            # then finds it (its cached fd keeps the inode, so the number
            # cannot name another object meanwhile) instead of open, fstat and
            # close. The search permission is checked by the kernel either way.
            st = self._lstat(dfd, dst, name, caller)
            if st.st_dev == self.dev:
                hit = self._codec.cached_inode(st.st_ino)
                if hit is not None:
                    return hit[1], self._attr(hit[0], st), dattr
                if not stat.S_ISREG(st.st_mode) or st.st_size >= META_HEADER:
                    # Nothing to read: the handle from the name, no open (a
                    # READDIRPLUS makes one of these per entry). The stat
                    # after it shows the name still led to that inode.
                    cfh = self._codec.encode_at(dfd, name)
                    again = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    if again.st_ino == st.st_ino and again.st_dev == st.st_dev:
                        return cfh, self._attr(None, again), dattr
            pfd, _ = self._pin(dfd, name, caller, dst)
        st = os.fstat(pfd)
        if st.st_dev != self.dev:
            os.close(pfd)
            # A file system mounted inside the export: not exported with it.
            raise FsError(nfsstat3.NFS3ERR_ACCES, "mount point")
        hit = self._codec.cached_inode(st.st_ino)
        if hit is not None:
            os.close(pfd)
            fd, cfh = hit
        else:
            fd, cfh = self._adopt(pfd, st)
        return cfh, self._attr(fd, st), dattr

    @maps_oserror
    def readlink(self, fh, caller):
        """(target bytes, Attr) of a symlink; INVAL for anything else."""
        fd, _, st = self._open(fh)
        if not stat.S_ISLNK(st.st_mode):
            raise FsError(nfsstat3.NFS3ERR_INVAL, "not a symlink")
        return os.readlink(b"", dir_fd=fd), self._attr(fd, st)

    # -- making objects ---------------------------------------------------------------

    @maps_oserror
    def create(self, dir_fh, name, caller, how, sattr, verf=None):
        """Create a regular file as the caller: (handle, Attr, directory Wcc).
        ``how`` is a CreateHow: UNCHECKED opens an existing regular file
        (applying sattr's size), GUARDED raises EXIST, EXCLUSIVE (``verf``, 8
        bytes, else INVAL) succeeds again only for the same verifier (kept
        until the first SETATTR). EXIST for an existing object of another type.
        Default mode 0644."""
        return self.create_or_open(dir_fh, name, caller, how, sattr, verf)[:3]

    def create_or_open(self, dir_fh, name, caller, how, sattr, verf=None):
        """create, and whether it made the file: (handle, Attr, directory Wcc,
        created). NFSv4's OPEN answers differently for a file that existed
        (no attrset), and learning it here saves a lookup before."""
        check_writable(caller)
        if type(how) is not CreateHow:
            how = CreateHow(how)
        sattr = sattr if sattr is not None else SetAttr()
        dfd, dcfh, dst = self._dir(dir_fh)
        name = _name(name, creating=True)
        if how == CreateHow.EXCLUSIVE:
            if not isinstance(verf, bytes) or len(verf) != 8:
                raise FsError(nfsstat3.NFS3ERR_INVAL, "exclusive create needs an 8-byte verifier")
        else:
            verf = None
        pre = self._wcc_attr(dfd, dst)
        mode = 0o644 if sattr.mode is None else sattr.mode & 0o7777
        meta = self._io.new_metafile(create_verf=verf)
        durable = self._objects.durable(caller)
        sync = durable and self._commit is None
        try:
            made = None
            if _made_as_root(dst, caller, mode):
                made = self._metafiles.make(dfd, name, mode, meta, sync,
                                            owner=(caller.uid, caller.gid, dst.st_gid))
            if made is None:
                with as_caller(caller.uid, caller.gid, caller.gids):
                    made = self._metafiles.make(dfd, name, mode, meta, sync)
            fd, st, in_xattr = made
        except FileExistsError:
            return (*self._create_existing(dfd, dst, name, caller, how, sattr, verf, pre), False)
        if st.st_nlink == 0:
            return (*self._made_and_gone(dfd, dst, fd, st, meta, caller, pre), True)
        if durable and self._commit is not None \
                and not (in_xattr and self._objects.dir_fsync_commits_all):
            # (A record in the attribute is metadata: the directory's fsync
            # commits it with the new name.)
            self._commit.metafile(fd, st)
        fd, cfh = self._adopt(fd, st, readwrite=True)
        self._listing_changed(dst, dfd, added=((name, st.st_ino),))
        if (sattr.uid is None and sattr.gid is None and sattr.atime is None
                and sattr.mtime is None and not sattr.size):
            attr = self._attr(fd, st, meta)  # st is from after the link: current
        else:
            rest = SetAttr(uid=sattr.uid, gid=sattr.gid, atime=sattr.atime, mtime=sattr.mtime,
                           size=sattr.size or None)
            if rest.uid is not None or rest.gid is not None:
                rest.mode = sattr.mode  # chown clears setuid/setgid: set the mode after it
            self.setattr(cfh, caller, rest)
            attr = self._attr_of(cfh)
        self._sync_dir(dfd, dst, caller)
        return cfh, attr, Wcc(pre, self._post(dfd)), True

    def _made_and_gone(self, dfd, dst, fd, st, meta, caller, pre):
        """An object made here (``fd`` on it, closed by this) that lost its
        name before its stat: removed or renamed over by someone else at once
        (a worker, a process on this machine). It was made all the same, and
        is answered so (not STALE, which would tell a client its CREATE or
        MKDIR had failed); its handle is stale from now on, as after any
        removal. No attribute is set on it, and the directory's listing,
        changed twice, is read again (not kept in step, which would show the
        name)."""
        try:
            cfh = self._codec.encode_fd(fd)
        finally:
            os.close(fd)
        self._sync_dir(dfd, dst, caller)
        return cfh, self._attr(None, st, meta), Wcc(pre, self._post(dfd))

    def _create_existing(self, dfd, dst, name, caller, how, sattr, verf, pre):
        if how == CreateHow.GUARDED:
            raise FsError(nfsstat3.NFS3ERR_EXIST)
        pfd, st = self._pin(dfd, name, caller, dst)
        if not stat.S_ISREG(st.st_mode):
            os.close(pfd)
            raise FsError(nfsstat3.NFS3ERR_EXIST)
        fd, cfh = self._adopt(pfd, st)
        if how == CreateHow.EXCLUSIVE:
            meta = self._metafiles.get(fd, st)
            if meta.create_verf != verf:
                raise FsError(nfsstat3.NFS3ERR_EXIST)
        elif sattr.size is not None:
            self.setattr(cfh, caller, SetAttr(size=sattr.size))
        return cfh, self._attr_of(cfh), Wcc(pre, self._post(dfd))

    def _made(self, dfd, dst, pin, name, caller, pre, sattr, mode=None):
        """After mkdir/symlink/mknod: the handle and attributes of the new
        object, with the mode made exact and the other attributes applied.
        ``pin`` is an O_PATH fd on it, taken over by this: opened in the
        switch to the caller's credentials that made it, where Objects.pin's
        switch of its own was four to six more system calls for each."""
        pin, st = stat_pinned(pin)
        if st.st_nlink == 0:
            return self._made_and_gone(dfd, dst, pin, st, None, caller, pre)
        fd, cfh = self._adopt(pin, st)
        self._listing_changed(dst, dfd, added=((name, st.st_ino),))
        changed = False  # since st was taken
        if mode is not None and st.st_mode & 0o7777 != mode:
            with as_caller(caller.uid, caller.gid, caller.gids):
                os.chmod(proc_path(fd), mode)
            changed = True
        if sattr is not None and (sattr.uid is not None or sattr.gid is not None
                                  or sattr.atime is not None or sattr.mtime is not None):
            self.setattr(cfh, caller, SetAttr(uid=sattr.uid, gid=sattr.gid, atime=sattr.atime,
                                              mtime=sattr.mtime))
            changed = True
        self._sync_dir(dfd, dst, caller)
        if stat.S_ISDIR(st.st_mode):
            # The new directory too, as Linux nfsd commits the object it made
            # as well as its parent: on a file system without a journal (ext2,
            # ext4 without one) the parent's fsync writes neither the new
            # inode nor its block of "." and "..". Not where the parent's
            # fsync commits the journal with every change before it (ext3/
            # ext4 with one): that commit has the new directory already, and
            # noting it cost an open through /proc, its fsync and a close.
            if not self._objects.commits_all(st):
                self._sync_dir(fd, st, caller)
        else:
            # A symlink or a device node: no descriptor of its own can be
            # fsynced, so without a journal the file system is (journal.py).
            self._objects.sync_new_inode(dfd, dst, caller)
        # Unchanged since made, its stat is its attributes (fd, the cache's, is
        # still open: nothing was adopted since); else stat'ed again.
        attr = self._attr_of(cfh) if changed else self._objects.attr(fd, st)
        return cfh, attr, Wcc(pre, self._post(dfd))

    @maps_oserror
    def mkdir(self, dir_fh, name, caller, sattr):
        """Make a directory as the caller: (handle, Attr, directory Wcc).
        Default mode 0755; a setgid parent's setgid bit is kept."""
        check_writable(caller)
        dfd, _, dst = self._dir(dir_fh)
        name = _name(name, creating=True)
        pre = self._wcc_attr(dfd, dst)
        mode = 0o755 if sattr is None or sattr.mode is None else sattr.mode & 0o7777
        with as_caller(caller.uid, caller.gid, caller.gids):
            os.mkdir(name, mode, dir_fd=dfd)
            pin = open_pinned(dfd, name)  # (in the switch that made it)
        # Keep a setgid bit inherited from the parent, as mkdir(2) does.
        mode |= dst.st_mode & stat.S_ISGID
        return self._made(dfd, dst, pin, name, caller, pre, sattr, mode)

    @maps_oserror
    def symlink(self, dir_fh, name, caller, target, sattr):
        """Make a symlink to ``target`` (bytes) as the caller: (handle, Attr,
        directory Wcc). NAMETOOLONG for a target of 4096 bytes or more, INVAL
        for one with a NUL."""
        check_writable(caller)
        dfd, _, dst = self._dir(dir_fh)
        name = _name(name, creating=True)
        if isinstance(target, str):
            target = os.fsencode(target)
        if len(target) >= PATH_MAX:
            raise FsError(nfsstat3.NFS3ERR_NAMETOOLONG)
        if b"\0" in target:
            raise FsError(nfsstat3.NFS3ERR_INVAL)
        pre = self._wcc_attr(dfd, dst)
        with as_caller(caller.uid, caller.gid, caller.gids):
            os.symlink(target, name, dir_fd=dfd)
            pin = open_pinned(dfd, name)  # (in the switch that made it)
        return self._made(dfd, dst, pin, name, caller, pre, sattr)

    @maps_oserror
    def mknod(self, dir_fh, name, caller, ftype, sattr, rdev=(0, 0)):
        """Make a device, socket or fifo (``ftype`` a FileType; BADTYPE for
        others) as the caller: (handle, Attr, directory Wcc). ``rdev`` is
        (major, minor) for a device, INVAL beyond what a Linux dev_t holds."""
        check_writable(caller)
        bits = _MKNOD_BITS.get(ftype)
        if bits is None:
            raise FsError(nfsstat3.NFS3ERR_BADTYPE)
        dfd, _, dst = self._dir(dir_fh)
        name = _name(name, creating=True)
        pre = self._wcc_attr(dfd, dst)
        mode = 0o644 if sattr is None or sattr.mode is None else sattr.mode & 0o7777
        dev = 0
        if bits in (stat.S_IFCHR, stat.S_IFBLK):
            major, minor = rdev
            # What a Linux dev_t holds (12-bit major, 20-bit minor), as nfsd
            # checks; larger numbers are refused (the wire allows 32 bits).
            if not (0 <= major < 1 << 12 and 0 <= minor < 1 << 20):
                raise FsError(nfsstat3.NFS3ERR_INVAL, f"device {major}:{minor}")
            dev = os.makedev(major, minor)
        with as_caller(caller.uid, caller.gid, caller.gids):
            os.mknod(name, bits | mode, dev, dir_fd=dfd)
            pin = open_pinned(dfd, name)  # (in the switch that made it)
        return self._made(dfd, dst, pin, name, caller, pre, sattr, mode)

    @maps_oserror
    def link(self, fh, dir_fh, name, caller):
        """Make ``name`` in a directory a hard link to an object, as the caller:
        (Attr of the object, directory Wcc). ISDIR for a directory."""
        check_writable(caller)
        name = _name(name, creating=True)
        fd, cfh, st = self._open(fh)
        dfd, _, dst = self._dir(dir_fh)
        if stat.S_ISDIR(st.st_mode):
            raise FsError(nfsstat3.NFS3ERR_ISDIR)
        pre = self._wcc_attr(dfd, dst)
        with as_caller(caller.uid, caller.gid, caller.gids):
            link_fd(fd, dfd, name)
        self._listing_changed(dst, dfd, added=((name, st.st_ino),))
        self._sync_dir(dfd, dst, caller)
        return self._attr_of(cfh), Wcc(pre, self._post(dfd))

    # -- removing objects ---------------------------------------------------------------

    def _lstat(self, dfd, dst, name, caller):
        """The lstat of ``name`` in the directory ``dfd`` (whose stat is
        ``dst``), with the caller's search permission there: checked by the
        kernel, as the caller, unless the caller may search the directory on
        its mode alone (objects.searchable_by), where a switch to the caller's
        credentials and back (four to six system calls) would find the same."""
        if not self._searchable_by(dfd, dst, caller):
            with as_caller(caller.uid, caller.gid, caller.gids):
                return os.stat(name, dir_fd=dfd, follow_symlinks=False)
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)

    def _lstat_to_change(self, dfd, dst, name, caller, missing=False):
        """The lstat of ``name`` in the directory ``dfd`` (stat ``dst``),
        about to be changed by a system call that the kernel checks as the
        caller (unlink, rename): taken as root, without the check of the
        directory's ACL that _lstat's shortcut needs (a getxattr through /proc
        at nearly every REMOVE, the directory's ctime, its cache key, having
        changed with the call before). Nothing learnt here may reach the
        caller before that change succeeds: a failure is taken again as the
        caller, so that one who may not search the directory learns only that
        (ACCES), never whether the name exists. With ``missing``, None for a
        name that does not exist (the change, made next, tells the caller)."""
        try:
            return os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            if missing:
                return None
        except OSError:
            pass
        return self._lstat(dfd, dst, name, caller)

    def _pin_victim(self, dfd, dst, name, caller, missing=False):
        """What name (about to lose its link) is, pinned: (fd, stat, owned),
        owned telling whether the caller closes fd; with ``missing``, None
        when there is no such name. A file just made or used is in the
        handle cache, whose descriptor pins it as well as one opened here
        would: a stat of the name instead of an O_PATH open, its fstat and
        close (the cache closes its own once the file is gone). Were the name
        another inode's by the unlink, that one's data would leak (scrub
        finds it), as with an opened pin; none is purged while reachable. A
        directory is looked up again as the caller (remove() answers ISDIR
        before any change)."""
        st = self._lstat_to_change(dfd, dst, name, caller, missing)
        if st is None:
            return None
        if stat.S_ISDIR(st.st_mode):
            st = self._lstat(dfd, dst, name, caller)
        if stat.S_ISREG(st.st_mode) and st.st_dev == self.dev:
            cached = self._codec.cached_inode(st.st_ino)
            if cached is not None:
                return cached[0], st, False
        fd, st = self._pin(dfd, name, caller, dst)
        return fd, st, True

    @maps_oserror
    def remove(self, dir_fh, name, caller):
        """Remove a non-directory as the caller: directory Wcc. ISDIR for a
        directory. A file's data goes to the purge sink once its last link is
        gone."""
        check_writable(caller)
        dfd, _, dst = self._dir(dir_fh)
        name = _name(name)
        pre = self._wcc_attr(dfd, dst)
        pin, st, owned = self._pin_victim(dfd, dst, name, caller)
        try:
            if stat.S_ISDIR(st.st_mode):
                raise FsError(nfsstat3.NFS3ERR_ISDIR)
            meta = self._objects.meta_of_pinned(pin, st) if stat.S_ISREG(st.st_mode) else None
            with _remover(caller, dst):
                os.unlink(name, dir_fd=dfd)
            # Counted after the unlink, on the pinned inode: a LINK racing with
            # us cannot make us purge data that is still reachable.
            after = os.fstat(pin)
        finally:
            if owned:
                os.close(pin)
        self._listing_changed(dst, dfd, removed=(name,))
        # The removal must be durable before the data is handed to the purge
        # sink: after a crash, a metafile whose stripes were purged would come
        # back (data loss); the other order can only leak, which scrub finds.
        self._sync_dir(dfd, dst, caller)
        if after.st_nlink == 0:
            self._gone(after, meta, caller)
        return Wcc(pre, self._post(dfd))

    @maps_oserror
    def rmdir(self, dir_fh, name, caller):
        """Remove an empty directory as the caller: directory Wcc. NOTDIR for
        anything else, NOTEMPTY, INVAL for ".", NOTEMPTY for ".."."""
        check_writable(caller)
        dfd, _, dst = self._dir(dir_fh)
        name = _name(name)
        if name == b".":
            raise FsError(nfsstat3.NFS3ERR_INVAL)
        if name == b"..":
            raise FsError(nfsstat3.NFS3ERR_NOTEMPTY)
        pre = self._wcc_attr(dfd, dst)
        # A stat, not a pin (an O_PATH open, its fstat and close): what it
        # tells is only what to forget once the directory is gone, and no
        # data hangs on it, unlike a file's (remove).
        with _remover(caller, dst):
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                raise FsError(nfsstat3.NFS3ERR_NOTDIR)
            os.rmdir(name, dir_fd=dfd)
        self._listing_changed(dst, dfd, removed=(name,))
        self._gone(st, None)
        self._sync_dir(dfd, dst, caller)
        return Wcc(pre, self._post(dfd))

    @maps_oserror
    def rename(self, from_dir_fh, from_name, to_dir_fh, to_name, caller, replace=True):
        """Rename as the caller, replacing what ``to_name`` names as rename(2)
        does: (from directory Wcc, to directory Wcc). INVAL for "." or "..".
        A replaced file's data goes to the purge sink once its last link is
        gone. With ``replace`` False, TargetExists when ``to_name`` names
        anything, or renameat2 says EINVAL (nothing renamed either way)."""
        check_writable(caller)
        ffd, _, fst = self._dir(from_dir_fh)
        from_name = _name(from_name)
        # Within one directory (the usual rename) its attributes are had once
        # before and once after: two stats of a RENAME's six.
        one_dir = to_dir_fh == from_dir_fh
        tfd, _, tst = (ffd, None, fst) if one_dir else self._dir(to_dir_fh)
        to_name = _name(to_name)
        if from_name in (b".", b"..") or to_name in (b".", b".."):
            raise FsError(nfsstat3.NFS3ERR_INVAL)
        fpre = self._wcc_attr(ffd, fst)
        tpre = fpre if one_dir else self._wcc_attr(tfd, tst)
        # What it is, for the listings (the source keeps its inode).
        sst = self._lstat_to_change(ffd, fst, from_name, caller)
        tpin = tpst = None
        owned = False
        if replace:
            try:
                pinned = self._pin_victim(tfd, tst, to_name, caller, missing=True)
            except FileNotFoundError:  # (gone since)
                pinned = None
            if pinned is not None:
                tpin, tpst, owned = pinned
        try:
            tmeta = None
            if tpst is not None and stat.S_ISREG(tpst.st_mode) and \
                    (tpst.st_dev, tpst.st_ino) != (sst.st_dev, sst.st_ino):
                tmeta = self._objects.meta_of_pinned(tpin, tpst)
            # (A directory moved to another parent needs write permission on
            # it as well: left to the kernel.)
            moved_dir = not one_dir and stat.S_ISDIR(sst.st_mode)
            with as_caller(caller.uid, caller.gid, caller.gids) if moved_dir \
                    else _remover(caller, fst, tst):
                if replace:
                    os.rename(from_name, to_name, src_dir_fd=ffd, dst_dir_fd=tfd)
                else:
                    try:
                        rename_noreplace(ffd, from_name, tfd, to_name)
                    except FileExistsError:
                        raise TargetExists(to_name) from None
                    except OSError as e:
                        # A file system without RENAME_NOREPLACE (EINVAL, as
                        # for a directory moved under itself): not ours to say.
                        if e.errno != errno.EINVAL:
                            raise
                        raise TargetExists(to_name) from None
            after = os.fstat(tpin) if tpin is not None else None
        finally:
            if owned:
                os.close(tpin)
        same_dir = (fst.st_dev, fst.st_ino) == (tst.st_dev, tst.st_ino)
        onto_itself = tpst is not None and (sst.st_dev, sst.st_ino) == (tpst.st_dev, tpst.st_ino)
        if not onto_itself:
            if same_dir:
                self._listing_changed(fst, ffd, removed=(from_name,),
                                      added=((to_name, sst.st_ino),))
            else:
                self._listing_changed(fst, ffd, removed=(from_name,))
                self._listing_changed(tst, tfd, added=((to_name, sst.st_ino),))
        self._sync_dir(ffd, fst, caller)  # durable before purging: see remove()
        if not same_dir:
            self._sync_dir(tfd, tst, caller)
        if after is not None and after.st_nlink == 0:
            self._gone(after, tmeta, caller)
        fpost = self._post(ffd)
        return Wcc(fpre, fpost), Wcc(tpre, fpost if one_dir else self._post(tfd))

    # -- listing a directory -------------------------------------------------------------

    @maps_oserror
    def readdir(self, dir_fh, cookie, cookieverf, caller, max_entries, cookie_bits=64,
                budget=None, entry_size=None):
        """A page of a directory listing: (entries, eof, cookie verifier,
        directory Attr), entries a list of at most max_entries DirEntry
        following ``cookie`` (0: from the start, "." and ".." first; else a
        cookie this directory gave out, which stays valid across changes).

        ``cookieverf`` (8 bytes, or None not to check) is the verifier the
        cookie came with: BAD_COOKIE if it is not this directory's (all zeros
        pass) or the cookie is out of range. cookie_bits=32 for NFSv2 (cookies
        below 2**32). NOTDIR, ACCES without read permission.

        Entries whose names hash to the same cookie always come in the same page:
        a caller that cuts a page short must cut where the cookie changes (or
        pass budget and entry_size(name) -> bytes to have it done here;
        TOOSMALL when not even one entry fits)."""
        dfd, dst, verf = self._listed(dir_fh, cookie, cookieverf, caller, cookie_bits)
        entries, eof = self._page(dfd, dst, cookie, max_entries, cookie_bits, budget, entry_size)
        return entries, eof, verf, self._attr(dfd, dst)

    def _listed(self, dir_fh, cookie, cookieverf, caller, cookie_bits):
        """readdir's checks: (fd, stat, cookie verifier) of the directory."""
        if cookie_bits not in (32, 64):
            raise ValueError("cookie_bits must be 32 or 64")
        dfd, dcfh, dst = self._dir(dir_fh)
        if not permitted(dst.st_mode, dst.st_uid, dst.st_gid, caller, R):
            raise FsError(nfsstat3.NFS3ERR_ACCES)
        verf = self._listings.verifier(dcfh)
        if cookie and cookieverf is not None and bytes(cookieverf) not in (verf, _ZERO_VERF):
            raise FsError(nfsstat3.NFS3ERR_BAD_COOKIE)
        if cookie >= 1 << cookie_bits:
            raise FsError(nfsstat3.NFS3ERR_BAD_COOKIE)
        return dfd, dst, verf

    def _page(self, dfd, dst, cookie, max_entries, cookie_bits, budget, entry_size):
        listing = self._listings.get(dfd, dst, cookie_bits)

        def parent_ino():
            if dst.st_ino == self._root_ino:
                return dst.st_ino
            return os.stat("..", dir_fd=dfd, follow_symlinks=False).st_ino

        return listing.page(cookie, max(1, max_entries), budget, entry_size, dst.st_ino,
                            parent_ino)

    @maps_oserror
    def readdirplus(self, dir_fh, cookie, cookieverf, caller, max_entries, cookie_bits=64,
                    budget=None, entry_size=None, encoded=False, page_key=None):
        """readdir, each entry with what a LOOKUP of it gives: (rows, eof,
        cookie verifier, directory Attr), rows (DirEntry, handle, Attr) with
        handle and Attr None for a name that cannot be looked up (gone
        meanwhile, a mount point, not searchable). ``encoded``: rows
        (DirEntry, its NFSv3 entryplus3 XDR), the cheaper way for NFSv3's
        READDIRPLUS. nfspd/fs/dirplus.py.

        ``page_key``: hashable, and the same only for the same entry_size
        (NFSv3 passes its fixed bytes per entry): with a ``changes``, the
        page is then remembered as the names' lookups are
        (nfspd/fs/attrcache.py), and the same call again while nothing has
        changed gives the same rows without building them (8 clients
        listing one directory, or a job's every node): rows not to be
        modified."""
        dfd, dst, verf = self._listed(dir_fh, cookie, cookieverf, caller, cookie_bits)
        pages = self._pages(dfd, dst, caller) if page_key is not None else None
        if pages is not None:
            key = (cookie, cookie_bits, max_entries, budget, encoded, page_key)
            page = pages.get(key)
            if page is not None:
                return page[0], page[1], verf, self._attr(dfd, dst)
        entries, eof = self._page(dfd, dst, cookie, max_entries, cookie_bits, budget, entry_size)
        rows = lookup_entries(self._objects, self.lookup, dir_fh, entries, caller, encoded,
                              self._attrcache)
        if pages is not None:
            pages.put(key, (rows, eof), len(rows))
        return rows, eof, verf, self._attr(dfd, dst)

    @maps_oserror
    def listing_pages(self, dir_fh, cookie, cookieverf, caller, cookie_bits=64):
        """Where a front-end may keep what it makes of a page of this
        directory's listing for ``caller`` (an attrcache.Pages, keyed as it
        likes), until anything changes; None without ``changes``, while a
        change is under way, or for a caller who may not search the
        directory. Raises what readdir() would for these arguments."""
        dfd, dst, _ = self._listed(dir_fh, cookie, cookieverf, caller, cookie_bits)
        return self._pages(dfd, dst, caller)

    def _pages(self, dfd, dst, caller):
        cache = self._attrcache
        if cache is None:
            return None
        names = cache.directory((dst.st_ino, dst.st_mtime_ns, dst.st_ctime_ns))
        if names is None or not self._searchable_by(dfd, dst, caller):
            # (A caller who may not search here has each lookup made under
            # its own credentials: nothing of it kept or reused.)
            return None
        return Pages(names, cache)

    def cookieverf(self, dir_fh):
        """The cookie verifier of a directory: fixed for its lifetime, so that
        changes to it do not send clients back to the start."""
        _, cfh, _ = self._open(dir_fh)
        return self._listings.verifier(cfh)

    # -- the file system as a whole --------------------------------------------------------

    @maps_oserror
    def fsstat(self, fh):
        """FsStat of the file system holding an object: bytes where the data
        lives (the data path's figures when it has them), file slots of the
        metadata."""
        self._open(fh)
        st = os.statvfs(self._objects.root_fd)
        space = self._io.space()
        if space is None:
            space = (st.f_blocks * st.f_frsize, st.f_bfree * st.f_frsize, st.f_bavail * st.f_frsize)
        return FsStat(space[0], space[1], space[2], st.f_files, st.f_ffree, st.f_favail)

    def pathconf(self, fh, name):
        """os.pathconf of the object (e.g. "PC_LINK_MAX"), for PATHCONF/FSINFO;
        raises OSError."""
        fd, _, _ = self._open(fh)
        return os.pathconf(proc_path(fd), name)
