"""This machine's memory, as the strategies and a task's kept bases need it: the host's (or
the container's limit) and this process's, with the share of it the job plans to use."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from job.errors import BadConfig

# What the plans may fill of a memory: the rest is the allocator's fragmentation, CUDA's
# context and libraries, and what the estimates miss.
HEADROOM = 0.85
GIB = 1024**3


def host_memory_bytes() -> int:
    """This machine's memory, or the container's limit where that is lower (cgroup v2, v1)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            value = Path(limit).read_text().strip()
        except OSError:
            continue
        if value.isdigit():
            total = min(total, int(value))
    return total


def process_memory_bytes() -> int:
    """This process's resident memory now (Linux; 0 where /proc is not there)."""
    try:
        resident = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return resident * os.sysconf("SC_PAGE_SIZE")


def fits_beside(need: int, count: int, host: int, process: int) -> bool:
    """Whether ``count`` of ``need`` bytes each (a task's bots' rests behind its training:
    the weights each has still to write, its Space's export process; job/behind.py) fit
    beside this process's ``process`` bytes, within the plans' share of the ``host``'s."""
    return need * count + process <= host * HEADROOM


def pinned_bytes(sizes: list[int]) -> int:
    """What page-locked host copies of tensors of these sizes take: torch's host allocator
    (CachingHostAllocator) rounds each allocation up to a power of two, so a kept gpt2-xl base
    (6.2 GB of fp32 weights, its largest tensor the 321 MB embedding) pins ~9.4 GB."""
    return sum(1 << (size - 1).bit_length() if size > 0 else 0 for size in sizes)


def gpu_budget_bytes(total: int, allocated: int, own: int) -> int:
    """The GPU memory a bot's plan may count on: the card's ``total`` less what this process
    holds that is not the bot's own model (``allocated`` less ``own``): a task that keeps an
    adapter base on the GPU (model.py ``bases_kept``) plans its later full bots beside it."""
    return max(total - max(allocated - own, 0), 0)


# Plan and run as if the card had this many GiB (a 24 GB card's plan, measured on a larger one:
# bench/gpu_probe.py): torch's allocator is held to it as well.
GPU_CAP_ENV = "HUGGINGTWEETS_GPU_GIB"


def capped_bytes(total: int, cap: str | None) -> int:
    """``total`` (a card's memory), or ``cap`` GiB where that is less; a cap that is not a
    positive number is refused with one line."""
    if not cap:
        return total
    try:
        gib = float(cap)
    except ValueError:
        gib = 0.0
    if not 0 < gib < float("inf"):
        raise BadConfig(f"{GPU_CAP_ENV}={cap!r}: expected a positive number of GiB")
    return min(total, int(gib * GIB))


def check_gpu_cap() -> None:
    """``GPU_CAP_ENV``, where set, checked (preflight: before any work, GPU or not)."""
    capped_bytes(0, os.environ.get(GPU_CAP_ENV))


def gpu_total_bytes() -> int:
    """This process's GPU memory: the card's, or ``GPU_CAP_ENV``'s GiB, to which torch's
    allocator is then held (a card of that size fails the same allocations)."""
    import torch

    total = torch.cuda.get_device_properties(0).total_memory
    capped = capped_bytes(total, os.environ.get(GPU_CAP_ENV))
    if capped < total:
        torch.cuda.set_per_process_memory_fraction(capped / total)
    return capped


def gpu_free_bytes() -> int:
    """This process's free GPU memory, within the cap."""
    import torch

    free, _ = torch.cuda.mem_get_info()
    return min(free, max(gpu_total_bytes() - torch.cuda.memory_reserved(), 0))


def gpu_budget(model: Any) -> int:
    """``gpu_budget_bytes`` of this process's GPU for ``model`` (already on it)."""
    import torch

    own = sum(t.numel() * t.element_size() for t in model.parameters())
    own += sum(t.numel() * t.element_size() for t in model.buffers())
    return gpu_budget_bytes(gpu_total_bytes(), torch.cuda.memory_allocated(), own)
