"""The system calls the os module lacks or cannot make the way a server needs.

utimensat/futimens with UTIME_NOW and UTIME_OMIT (os.utime cannot leave one
time alone), fchownat on the object an fd refers to, linkat of an fd's /proc
link, and the kernel's file handles (name_to_handle_at/open_by_handle_at);
and Linux's constants where the os module lacks them (PyPy's). They raise
OSError like the os module; credential switching is nfspd/fs/creds.py.
"""

import errno
import os
import threading

from cffi import FFI

from nfspd.fs.types import SET_TO_SERVER_TIME

# Declared for cffi rather than called through ctypes: on CPython the two cost
# the same, but PyPy's JIT compiles a cffi call to a plain C call (name_to_handle
# 1.3 against 14.7 us through ctypes there, timeit; a bare getppid 0.19
# against 20).
ffi = FFI()
ffi.cdef("""
struct timespec { long tv_sec; long tv_nsec; };
struct file_handle { unsigned int handle_bytes; int handle_type; unsigned char f_handle[128]; };
int renameat2(int, const char *, int, const char *, unsigned int);
int linkat(int, const char *, int, const char *, int);
int syncfs(int);
int utimensat(int, const char *, const struct timespec *, int);
int futimens(int, const struct timespec *);
int fchownat(int, const char *, unsigned int, unsigned int, int);
int name_to_handle_at(int, const char *, struct file_handle *, int *, int);
int open_by_handle_at(int, struct file_handle *, int);
int sync_file_range(int, long long, long long, unsigned int);
int setfsuid(unsigned int);
int setfsgid(unsigned int);
long syscall(long, ...);
""")
libc = ffi.dlopen(None)

# Linux's values, for an os module without them (PyPy 3.9's).
O_PATH = getattr(os, "O_PATH", 0o10000000)
O_TMPFILE = getattr(os, "O_TMPFILE", 0o20200000)
ST_NOATIME = getattr(os, "ST_NOATIME", 1024)
ST_RELATIME = getattr(os, "ST_RELATIME", 4096)

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


def _raise():
    e = ffi.errno
    raise OSError(e, os.strerror(e))


def _check(rc):
    if rc != 0:
        _raise()


_RENAME_NOREPLACE = 1


def rename_noreplace(src_dir_fd, src, dst_dir_fd, dst):
    """renameat2(2) with RENAME_NOREPLACE: FileExistsError rather than
    replacing what ``dst`` names (names as bytes)."""
    _check(libc.renameat2(src_dir_fd, src, dst_dir_fd, dst, _RENAME_NOREPLACE))


def link_fd(fd, dir_fd, name):
    """A new name (str or bytes) in dir_fd for what fd refers to, an O_TMPFILE
    included: linkat(2) of its /proc link, followed (what os.link with
    follow_symlinks=True means, and does on CPython; PyPy's links the
    symbolic link itself, EXDEV)."""
    if type(name) is not bytes:
        name = os.fsencode(name)
    _check(libc.linkat(_AT_FDCWD, proc_path(fd).encode(), dir_fd, name, _AT_SYMLINK_FOLLOW))


def syncfs(fd):
    """syncfs(2): write out the whole file system fd is on (what an inode
    that cannot be fsynced needs, nfspd/fs/journal.py)."""
    _check(libc.syncfs(fd))


# --- times --------------------------------------------------------------------


_MTIME_NOW = ffi.new("struct timespec[2]", [(0, _UTIME_OMIT), (0, _UTIME_NOW)])


def set_times(fd, atime, mtime):
    """atime/mtime: None (leave), SET_TO_SERVER_TIME or nanoseconds. Acts on the
    object itself (a symlink's own times for a symlink)."""
    if atime is None and mtime == SET_TO_SERVER_TIME:
        ts = _MTIME_NOW      # every WRITE
    else:
        ts = ffi.new("struct timespec[2]")
        for i, t in enumerate((atime, mtime)):
            if t is None:
                ts[i].tv_sec, ts[i].tv_nsec = 0, _UTIME_OMIT
            elif t == SET_TO_SERVER_TIME:
                ts[i].tv_sec, ts[i].tv_nsec = 0, _UTIME_NOW
            else:
                ts[i].tv_sec, ts[i].tv_nsec = divmod(int(t), 1_000_000_000)
    # On the descriptor itself when it is an open file (no path to walk); an
    # O_PATH descriptor (EBADF there) through its /proc link.
    if libc.futimens(fd, ts) == 0:
        return
    if ffi.errno != errno.EBADF:
        _raise()
    _check(libc.utimensat(_AT_FDCWD, proc_path(fd).encode(), ts, 0))


# --- owner --------------------------------------------------------------------


def chown(fd, uid, gid):
    """Change the owner and/or group (None: leave) of the object fd refers to,
    an O_PATH fd included, never following a symlink."""
    _check(libc.fchownat(fd, b"", _NO_ID if uid is None else uid, _NO_ID if gid is None else gid,
                         AT_EMPTY_PATH | _AT_SYMLINK_NOFOLLOW))


# --- kernel file handles --------------------------------------------------------


_handle_buffers = threading.local()
_HANDLE_AT = ffi.offsetof("struct file_handle", "f_handle")


def _handle_buffer():
    """This thread's (struct file_handle, the mount id's int, the struct as
    bytes): made once, as a READDIRPLUS asks for a handle per entry and
    building them was a third of the call."""
    try:
        return _handle_buffers.value
    except AttributeError:
        fh = ffi.new("struct file_handle *")
        value = _handle_buffers.value = (fh, ffi.new("int *"), ffi.buffer(fh))
        return value


def name_to_handle(dir_fd, name=b"", follow=False):
    """(handle_type, kernel handle bytes) of name relative to dir_fd (b"": dir_fd itself)."""
    fh, mount_id, raw = _handle_buffer()
    fh.handle_bytes = _MAX_HANDLE_SZ
    flags = (AT_EMPTY_PATH if not name else 0) | (_AT_SYMLINK_FOLLOW if follow else 0)
    if type(name) is not bytes:
        name = os.fsencode(name)
    if libc.name_to_handle_at(dir_fd, name, fh, mount_id, flags) != 0:
        _raise()
    return fh.handle_type, raw[_HANDLE_AT:_HANDLE_AT + fh.handle_bytes]


def open_by_handle(mount_fd, handle_type, data, flags=O_PATH):
    """An fd (close-on-exec) on the inode a kernel handle names, on mount_fd's
    file system. Needs CAP_DAC_READ_SEARCH: call it before switching credentials."""
    fh = ffi.new("struct file_handle *")
    fh.handle_bytes = len(data)
    fh.handle_type = handle_type
    ffi.memmove(fh.f_handle, data, len(data))
    fd = libc.open_by_handle_at(mount_fd, fh, flags | os.O_CLOEXEC)
    if fd < 0:
        _raise()
    return fd


# --- writeback ------------------------------------------------------------------


_SYNC_FILE_RANGE_WAIT_BEFORE, _SYNC_FILE_RANGE_WRITE, _SYNC_FILE_RANGE_WAIT_AFTER = 1, 2, 4


def start_writeback(fd):
    """Start writing a file's dirty pages out (its blocks allocated now), not
    waiting: many started, then one journal commit covers them all."""
    _check(libc.sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE))


def finish_writeback(fd):
    """Wait until a file's dirty pages are written out."""
    _check(libc.sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WAIT_BEFORE | _SYNC_FILE_RANGE_WRITE
                                | _SYNC_FILE_RANGE_WAIT_AFTER))
