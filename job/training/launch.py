"""Launching the job on every local GPU, and across nodes, with ``torchrun``.

``huggingtweets run`` restarts itself under ``torchrun`` when more than one GPU is visible or
the platform says it is one node of several, unless it already runs under a launcher
(``LOCAL_RANK`` is set). Multi-node comes from the platform's environment:

- AWS Batch multi-node parallel jobs: ``AWS_BATCH_JOB_NUM_NODES``, ``AWS_BATCH_JOB_NODE_INDEX``,
  and on the other nodes ``AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS`` (the main node is
  the rendezvous host itself).
- Kubernetes PyTorchJob (Kubeflow training operator): ``PET_NNODES``, ``PET_NODE_RANK``,
  ``MASTER_ADDR``/``MASTER_PORT`` (torchrun reads ``PET_*`` itself; they are passed explicitly
  here so both platforms take one path). An elastic job's ``PET_NNODES`` is a range,
  ``MIN:MAX``: torchrun then takes it as given and rendezvous through c10d at the master, which
  assigns the node ranks.

One node: ``--standalone``, torchrun's local rendezvous on a free port. A fixed port (29500)
would clash with a second job on the same host, or one still closing.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping

DEFAULT_PORT = "29500"


def launch_command(argv: list[str], gpus: int, env: Mapping[str, str]) -> list[str] | None:
    """The torchrun command to re-run ``argv`` with, or None to run in this process."""
    if "LOCAL_RANK" in env:
        return None
    spec = env.get("AWS_BATCH_JOB_NUM_NODES") or env.get("PET_NNODES") or "1"
    elastic = ":" in spec  # MIN:MAX
    nodes = int(spec.rsplit(":", 1)[-1])  # the most there may be
    if gpus <= 1 and nodes <= 1:
        return None
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={max(gpus, 1)}"]
    if nodes <= 1:
        command.append("--standalone")
    else:
        node_rank = env.get("AWS_BATCH_JOB_NODE_INDEX") or env.get("PET_NODE_RANK") or "0"
        main = env.get("AWS_BATCH_JOB_MAIN_NODE_INDEX")
        if main is not None and node_rank == main:  # AWS: the main node hosts the rendezvous
            master = socket.gethostbyname(socket.gethostname())
        else:
            master = (
                env.get("AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS")
                or env.get("MASTER_ADDR")
                or env.get("PET_MASTER_ADDR")
                or "127.0.0.1"
            )
        port = env.get("MASTER_PORT") or env.get("PET_MASTER_PORT") or DEFAULT_PORT
        if elastic:
            command += [
                f"--nnodes={spec}",
                "--rdzv_backend=c10d",
                f"--rdzv_endpoint={master}:{port}",
            ]
        else:
            command += [
                f"--nnodes={nodes}",
                f"--node_rank={node_rank}",
                f"--master_addr={master}",
                f"--master_port={port}",
            ]
    return [*command, "-m", "job", *argv]


def relaunch_if_needed(argv: list[str]) -> None:
    """Replace this process with torchrun when the machine or platform calls for it."""
    import os

    if not argv or argv[0] != "run":
        return
    import torch

    command = launch_command(argv, torch.cuda.device_count(), os.environ)
    if command is not None:
        print(f"launching: {' '.join(command[3:])}", file=sys.stderr)
        os.execv(sys.executable, command)
