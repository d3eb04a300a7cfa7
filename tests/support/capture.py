"""Packets as they arrive on a test namespace's loopback (what the iods'
spoofed replies look like on the wire)."""

import socket
import time


class Capture:
    """IPv4 packets arriving on the namespace's loopback, from a raw
    AF_PACKET socket (create it with ns.inside() so it opens there). Each
    packet is seen once, as it is received."""

    ETH_P_IP = 0x0800

    def __init__(self, interface="lo"):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM,
                                  socket.htons(self.ETH_P_IP))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self.sock.bind((interface, self.ETH_P_IP))

    def take(self, predicate, done, timeout=10.0):
        """Packets (raw IP bytes) for which predicate(bytes) holds, until
        done(list so far) is true; raises TimeoutError past the bound."""
        deadline = time.monotonic() + timeout
        found = []
        while not done(found):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"capture incomplete after {timeout}s: {len(found)} packets")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(1 << 17)
            except TimeoutError:
                continue
            if predicate(data):
                found.append(data)
        return found

    def close(self):
        self.sock.close()
