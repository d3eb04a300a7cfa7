"""Stores the NFSv4 client record (nfs4record) durably, for grace after a restart.

The I/O shell around the pure state: one small file in a directory the daemon
gives, replaced atomically (temporary file, fsync, rename, fsync of the
directory) so a crash leaves the old record or the new one, never a mix. The
daemon calls save() only when Nfs4State.record_generation changed (a client
finished reclaiming, was destroyed or expired, grace ended), not per request.

A record that cannot be read back (torn, edited, another version) is logged
and treated as empty: no client may reclaim, which is safe, and the server
starts instead of refusing to.
"""

import logging
import os

from nfspd.nfs4record import RecordError, decode_record

log = logging.getLogger(__name__)

RECORD_NAME = "nfs4-clients"


class RecoveryStore:
    def __init__(self, directory):
        self.directory = directory
        self.path = os.path.join(directory, RECORD_NAME)
        self._saved_generation = None

    def load(self):
        """The previous boot's record bytes, or None when there is none usable."""
        try:
            with open(self.path, "rb") as f:
                data = f.read(1 << 22)
        except FileNotFoundError:
            return None
        except OSError as e:
            log.error("NFSv4 client record %s unreadable (%s): starting without one, "
                      "no client can reclaim", self.path, e)
            return None
        try:
            decode_record(data)
        except RecordError as e:
            log.error("NFSv4 client record %s is damaged (%s): starting with an empty "
                      "record, no client can reclaim", self.path, e)
            return None
        return data

    def save(self, state):
        """Store ``state.record()`` if it changed since the last save."""
        if state.record_generation == self._saved_generation:
            return False
        self._write(state.record())
        self._saved_generation = state.record_generation
        return True

    def _write(self, data):
        os.makedirs(self.directory, exist_ok=True)
        tmp = f"{self.path}.tmp.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
