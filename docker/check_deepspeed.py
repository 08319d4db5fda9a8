"""Fail the image build unless DeepSpeed was built for ``sys.argv[1]`` with its ops compiled.

DeepSpeed records at install time which accelerator it was built for and which ops it
compiled (``deepspeed.git_version_info``, the data ``ds_report`` prints). A build that saw no
GPU picks the CPU accelerator and compiles nothing a GPU can use; at run time it would try to
JIT-compile them in an image without nvcc, and every ZeRO strategy would fail.
"""

from __future__ import annotations

import sys

from deepspeed import git_version_info as info

# What the job's strategies use: fused Adam on GPUs (zero2, zero3), CPU Adam for offload.
NEEDED = {"cuda": ("fused_adam", "cpu_adam"), "cpu": ("cpu_adam",)}

accelerator = sys.argv[1]
built = {name for name, ok in info.installed_ops.items() if ok}
missing = [op for op in NEEDED[accelerator] if op not in built]
if info.accelerator_name != accelerator or missing:
    sys.exit(
        f"DeepSpeed was built for {info.accelerator_name!r} (wanted {accelerator!r});"
        f" compiled ops: {sorted(built) or 'none'}; missing: {missing or 'none'}"
    )
print(f"DeepSpeed {info.version}: {accelerator} ops {sorted(built)}")
