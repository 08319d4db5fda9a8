"""job/training/memory.py: this machine's memory and this process's, as the plans need them."""

from __future__ import annotations

import os

import pytest

from job.training.memory import GIB, host_memory_bytes, process_memory_bytes


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


def xl_tensor_bytes() -> list[int]:
    """gpt2-xl's tensors in fp32, each once (the output embedding is the input's)."""
    d, layers, vocab, positions = 1600, 48, 50257, 1024
    block = [d * 3 * d, 3 * d, d * d, d, d * 4 * d, 4 * d, 4 * d * d, d, d, d, d, d]
    return [4 * n for n in [vocab * d, positions * d, *block * layers, d, d]]


def test_a_pinned_copy_of_gpt2_xl_takes_9_4_gb_for_its_6_2() -> None:
    """torch's host allocator rounds each pinned allocation up to a power of two: the review's
    figure for a kept gpt2-xl base, which the host check now counts (model.py _copy_fits)."""
    from job.training.memory import pinned_bytes

    sizes = xl_tensor_bytes()
    assert sum(sizes) / 1e9 == pytest.approx(6.23, abs=0.01)
    assert pinned_bytes(sizes) / 1e9 == pytest.approx(9.4, abs=0.1)
    assert pinned_bytes([4096, 4097, 0]) == 4096 + 8192


def test_a_full_bot_after_an_adapter_bot_plans_beside_the_kept_base() -> None:
    """A task keeps an adapter base on the GPU (gpt2-large in bf16, 1.55 GB) when a full
    gpt2-large bot comes next: on an 18 GiB card its plan counts the card less the kept base,
    and picks what fits beside it instead of plain DDP, which would not."""
    from job.config import TrainConfig
    from job.gpt2 import GPT2
    from job.training.memory import gpu_budget_bytes
    from job.training.plan import plan

    large = GPT2["gpt2-large"]
    kept = 2 * large.params  # bf16
    own = 4 * large.params  # the full bot's own fp32 weights, loaded
    card = 18 * GIB

    def planned(gpu_bytes: int):
        return plan(
            TrainConfig(base_model="gpt2-large"),
            {**large.arch, "vocab_size": 50257},
            train_blocks=400,
            world=1,
            gpu_bytes=gpu_bytes,
            host_bytes=256 * GIB,
            bf16_supported=True,
        )

    assert gpu_budget_bytes(card, kept + own, own) == card - kept
    assert gpu_budget_bytes(card, own, own) == card  # nothing kept: the whole card
    assert planned(card).strategy == "ddp"
    beside = planned(gpu_budget_bytes(card, kept + own, own))
    assert beside.strategy == "zero2-offload", beside.choice.reason


def test_a_tasks_rests_run_behind_only_where_their_exports_fit_the_host() -> None:
    """Each bot behind the training may be exporting its Space in a process of its own
    (job/behind.py, outputs/browser.py): planned from the export's measured peak (gpt2: 2.69 GB
    resident, tiny: 0.51 GB), not hoped for; where two would not fit beside the training's
    process, a bot's rest runs in line (task.py)."""
    from job.outputs.browser import export_host_bytes
    from job.training.memory import GIB, HEADROOM, fits_beside

    assert export_host_bytes(124_439_808) == pytest.approx(2.69e9, rel=0.05)
    assert export_host_bytes(167_296) == pytest.approx(0.51e9, rel=0.1)
    need = export_host_bytes(124_439_808)
    host = 16 * GIB  # a small pod's limit
    assert fits_beside(need, 2, host, 6 * GIB)
    assert not fits_beside(need, 2, host, int(host * HEADROOM) - need)  # room for one only
    assert fits_beside(need, 1, host, int(host * HEADROOM) - need)


def test_a_gpu_cap_plans_a_smaller_card_and_a_bad_one_is_one_line() -> None:
    """HUGGINGTWEETS_GPU_GIB: the probe's 24 GB card on an H200 (memory.gpu_total_bytes holds
    torch's allocator to it as well); never more than the card; a typo is exit 10."""
    from job.errors import BadConfig
    from job.training.memory import GIB, capped_bytes

    h200 = 150_000_000_000
    assert capped_bytes(h200, None) == capped_bytes(h200, "") == h200
    assert capped_bytes(h200, "24") == 24 * GIB and capped_bytes(h200, "23.5") == int(23.5 * GIB)
    assert capped_bytes(h200, "1000") == h200
    for bad in ("24GB", "0", "-3", "nan", "inf"):
        with pytest.raises(BadConfig, match=r"HUGGINGTWEETS_GPU_GIB=.*positive number of GiB"):
            capped_bytes(h200, bad)


@pytest.mark.parametrize("value", ["24GB", "0", "nan"])
def test_a_gpu_cap_that_is_no_number_is_refused_before_any_work_on_any_host(
    value: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked with the deadline variables (preflight), not first on a GPU after the data."""
    from job import errors
    from tests.helpers import SAMPLE
    from tests.helpers.cli import invoke, one_line

    monkeypatch.setenv("HUGGINGTWEETS_GPU_GIB", value)
    out = tmp_path / "out"
    done = invoke("run", "sam", "--jsonl", str(SAMPLE), "--base-model", "tiny", "--out", str(out))
    assert "HUGGINGTWEETS_GPU_GIB" in one_line(done, errors.BAD_CONFIG)
    assert not (out / ".sam").exists() and not (out / "sam").exists()
