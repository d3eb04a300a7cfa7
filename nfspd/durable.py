"""Answering a namespace change once it is durable (exports(5) ``sync``).

MetaFS notes a change in its group commit (nfspd/fs/commit.py) and returns at
once; the procedure's handler hands its result to ``when_stable``, which gives
it back unchanged when nothing waits for a flush (an ``async`` export, a
MetaFS flushing on its own), or a dispatch Wait that returns it once the flush
covering the change is done. That Wait says it waits for the group commit
only (``commit``): the transport answers it at the end of its batch of
received calls rather than in a task of its own (nfspd/parked.py). A
retransmission arriving meanwhile finds the call in progress in the
duplicate request cache, and gets the same reply.

A REMOVE, or a RENAME over a file, that takes a file's last name answers
only once the file's pNFS layouts are revoked at the iods too
(``when_unlinked``), so no data server serves the file after the reply: the
same rule for NFSv2, NFSv3 and NFSv4 (Nfs4Service.unlinked).
"""

from nfspd.dispatch import Wait


def when_stable(fs, caller, result):
    if not caller.sync:
        return result
    ticket = fs.stable_ticket()
    if ticket is None:
        return result
    return Wait(_stable_then, fs, ticket, result, commit=True)


async def _stable_then(fs, ticket, result):
    await fs.stable(ticket)
    return result


def layout_holder(ctx, fs, d, name, caller):
    """The handle of the file ``name`` in directory ``d`` names, when clients
    hold pNFS layouts on it (to be given to when_unlinked), else None."""
    v4 = ctx.service.v4
    return None if v4 is None else v4.layout_holder(fs, d, name, caller)


def when_unlinked(ctx, fs, caller, held, result):
    """when_stable, after revoking the layouts of ``held`` if the change
    took its last name."""
    revoke = None if held is None else ctx.service.v4.unlinked(fs, held)
    if revoke is None:
        return when_stable(fs, caller, result)
    return Wait(_revoked_then, revoke, when_stable(fs, caller, result))


async def _revoked_then(revoke, result):
    await revoke()
    return await result.fn(*result.args) if isinstance(result, Wait) else result
