"""Binding a socket to a privileged port (below 1024), as bindresvport(3) does.

Kernel NFS clients call from such ports, `secure` exports (and an iod run with
--secure-port) accept only them, and rpcbind records a registration made from
one as owned by the superuser. Only root may bind them.
"""

import errno
import random

PRIVILEGED_PORTS = 1024
# Linux's bindresvport range; the ports below 600 are left to well-known services.
_RESERVED = range(600, PRIVILEGED_PORTS)


def bind_reserved(sock, host=""):
    """Bind ``sock`` (a stdlib socket) to a free port below 1024 and return it;
    OSError if none is free or we may not (EACCES without root)."""
    ports = list(_RESERVED)
    random.shuffle(ports)
    for port in ports:
        try:
            sock.bind((host, port))
            return port
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, "no free reserved port")


def reserve_port(sock, host=""):
    """Bind ``sock`` to a port below 1024 if we may; returns whether it did
    (False without root: the caller decides whether to go on unbound)."""
    try:
        bind_reserved(sock, host)
        return True
    except OSError:
        return False
