"""Each GPU's dense bf16 peak, by the name torch gives it: the denominator of MFU (model FLOPs
utilization, PaLM's appendix B), which the job reports for its own steady steps.

Dense, not the "with sparsity" figures (twice these) that datasheets print first: training
does not use 2:4 sparsity. A device not listed gets no MFU, and says so, rather than a guess.
"""

from __future__ import annotations

# (what its name holds, TFLOP/s dense bf16, where the figure is from), the first match wins:
# "H100 PCIe" before "H100", "L40S" and "L40" before "L4", "A10G" before "A10".
PEAKS: list[tuple[tuple[str, ...], float, str]] = [
    (("H200",), 989.0, "H200 datasheet (the H100 SXM's compute)"),
    (("H100", "PCIe"), 756.0, "H100 datasheet, PCIe"),
    (("H100", "NVL"), 835.0, "H100 NVL datasheet"),
    (("H100",), 989.0, "H100 datasheet, SXM (torch's name: 'NVIDIA H100 80GB HBM3')"),
    (("A100",), 312.0, "A100 datasheet (SXM and PCIe alike)"),
    # NVIDIA publishes no figure for AWS's A10G; the A10's is its bound (its MFU reads low)
    (("A10G",), 125.0, "A10 datasheet: the A10G's bound"),
    (("A10",), 125.0, "A10 datasheet"),
    (("L40S",), 362.0, "L40S datasheet"),
    (("L40",), 181.0, "L40 datasheet"),
    (("L4",), 121.0, "L4 datasheet"),
]


def peak_tflops(device_name: str) -> tuple[float | None, str]:
    """The dense bf16 peak of ``device_name`` (torch.cuda.get_device_name), and its source; or
    None and why not."""
    for parts, tflops, source in PEAKS:
        if all(p.lower() in device_name.lower() for p in parts):
            return tflops, source
    return None, f"no dense bf16 peak is known for {device_name!r}: no MFU"


def mfu(tokens_per_second: float, flops_per_token: float, device_name: str) -> float | None:
    """Model FLOPs utilization of a rate on ``device_name``, or None where its peak is unknown
    (a CPU included)."""
    peak, _ = peak_tflops(device_name)
    if peak is None or tokens_per_second <= 0:
        return None
    return tokens_per_second * flops_per_token / (peak * 1e12)
