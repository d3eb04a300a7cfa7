"""The cluster key file that authenticates the iod protocol.

Format: one key per line, ``KEY_ID:HEX`` (KEY_ID 0-255, at least 32 bytes of
key). The first line signs; every line verifies, so a key can be rotated
without downtime: add the new key as a second line everywhere, then move it
first everywhere, then drop the old one. The file must be private (mode 0600
or stricter): anyone who can read it can write to every iod.
"""

import os
import re
import secrets
import stat

from common.iodproto import Keys

MIN_KEY_BYTES = 32


class KeyFileError(ValueError):
    pass


def parse(text, path="<key>"):
    entries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        kid, sep, hexkey = line.partition(":")
        try:
            # ASCII digits only: int() also takes "+1", "1_0" and other scripts' digits.
            if not sep or not re.fullmatch(r"[0-9]{1,3}", kid.strip()):
                raise ValueError
            kid = int(kid)
            key = bytes.fromhex(hexkey.strip())
        except ValueError:
            raise KeyFileError(f"{path}:{lineno}: expected KEY_ID:HEX") from None
        if not 0 <= kid <= 255:
            raise KeyFileError(f"{path}:{lineno}: key id {kid} is not in 0..255")
        if len(key) < MIN_KEY_BYTES:
            raise KeyFileError(f"{path}:{lineno}: key shorter than {MIN_KEY_BYTES} bytes")
        if any(k == kid for k, _ in entries):
            raise KeyFileError(f"{path}:{lineno}: key id {kid} listed twice")
        entries.append((kid, key))
    if not entries:
        raise KeyFileError(f"{path}: no key")
    return Keys(entries[0], entries[1:])


def load(path):
    """Read the key file, refusing one that others can read."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file "
                           f"(create one with `nfsp keygen {path}`)") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets others read the "
                           f"cluster key; chmod 600 it")
    with open(path) as f:
        return parse(f.read(), path)


def generate(path, key_id=0):
    """Create a new key file (mode 0600); refuses to overwrite one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{key_id}:{secrets.token_hex(MIN_KEY_BYTES)}\n")
        f.flush()
        os.fsync(f.fileno())
    return load(path)
