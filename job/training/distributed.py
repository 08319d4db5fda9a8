"""Several processes: who is who, and the few points where they meet.

Under ``torchrun``/the ``deepspeed`` launcher every process runs the same job. Rank 0 alone
fetches and cleans the tweets (the API is asked once, not once per GPU), samples, writes the
card and publishes; every rank trains. The clean tweets reach the other ranks by broadcast, not
by a shared disk, so this works across nodes too.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from typing import Any

from job.errors import BadConfig


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def ranks() -> Ranks:
    def number(name: str, default: int) -> int:
        value = os.environ.get(name) or str(default)
        if not value.isdigit():
            raise BadConfig(f"{name}={value[:20]!r} is not a rank number; unset it or fix it")
        return int(value)

    return Ranks(number("RANK", 0), number("WORLD_SIZE", 1), number("LOCAL_RANK", 0))


# What torchrun sets for each process. DeepSpeed's init_distributed uses them when all are
# there; when any is missing it goes looking for MPI (mpi4py), which a plain one-process run
# neither has nor needs.
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def as_one_process_group() -> None:
    """Make a plain process (no launcher) a process group of one, as ``torchrun
    --nproc_per_node=1`` would: rank 0 of 1, rendezvous on a free loopback port. ZeRO needs a
    group even on one GPU (``zero2-offload`` for gpt2-xl on a 24 GB card is this case)."""
    if "LOCAL_RANK" in os.environ:  # a launcher set them: theirs stand
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    defaults = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    for name, value in {**defaults, "MASTER_PORT": str(port)}.items():
        os.environ.setdefault(name, value)


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
