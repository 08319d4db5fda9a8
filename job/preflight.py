"""Preflight: every credential and permission a run will need, checked before its first tweet.

Without it the job found a read-only output prefix after training, a missing ``HF_TOKEN``
after training (exit 9, an hour of GPU gone), and a missing W&B key as a traceback. Each check
costs at most one small request, so the whole takes seconds (a test holds it to 15 s):

- the output prefix is writable: a probe object under ``.preflight/``, written and deleted
  (exit 9 when access is denied, 11 when a folder refuses writes);
- every S3 input can be read: a ``HEAD`` of each (exit 4 when missing, 9 when denied);
- ``TWITTER_BEARER_TOKEN`` is set when a user's source is the API (exit 9);
- the Hub token is valid and may write to each repo's owner: one ``whoami`` (exit 9);
- W&B has a key when it is online: ``WANDB_API_KEY`` or a netrc entry (exit 9);
- ``HF_HOME``, where base weights are cached, is writable: a probe file (exit 11);
- on a GPU host, the NVIDIA driver runs the CUDA that torch's wheels were built for (exit 10;
  docs/deploy.md), where torch would only warn and train on the CPU;
- the host has the memory that offload would need (training/strategy.py; exit 10).
"""

from __future__ import annotations

import importlib.metadata
import logging
import netrc
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from job.cloud.hub import hf_token, whoami
from job.deadline import check_deadlines
from job.errors import BadConfig, CredentialsError, InputNotFound, NotWritable
from job.spec import BotJob
from job.storage import Storage, open_storage
from job.training import memory
from job.training.model import hf_home
from job.training.plan import pick_strategy
from job.training.strategy import offload_host_bytes, shape_of

log = logging.getLogger(__name__)

PROBE_PREFIX = ".preflight/"


def preflight(jobs: list[BotJob], storage: Storage | None) -> None:
    """Raise the first problem found for any of ``jobs``, as a JobError with its exit code."""
    if storage is not None:
        output_writable(storage)
    for job in jobs:
        inputs_readable(job)
    shared(jobs, storage=None)
    for job in jobs:
        host_memory(job)
    if jobs:
        log.info("preflight passed: %s", ", ".join(j.bot for j in jobs))


def per_bot(job: BotJob) -> None:
    """The checks of one bot alone (its inputs, its model's memory): in a task of several
    bots, a failure here fails that bot only."""
    inputs_readable(job)
    host_memory(job)


def shared(jobs: list[BotJob], storage: Storage | None) -> None:
    """The checks of what every bot of a task shares, a deployment's set-up: the output, the
    Twitter, Hub and W&B tokens, HF_HOME, the deadline and GPU-cap variables. A failure here
    fails the task's every bot."""
    check_deadlines()
    memory.check_gpu_cap()
    if storage is not None:
        output_writable(storage)
    for job in jobs:
        twitter_token(job)
    owners = sorted({j.hub_repo for j in jobs if j.hub_push and j.hub_repo})
    if owners:
        hub_can_write(owners)
    for mode in sorted(
        {j.config.wandb.mode or os.environ.get("WANDB_MODE") or "offline" for j in jobs}
    ):
        wandb_key(mode)
    if jobs:
        hf_home_writable()
        gpu_driver()


# The oldest driver branch that runs each CUDA major release's runtime (NVIDIA's CUDA Toolkit
# release notes, "CUDA minor version compatibility": 12.x needs >= 525.60.13, 13.x >= 580.65.06).
DRIVER_FOR_CUDA = {12: "R525 (525.60.13)", 13: "R580 (580.65.06)"}


def gpu_driver(runtime: str | None = None) -> None:
    """On a GPU host (the driver's libcuda loads), the driver runs the CUDA major release of
    the runtime torch's wheels bring (the ``nvidia-cuda-runtime`` package: none on a CPU
    build). A driver too old is one line here; torch would only warn that CUDA is unavailable
    and go on, training on the CPU for hours."""
    if runtime is None:
        try:
            runtime = importlib.metadata.version("nvidia-cuda-runtime")
        except importlib.metadata.PackageNotFoundError:
            return  # torch's CPU build: no CUDA to run
    driver = driver_cuda_version()
    if driver is None:
        return  # no NVIDIA driver: a CPU host, where the run trains on the CPU
    major = int(runtime.split(".")[0])
    if driver < major * 1000:
        found = f"{driver // 1000}.{driver % 1000 // 10}"
        need = DRIVER_FOR_CUDA.get(major, f"one for CUDA {major}")
        raise BadConfig(
            f"this host's NVIDIA driver runs CUDA up to {found}; the image's torch is built for"
            f" CUDA {'.'.join(runtime.split('.')[:2])}, which needs driver {need} or newer:"
            " update the host's driver (docs/deploy.md, GPU hosts)"
        )


def driver_cuda_version() -> int | None:
    """The CUDA version the installed driver runs (cuDriverGetVersion: 12020 is 12.2), or None
    where no driver library loads."""
    import ctypes

    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return int(version.value)


def output_writable(storage: Storage) -> None:
    key = PROBE_PREFIX + secrets.token_hex(8)
    try:
        storage.put_bytes(key, b"huggingtweets preflight probe\n")
    except CredentialsError as e:
        raise CredentialsError(
            f"{e}: the output prefix is not writable (the job needs s3:PutObject and"
            " s3:DeleteObject on it)"
        ) from e
    except OSError as e:
        raise NotWritable(f"{storage.uri}: not writable ({e.strerror})") from e
    storage.delete(key)


def inputs_readable(job: BotJob) -> None:
    for user in job.users:
        if user.uri is None:
            continue
        if user.uri.startswith("s3://"):
            parsed = urlparse(user.uri)
            open_storage(f"s3://{parsed.netloc}").head(parsed.path.lstrip("/"), user.uri)
        elif not Path(user.uri).expanduser().exists():  # before "preflight passed" is said
            noun = "archive" if user.source == "archive" else "tweets file"
            raise InputNotFound(f"{noun} not found: {user.uri}")


def twitter_token(job: BotJob) -> None:
    if any(u.source == "api" for u in job.users) and not os.environ.get("TWITTER_BEARER_TOKEN"):
        raise CredentialsError(
            f"{job.bot}: the API source needs TWITTER_BEARER_TOKEN in the environment"
        )


def hub_can_write(repos: list[str]) -> None:
    """The token is valid (one ``whoami`` call) and its role lets it write to each repo."""
    me = whoami(hf_token("pushing to the Hub"))
    for repo in repos:
        problem = write_problem(me, repo.split("/")[0])
        if problem:
            raise CredentialsError(f"HF_TOKEN cannot push to {repo}: {problem}")


def write_problem(me: dict[str, Any], owner: str) -> str | None:
    """Why a token described by ``whoami-v2`` cannot write to ``owner``'s repos, or None.

    Roles (huggingface.co/docs/hub/security-tokens): ``read`` never writes; ``write`` writes
    where its user may (their own namespace and their organizations); a ``fineGrained`` token
    writes where one of its scopes for that user or organization grants ``repo.write``.
    """
    token = (me.get("auth") or {}).get("accessToken") or {}
    role = token.get("role")
    name = me.get("name")
    orgs = {o.get("name") for o in me.get("orgs") or [] if isinstance(o, dict)}
    if role == "read":
        return "it is a read-only token"
    if role == "fineGrained":
        scoped = (token.get("fineGrained") or {}).get("scoped") or []
        for scope in scoped:
            entity = scope.get("entity") or {}
            if entity.get("name") == owner and "repo.write" in (scope.get("permissions") or []):
                return None
        return f"its fine-grained scopes do not grant repo.write on {owner!r}"
    if owner != name and owner not in orgs:
        return f"its user {name!r} is not {owner!r} nor a member of it"
    return None


def wandb_key(mode: str) -> None:
    if mode != "online" or os.environ.get("WANDB_API_KEY"):
        return
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or ""
    try:
        if netrc.netrc().authenticators(host):
            return
    except (OSError, netrc.NetrcParseError):
        pass
    raise CredentialsError(
        "W&B is online but no key was found (WANDB_API_KEY or a netrc entry for"
        f" {host}); set one, or choose wandb mode offline or disabled"
    )


def hf_home_writable() -> None:
    """Base weights are cached in HF_HOME; a root-owned volume there fails the first download."""
    home = hf_home()
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=home, prefix=".huggingtweets-probe-"):
            pass
    except OSError as e:
        raise NotWritable(
            f"HF_HOME {home} is not writable ({e.strerror}); mount a volume the job's user"
            " (uid 1000 in the image) can write, or set HF_HOME to one"
        ) from e


def host_memory(job: BotJob) -> None:
    """The strategy's host-memory check, now rather than after the download (GPT-2 sizes only:
    another base model's size is known once its config is read)."""
    train = job.config.train
    if train.strategy not in ("auto", "zero2-offload", "zero3-offload"):
        return

    if job.base.size is None:  # not a GPT-2 size: its size is known once its config is read
        return
    host = memory.host_memory_bytes()
    if offload_host_bytes(shape_of(train.base_model), 1) <= host * memory.HEADROOM:
        return  # even offload would fit this host: no need to ask torch about the GPUs
    import torch

    gpus = torch.cuda.device_count()
    gpu_bytes = memory.gpu_total_bytes() if gpus else 0
    pick_strategy(train, {}, train.block_size, gpus, gpu_bytes, host)  # raises when short
