"""What the tests share: paths, the tiny job, and loopback servers (hub, s3, twitter_api)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "job" / "samples" / "sourdough_sam.jsonl"
