"""Re-reading the cluster key file on SIGHUP (key rotation without downtime).

Every daemon that holds the cluster key (nfspd, unlinkd, the iod) reloads it
the same way: read the file again; if it does not parse, keep the keys in use
and say why; otherwise swap the new keys into the shared Keys object
(Keys.update: every holder signs and verifies with them from its next frame).

The iod drops root after start-up, so it may no longer open a key file of
mode 0600 owned by root: it keeps the descriptor it opened at start
(``keep_open``) and reads that, which sees a file rewritten in place (``cat
new > key``) but not one replaced by a rename, which it refuses to guess about.
"""

import logging
import os

from common import keyfile

log = logging.getLogger(__name__)
_MAX_KEY_FILE = 1 << 16


class KeyFile:
    """The key file at ``path``; with ``keep_open``, a descriptor opened now
    (while still root) for later rereads. close() releases it."""

    def __init__(self, path, keep_open=False):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC) if keep_open else None

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def read(self):
        """The file's keys now (Keys); OSError or KeyFileError if it cannot be used."""
        try:
            return keyfile.load(self.path)
        except PermissionError:
            if self.fd is None:
                raise
            return self._read_descriptor()

    def reload_into(self, keys, logger=log):
        """SIGHUP: swap the file's keys into ``keys``, or keep the old ones and log
        why. Returns whether it reloaded."""
        try:
            new = self.read()
        except (OSError, keyfile.KeyFileError) as e:
            logger.error("SIGHUP: cluster key not reloaded, keeping the keys in use: %s", e)
            return False
        keys.update(new)
        logger.info("SIGHUP: cluster key reloaded: %s", new.describe())
        return True

    def _read_descriptor(self):
        path = self.path
        st = os.fstat(self.fd)
        try:
            now = os.stat(path)
        except OSError as e:
            now = None
            log.warning("SIGHUP: cannot tell whether %s was replaced (%s): reading the file "
                        "opened at start, which only an in-place rewrite changes", path,
                        e.strerror)
        if now is not None and (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise keyfile.KeyFileError(
                f"{path} was replaced by another file, which this process (no longer root) "
                f"cannot open: rewrite the key file in place (cat new > {path}) or restart it")
        if st.st_mode & 0o077:
            raise keyfile.KeyFileError(f"{path}: others may read it; chmod 600 it")
        data = os.pread(self.fd, _MAX_KEY_FILE, 0)
        return keyfile.parse(data.decode(errors="replace"), path)
