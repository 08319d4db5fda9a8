"""job/spec.py: a bot's own rules, checked when its spec is made (a command line or a
manifest), before any download or any other bot's training."""

from __future__ import annotations

from pathlib import Path

import pytest

from job import errors
from tests.helpers import SAMPLE
from tests.helpers.cli import invoke, one_line


@pytest.mark.parametrize("strategy", ["zero2", "zero3", "zero2-offload", "zero3-offload"])
def test_a_manifests_adapter_bot_on_zero_is_refused_before_its_first_bot(
    strategy: str, tmp_path: Path
) -> None:
    """It once trained the first bot, then refused the second at its training."""
    out = tmp_path / "out"
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"version: 1\noutput: {out}\ndefaults: {{base_model: tiny}}\nbots:\n"
        f"  - users: [{{handle: first, source: jsonl, uri: {SAMPLE}}}]\n"
        f"  - users: [{{handle: second, source: jsonl, uri: {SAMPLE}}}]\n"
        f"    train: {{adapter: lora, strategy: {strategy}}}\n"
    )
    line = one_line(invoke("run", "--manifest", str(manifest)), errors.BAD_CONFIG)
    assert "manifest.bots[1]" in line and f"strategy {strategy} with an adapter" in line
    assert not out.exists()  # nothing of the first bot either


def test_a_command_lines_adapter_on_zero_is_refused_before_the_data(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = invoke(
        *("run", "sam", "--jsonl", str(SAMPLE), "--base-model", "tiny", "--adapter", "lora"),
        *("--strategy", "zero3", "--out", str(out)),
    )
    assert "with an adapter" in one_line(done, errors.BAD_CONFIG)
    assert not out.exists()
