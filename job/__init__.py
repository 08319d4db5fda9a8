"""huggingtweets: fine-tune GPT-2 on a person's tweets."""

import os

__version__ = "0.1.0"

# The Hub's Xet transfer (hf_xet) is off, before huggingface_hub is imported: its uploads run
# in Rust threads with retries of their own that take no timeout or deadline of ours (a 503
# from its token endpoint held a push 277 s, then ended in an error of its own type), and a
# SIGTERM cannot end them. Without it, pushes and downloads go through huggingface_hub's
# HTTP client (LFS), with the job's timeouts and deadlines (job/deadline.py); the Hub still
# takes them. HF_HUB_DISABLE_XET=0 turns it back on.
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")

# What the job's libraries would send their makers unless told not to: each one's documented
# switch, read once when the library starts, so set here, before any is imported, and not left
# to the environment (a bot's files are a person's, and W&B offline means nothing leaves).
NO_TELEMETRY = {
    # onnxruntime 1.29+ on Linux (its PR 27379): the model's file and graph names, hashes of its
    # weights, and a device id it keeps in ~/.cache/Microsoft and a session file in the
    # temporary folder, uploaded to Microsoft's collector; the Space's export imports it
    "ORT_DISABLE_TELEMETRY": "1",
    # wandb-core's crash reports to W&B's Sentry (its --no-observability), offline runs too
    "WANDB_ERROR_REPORTING": "false",
}
os.environ.update(NO_TELEMETRY)
