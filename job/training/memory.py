"""This machine's memory, as the strategies and a task's kept bases need it: the host's (or
the container's limit) and this process's, with the share of it the job plans to use."""

from __future__ import annotations

import os
from pathlib import Path

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
