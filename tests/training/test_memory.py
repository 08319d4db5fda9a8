"""job/training/memory.py: this machine's memory and this process's, as the plans need them."""

from __future__ import annotations

import os

from job.training.memory import host_memory_bytes, process_memory_bytes


def test_host_memory_is_the_machines_or_the_containers_limit() -> None:
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < host_memory_bytes() <= physical


def test_a_process_memory_grows_with_what_it_holds() -> None:
    before = process_memory_bytes()
    held = bytearray(64 * 2**20)  # 64 MiB, touched
    for i in range(0, len(held), 4096):
        held[i] = 1
    assert process_memory_bytes() - before >= 48 * 2**20
    del held
