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
