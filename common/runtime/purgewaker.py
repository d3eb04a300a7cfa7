"""The local link from nfspd to unlinkd: a Unix datagram socket in the journal
directory (paper 5.5.2 used a pipe; a socket also lets unlinkd run standalone
and be restarted on its own).

It carries only wake-ups ("the journal grew"): the records themselves are in
the journal, so a lost or refused wake-up costs at most unlinkd's periodic
rescan, never a purge. nfspd never blocks on it.
"""

import os
import socket

SOCKET = "unlinkd.sock"
WAKE = b"w"
# sun_path holds 108 bytes; longer journal paths are reached through the
# directory's descriptor (/proc/self/fd/N/...), which bind and connect accept.
_SUN_PATH_MAX = 100


def socket_path(directory):
    return os.path.join(directory, SOCKET)


class ShortPath:
    """A usable socket address for ``path`` while the context is open."""

    def __init__(self, path):
        self.path = path
        self._fd = None

    def __enter__(self):
        if len(os.fsencode(self.path)) <= _SUN_PATH_MAX:
            return self.path
        self._fd = os.open(os.path.dirname(self.path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return f"/proc/self/fd/{self._fd}/{os.path.basename(self.path)}"

    def __exit__(self, *exc):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Waker:
    """nfspd's side: wake() after each journal append. Non-blocking; failures
    (no unlinkd yet, its queue full) are ignored on purpose (see above)."""

    def __init__(self, directory):
        self.path = socket_path(directory)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)
        # A path short enough to be an address is used as it is (ShortPath's
        # checks were a third of a wake-up, which nfspd may send per REMOVE).
        self._addr = self.path if len(os.fsencode(self.path)) <= _SUN_PATH_MAX else None
        self.sent = self.dropped = 0

    def wake(self):
        try:
            if self._addr is not None:
                self._sock.sendto(WAKE, self._addr)
            else:
                with ShortPath(self.path) as addr:
                    self._sock.sendto(WAKE, addr)
            self.sent += 1
        except OSError:
            self.dropped += 1

    def close(self):
        self._sock.close()
