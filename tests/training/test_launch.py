"""The torchrun command the job restarts itself under: local GPUs, AWS Batch, PyTorchJob."""

from __future__ import annotations

from job.training.launch import launch_command


def test_launcher_local_gpus() -> None:
    assert launch_command(["run", "x"], 1, {}) is None
    assert launch_command(["run", "x"], 4, {"LOCAL_RANK": "0"}) is None  # already launched
    cmd = launch_command(["run", "x"], 4, {})
    assert cmd is not None and cmd[1:4] == ["-m", "torch.distributed.run", "--nproc_per_node=4"]
    assert cmd[-4:] == ["-m", "job", "run", "x"]
    # one node: torchrun's own rendezvous on a free port, never a fixed 29500 that a second
    # job on the host (or one still closing) would hold
    assert "--standalone" in cmd and not [a for a in cmd if a.startswith("--master_port")]


def test_launcher_aws_batch_multinode() -> None:
    env = {
        "AWS_BATCH_JOB_NUM_NODES": "2",
        "AWS_BATCH_JOB_NODE_INDEX": "1",
        "AWS_BATCH_JOB_MAIN_NODE_INDEX": "0",
        "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS": "10.0.0.5",
    }
    cmd = launch_command(["run"], 8, env)
    assert cmd is not None
    assert {"--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.5", "--master_port=29500"} <= set(
        cmd
    )


def test_launcher_pytorchjob() -> None:
    env = {
        "PET_NNODES": "3",
        "PET_NODE_RANK": "2",
        "MASTER_ADDR": "job-master-0",
        "MASTER_PORT": "23456",
    }
    cmd = launch_command(["run"], 1, env)
    assert cmd is not None
    assert {
        "--nnodes=3",
        "--node_rank=2",
        "--master_addr=job-master-0",
        "--master_port=23456",
        "--nproc_per_node=1",
    } <= set(cmd)


def test_an_elastic_pytorchjob_gives_a_range_of_nodes() -> None:
    """Kubeflow's elastic policy sets PET_NNODES=MIN:MAX: torchrun takes the range and a c10d
    rendezvous at the master; int("1:4") failed before."""
    env = {"PET_NNODES": "1:4", "PET_NODE_RANK": "0", "MASTER_ADDR": "m-0", "MASTER_PORT": "23456"}
    cmd = launch_command(["run"], 2, env)
    assert cmd is not None
    assert {"--nnodes=1:4", "--rdzv_backend=c10d", "--rdzv_endpoint=m-0:23456"} <= set(cmd)
    assert "--standalone" not in cmd and not [a for a in cmd if a.startswith("--node_rank")]
    assert launch_command(["run"], 1, {"PET_NNODES": "1:1"}) is None  # one node, one GPU
