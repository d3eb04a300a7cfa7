"""Answering a namespace change once it is durable (exports(5) ``sync``).

MetaFS notes a change in its group commit (nfspd/fs/commit.py) and returns at
once; the procedure's handler hands its result to ``when_stable``, which gives
it back unchanged when nothing waits for a flush (an ``async`` export, a
MetaFS flushing on its own), or a dispatch Wait that returns it once the flush
covering the change is done. A retransmission arriving meanwhile finds the
call in progress in the duplicate request cache, and gets the same reply.
"""

from nfspd.dispatch import Wait


def when_stable(fs, caller, result):
    if not caller.sync:
        return result
    ticket = fs.stable_ticket()
    if ticket is None:
        return result
    return Wait(_stable_then, fs, ticket, result)


async def _stable_then(fs, ticket, result):
    await fs.stable(ticket)
    return result
