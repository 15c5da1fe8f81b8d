"""Only the job's own processes train together.

A multi-node job's rank 0 hosts the rendezvous on a port any pod may reach, so a process that
is not the job's could join as a rank and, from then on, take part in every collective: read
the data and checkpoints sent to it, send what it likes. The operator gives every rank's pod one
random token (wire.ENV_RENDEZVOUS_TOKEN); right after the process group forms, before any data
or checkpoint moves, each process sends an HMAC of its rank under that token, and every
process checks every rank's: one wrong or missing proof stops all of them.
"""
from __future__ import annotations

import hashlib
import hmac
import os

import torch.distributed as dist

from kubetune_api import wire
from kubetune_trainer.training import rankwire

CONTEXT = b"kubetune-rendezvous"


class RendezvousError(RuntimeError):
    """A process without the job's token is in the process group."""


def proof(token: str, rank: int, world: int) -> bytes:
    """What rank `rank` of `world` sends: bound to its rank, so no rank can pass as another.
    No token (a single-node run, no operator): no proof, and no process may send one."""
    if not token:
        return b""
    return hmac.new(token.encode(), CONTEXT + f":{world}:{rank}".encode(), hashlib.sha256).digest()


def verify(device) -> None:
    """Raises RendezvousError on every process unless every process holds this process's token."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    token, world = os.environ.get(wire.ENV_RENDEZVOUS_TOKEN, ""), dist.get_world_size()
    sent = rankwire.all_gather_bytes(proof(token, dist.get_rank(), world), device)
    for rank, got in enumerate(sent):
        if not hmac.compare_digest(got, proof(token, rank, world)):
            raise RendezvousError(f"a process that does not hold this job's rendezvous token joined rank {rank}; "
                                  "stopping before any data or checkpoint moves")
