"""Several processes: who is who, and the few points where they meet.

Under ``torchrun``/the ``deepspeed`` launcher every process runs the same job. Rank 0 alone
fetches and cleans the tweets (the API is asked once, not once per GPU), samples, writes the
card and publishes; every rank trains. The clean tweets reach the other ranks by broadcast, not
by a shared disk, so this works across nodes too.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def ranks() -> Ranks:
    return Ranks(
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def init() -> Ranks:
    """Join the process group when launched as several processes (idempotent)."""
    import torch
    import torch.distributed as dist

    r = ranks()
    if r.world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(r.local_rank)
        dist.init_process_group(backend=backend)
    return r


def _group() -> Any:
    """torch.distributed when a process group is up, else None. Never imported means no group,
    and a single process need not pay torch's ~2 s import to find that out."""
    dist = sys.modules.get("torch.distributed")
    return dist if dist is not None and dist.is_available() and dist.is_initialized() else None


def share(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (others pass anything, e.g. None)."""
    dist = _group()
    if dist is None:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    dist = _group()
    if dist is not None:
        dist.barrier()
