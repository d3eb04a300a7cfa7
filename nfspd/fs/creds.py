"""Run file system calls with a caller's credentials, on this thread only.

Linux keeps fsuid/fsgid and the supplementary groups per thread; glibc's
setgroups() would broadcast to every thread of the process (POSIX semantics),
so the raw system call is used. While fsuid != 0 the kernel also drops the file
system capabilities (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_CHOWN,
CAP_MKNOD...), which is what makes it apply the caller's permissions. Anything
needing those (open_by_handle_at) has to happen before switching.

The thread always returns to root (0/0/no groups), even on exceptions; if that
ever fails the daemon must not go on with a half-switched thread, so it aborts.
"""

import errno
import os
import platform
import sys

from nfspd.fs.syscalls import ffi, libc

NGROUPS_MAX = 65536

_SYS_SETGROUPS = {"x86_64": 116, "aarch64": 159, "riscv64": 159, "ppc64le": 81, "s390x": 206}

# setfs[ug]id never set errno. The previous id they return is a uid_t, read
# as a C int: masked back to it wherever it is compared (unmasked, every id
# >= 2**31 would look like a failed switch).
_setfsuid = libc.setfsuid
_setfsgid = libc.setfsgid
_ID = 0xFFFFFFFF
_NR_setgroups = _SYS_SETGROUPS.get(platform.machine())
_QUERY = 0xFFFFFFFF  # an invalid id: setfs*id only reports the current value


_group_arrays = {}


def _setgroups(gids):
    if _NR_setgroups is None:
        raise OSError(38, f"setgroups syscall number unknown on {platform.machine()}")
    arr = _group_arrays.get(gids)
    if arr is None:
        arr = ffi.new("unsigned int[]", max(1, len(gids)))
        arr[0:len(gids)] = gids
        if len(_group_arrays) > 1024:
            _group_arrays.clear()
        _group_arrays[gids] = arr
    # Variadic: every argument a C type of its own.
    if libc.syscall(_NR_setgroups, ffi.cast("long", len(gids)), ffi.cast("unsigned int *", arr)) != 0:
        e = ffi.errno
        raise OSError(e, os.strerror(e))


def current():
    """(fsuid, fsgid) of this thread."""
    return _setfsuid(_QUERY) & _ID, _setfsgid(_QUERY) & _ID


def _fatal(what):
    sys.stderr.write(f"nfsp: {what}, aborting\n")
    sys.stderr.flush()
    os.abort()


class as_caller:
    """Within the block, file system calls of this thread are made as uid/gid/gids.
    No-op for root with group 0 (the daemon already is that). Never start a
    thread inside the block: it would inherit the caller's credentials.

    setfs[ug]id report the previous value instead of failing, which is used to
    check both switches without extra system calls: each switch must find root
    there, so a failed return to root is caught at the next switch at the latest
    (and the return itself is checked too)."""

    __slots__ = ("uid", "gid", "gids", "active")

    def __init__(self, uid, gid, gids=()):
        self.uid, self.gid = uid, gid
        gids = gids if type(gids) is tuple else tuple(gids)
        if gid in gids:
            # The kernel finds the fsgid a member before it looks at the
            # supplementary list (in_group_p), so the primary group there
            # adds nothing; Linux clients send it there. Without it a user
            # with one group needs no setgroups: 2 of a switch's 6 system
            # calls, a third of its cost (4.3-4.8 against 6.8 us, timeit).
            gids = () if len(gids) == 1 else tuple(g for g in gids if g != gid)
        self.gids = gids
        self.active = False

    def __enter__(self):
        uid, gid = self.uid, self.gid
        if uid == 0 and gid == 0:
            return self
        if uid == _QUERY or gid == _QUERY:
            # (uid_t)-1 is no id: setfs*id would only report, and leave the
            # thread acting as root. Squashing maps it away before this.
            raise PermissionError(errno.EPERM, "uid or gid -1 cannot act")
        gids = self.gids
        if len(gids) > NGROUPS_MAX:
            gids = gids[:NGROUPS_MAX]
        self.active = True
        try:
            if gids:
                _setgroups(gids)
            if _setfsgid(gid) != 0:
                _fatal("thread was not at fsgid 0 before switching")
            if _setfsuid(uid) != 0:
                _fatal("thread was not at fsuid 0 before switching")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        if not self.active:
            return False
        self.active = False
        # Both, always (then compared): setfs*id returns the previous value;
        # anything but what we set means this thread's credentials are not
        # what we think.
        was = _setfsuid(0) & _ID, _setfsgid(0) & _ID
        if was != (self.uid, self.gid):
            if current() != (0, 0):
                _fatal("cannot return to root credentials")
        if self.gids:
            try:
                _setgroups(())
            except OSError:
                _fatal("cannot drop supplementary groups")
        return False


def _probe():
    """Switching must work (root with CAP_SETUID/CAP_SETGID), or callers would
    silently act as root."""
    if os.geteuid() != 0:
        return
    with as_caller(65534, 65534, (65534,)):
        ok = current() == (65534, 65534)
    if not ok:
        raise RuntimeError("setfsuid/setfsgid do not work: refusing to run without them")


_probe()
