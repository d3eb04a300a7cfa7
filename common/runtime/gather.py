"""Sending several buffers with one sendmsg (gathered I/O), so that data
leaves from where it was received instead of being joined into one bytes
object first. A non-blocking sendmsg may take only part of them."""


def unsent(bufs, sent):
    """What of the buffers ``bufs`` remains once ``sent`` bytes went out."""
    i = 0
    while i < len(bufs) and sent >= len(bufs[i]):
        sent -= len(bufs[i])
        i += 1
    rest = bufs[i:]
    if sent:
        rest[0] = memoryview(rest[0])[sent:]
    return rest
