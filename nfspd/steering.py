"""NFSv3 namespace changes over UDP steered by the kernel to worker processes
(issue 15, ``nfspd --workers N``): the other cores make files.

nfspd and each worker have a UDP socket of their own, all bound to the NFS
port with SO_REUSEPORT: one reuseport group, nfspd's socket first (index 0),
worker i's at index i + 1. A classic BPF program attached to the group
(SO_ATTACH_REUSEPORT_CBPF) reads each datagram's RPC header and picks the
socket: an NFSv3 CREATE, MKDIR, SYMLINK, MKNOD, RMDIR, RENAME or LINK goes to
worker 1 + hash(xid) mod N, everything else to nfspd. So nfspd never
touches those calls (a hand-off through nfspd, nfspd/workers.py, costs its
core about what such a call does), and a retransmission, which carries the
same xid, reaches the worker that ran the original: that worker's duplicate
request cache answers it. Hashed, because clients number their calls one
after another: by xid mod 2, a client alternating CREATE and REMOVE gave
all its CREATEs to one worker (measured).

What stays with nfspd: REMOVE (the purge journal, and files NFSv4 clients
hold open), everything with data or NFSv4 state, and every TCP call (a
connection is nfspd's). A worker hands back what would need them
(nfspd/workers.py: a CREATE that sets a size, a RENAME onto an existing
name).

nfspd makes every socket of the group and keeps them: a worker that dies and
is started again gets the same socket, so the group's indices never move
(the kernel would otherwise fill a closed socket's slot with the last one);
what arrives meanwhile waits in its buffer, bounded by SO_RCVBUF.

Linux runs the program on the UDP payload (offset 0 is the xid); a load
beyond a short datagram's end makes it return 0: nfspd, which answers or
drops what is not a call.
"""

import ctypes
import socket
import struct

from common.nfs3 import NFSPROC3

NFS_PROGRAM = 100003
STEERED = (NFSPROC3.CREATE, NFSPROC3.MKDIR, NFSPROC3.SYMLINK, NFSPROC3.MKNOD,
           NFSPROC3.RMDIR, NFSPROC3.RENAME, NFSPROC3.LINK)

SO_ATTACH_REUSEPORT_CBPF = 51  # linux/asm-generic/socket.h

# Classic BPF (linux/filter.h): the instructions this program uses.
_LD_W_ABS = 0x20   # A = 32-bit word at offset k
_JEQ_K = 0x15      # pc += (A == k) ? jt : jf
_MOD_K = 0x94      # A %= k
_MUL_K = 0x24      # A *= k (32 bits)
_RSH_K = 0x74      # A >>= k
_ADD_K = 0x04      # A += k
_RET_A = 0x16
_RET_K = 0x06

_HEAD = struct.Struct(">IIIIII")  # xid, msg_type, rpcvers, prog, vers, proc
_CALL = 0
_GOLDEN = 0x9E3779B1  # Knuth's multiplicative hash: the product's high bits mix all of xid's


def _hash(xid):
    return ((xid * _GOLDEN) & 0xFFFFFFFF) >> 16


def worker_of(datagram, workers):
    """Whose socket the program picks for ``datagram``: 0 for nfspd, i + 1
    for worker i (of ``workers``). What the kernel does, for tests and for
    reading."""
    if workers < 1 or len(datagram) < _HEAD.size:
        return 0
    xid, msg_type, _, prog, vers, proc = _HEAD.unpack_from(datagram)
    if msg_type != _CALL or prog != NFS_PROGRAM or vers != 3 or proc not in STEERED:
        return 0
    return 1 + _hash(xid) % workers


def program(workers):
    """The filter: a list of (code, jt, jf, k), as struct sock_filter."""
    steer = len(STEERED)
    insns = [
        (_LD_W_ABS, 0, 0, 4),                      # msg_type
        (_JEQ_K, 0, 5 + steer, _CALL),             # no: ret 0
        (_LD_W_ABS, 0, 0, 12),                     # prog
        (_JEQ_K, 0, 3 + steer, NFS_PROGRAM),
        (_LD_W_ABS, 0, 0, 16),                     # vers
        (_JEQ_K, 0, 1 + steer, 3),
        (_LD_W_ABS, 0, 0, 20),                     # proc
    ]
    for i, proc in enumerate(STEERED):
        # Matched: jump over the rest of the tests and the ret 0.
        insns.append((_JEQ_K, steer - i, 0, int(proc)))
    insns += [
        (_RET_K, 0, 0, 0),                         # nfspd
        (_LD_W_ABS, 0, 0, 0),                      # xid
        (_MUL_K, 0, 0, _GOLDEN),
        (_RSH_K, 0, 0, 16),
        (_MOD_K, 0, 0, workers),
        (_ADD_K, 0, 0, 1),
        (_RET_A, 0, 0, 0),
    ]
    return insns


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def attach(sock, workers):
    """Attach the program to the reuseport group ``sock`` is in."""
    insns = program(workers)
    array = (_SockFilter * len(insns))(*(_SockFilter(*i) for i in insns))
    fprog = _SockFprog(len(insns), array)
    # The kernel copies the program during the call; ``array`` outlives it.
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, bytes(fprog))


def open_group(make_socket, host, port, workers):
    """nfspd's UDP socket and one per worker, bound to (host, port) in one
    reuseport group with the program attached: [nfspd's, worker 0's, ...].
    ``make_socket()`` gives an unbound socket set up as the server wants;
    port 0 takes a free port for all of them."""
    socks = []
    try:
        for _ in range(workers + 1):
            s = make_socket()
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((host, port))
            port = s.getsockname()[1]
        attach(socks[0], workers)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks
