"""The system calls the os module lacks or cannot make the way a server needs.

utimensat/futimens with UTIME_NOW and UTIME_OMIT (os.utime cannot leave one
time alone), fchownat on the object an fd refers to, and the kernel's file
handles (name_to_handle_at/open_by_handle_at). They raise OSError like the os
module; credential switching is nfspd/fs/creds.py.
"""

import ctypes
import errno
import os
import threading

from nfspd.fs.types import SET_TO_SERVER_TIME

_libc = ctypes.CDLL(None, use_errno=True)

_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2
_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100
_AT_SYMLINK_FOLLOW = 0x400
AT_EMPTY_PATH = 0x1000
_NO_ID = 0xFFFFFFFF  # (uid_t)-1: leave alone
_MAX_HANDLE_SZ = 128


def proc_path(fd):
    """A path reaching what fd refers to, for calls that take no fd (an
    O_PATH fd cannot be read, chmod'ed or fsync'ed through)."""
    return f"/proc/self/fd/{fd}"


def _check(rc):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


_RENAME_NOREPLACE = 1
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                            ctypes.c_uint]


def rename_noreplace(src_dir_fd, src, dst_dir_fd, dst):
    """renameat2(2) with RENAME_NOREPLACE: FileExistsError rather than
    replacing what ``dst`` names (names as bytes)."""
    _check(_libc.renameat2(src_dir_fd, src, dst_dir_fd, dst, _RENAME_NOREPLACE))


def syncfs(fd):
    """syncfs(2): write out the whole file system fd is on (what an inode
    that cannot be fsynced needs, nfspd/fs/journal.py)."""
    _check(_libc.syncfs(fd))


# --- times --------------------------------------------------------------------


class _timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_timespec), ctypes.c_int]
_libc.futimens.argtypes = [ctypes.c_int, ctypes.POINTER(_timespec)]
_MTIME_NOW = (_timespec * 2)(_timespec(0, _UTIME_OMIT), _timespec(0, _UTIME_NOW))


def set_times(fd, atime, mtime):
    """atime/mtime: None (leave), SET_TO_SERVER_TIME or nanoseconds. Acts on the
    object itself (a symlink's own times for a symlink)."""
    if atime is None and mtime == SET_TO_SERVER_TIME:
        ts = _MTIME_NOW      # every WRITE
    else:
        ts = (_timespec * 2)()
        for i, t in enumerate((atime, mtime)):
            if t is None:
                ts[i].tv_sec, ts[i].tv_nsec = 0, _UTIME_OMIT
            elif t == SET_TO_SERVER_TIME:
                ts[i].tv_sec, ts[i].tv_nsec = 0, _UTIME_NOW
            else:
                ts[i].tv_sec, ts[i].tv_nsec = divmod(int(t), 1_000_000_000)
    # On the descriptor itself when it is an open file (no path to walk); an
    # O_PATH descriptor (EBADF there) through its /proc link.
    if _libc.futimens(fd, ts) == 0:
        return
    if ctypes.get_errno() != errno.EBADF:
        _check(-1)
    _check(_libc.utimensat(_AT_FDCWD, proc_path(fd).encode(), ts, 0))


# --- owner --------------------------------------------------------------------


_libc.fchownat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint,
                           ctypes.c_int]


def chown(fd, uid, gid):
    """Change the owner and/or group (None: leave) of the object fd refers to,
    an O_PATH fd included, never following a symlink."""
    _check(_libc.fchownat(fd, b"", _NO_ID if uid is None else uid, _NO_ID if gid is None else gid,
                          AT_EMPTY_PATH | _AT_SYMLINK_NOFOLLOW))


# --- kernel file handles --------------------------------------------------------


class _FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint),
                ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_ubyte * _MAX_HANDLE_SZ)]


# name_to_handle_at is called with ctypes' own conversions (ints as C ints,
# bytes and byref() as pointers) through a handle of its own, where the
# declared types are not checked: a new file's handle, and a READDIRPLUS
# entry's, took 2.05 us through them against 0.88 (timeit, with the bytes
# sliced from the buffer rather than through string_at).
_name_to_handle_at = ctypes.CDLL(None, use_errno=True).name_to_handle_at
_libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.POINTER(_FileHandle), ctypes.c_int]


_handle_buffers = threading.local()


_HANDLE_AT = _FileHandle.f_handle.offset


def _handle_buffer():
    """This thread's (struct file_handle, its pointer, the mount id's, the
    struct as bytes): made once, as a READDIRPLUS asks for a handle per
    entry and building them was a third of the call."""
    try:
        return _handle_buffers.value
    except AttributeError:
        fh = _FileHandle()
        mount_id = ctypes.c_int()
        raw = (ctypes.c_char * ctypes.sizeof(fh)).from_buffer(fh)
        value = _handle_buffers.value = (fh, ctypes.byref(fh), ctypes.byref(mount_id), raw)
        return value


def name_to_handle(dir_fd, name=b"", follow=False):
    """(handle_type, kernel handle bytes) of name relative to dir_fd (b"": dir_fd itself)."""
    fh, pfh, pmount_id, raw = _handle_buffer()
    fh.handle_bytes = _MAX_HANDLE_SZ
    flags = (AT_EMPTY_PATH if not name else 0) | (_AT_SYMLINK_FOLLOW if follow else 0)
    if type(name) is not bytes:
        name = os.fsencode(name)
    if _name_to_handle_at(dir_fd, name, pfh, pmount_id, flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return fh.handle_type, raw[_HANDLE_AT:_HANDLE_AT + fh.handle_bytes]


def open_by_handle(mount_fd, handle_type, data, flags=os.O_PATH):
    """An fd (close-on-exec) on the inode a kernel handle names, on mount_fd's
    file system. Needs CAP_DAC_READ_SEARCH: call it before switching credentials."""
    fh = _FileHandle()
    fh.handle_bytes = len(data)
    fh.handle_type = handle_type
    ctypes.memmove(fh.f_handle, data, len(data))
    fd = _libc.open_by_handle_at(mount_fd, ctypes.byref(fh), flags | os.O_CLOEXEC)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return fd


# --- writeback ------------------------------------------------------------------


_libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong,
                                  ctypes.c_uint]
_SYNC_FILE_RANGE_WAIT_BEFORE, _SYNC_FILE_RANGE_WRITE, _SYNC_FILE_RANGE_WAIT_AFTER = 1, 2, 4


def start_writeback(fd):
    """Start writing a file's dirty pages out (its blocks allocated now), not
    waiting: many started, then one journal commit covers them all."""
    _check(_libc.sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE))


def finish_writeback(fd):
    """Wait until a file's dirty pages are written out."""
    _check(_libc.sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WAIT_BEFORE | _SYNC_FILE_RANGE_WRITE
                                 | _SYNC_FILE_RANGE_WAIT_AFTER))
