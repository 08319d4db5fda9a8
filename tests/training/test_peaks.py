"""The MFU denominator by the card's name (job/training/peaks.py): each card of the table by
the names torch gives it, the near names kept apart, an unknown card given none."""

from __future__ import annotations

import pytest

from job.training.peaks import mfu, peak_tflops


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),  # SXM
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A100 80GB PCIe", 312.0),
        ("NVIDIA A10G", 125.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA L40", 181.0),
    ],
)
def test_each_card_has_its_dense_bf16_peak(name: str, tflops: float) -> None:
    assert peak_tflops(name)[0] == tflops


def test_an_unknown_card_gets_no_mfu_and_says_so() -> None:
    peak, why = peak_tflops("NVIDIA GeForce GTX 1080")
    assert peak is None and "no dense bf16 peak is known" in why
    assert mfu(1e5, 6e9, "NVIDIA GeForce GTX 1080") is None
    assert mfu(1e5, 6e9, "") is None  # a CPU run
    # gpt2-xl's 4N adapter FLOPs at 10k tokens/s on an H100 SXM
    assert mfu(1e4, 4 * 1.5e9, "NVIDIA H100 80GB HBM3") == pytest.approx(6e13 / 989e12)
