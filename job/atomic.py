"""Writing outputs so that readers never see half of them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any


def replace_dir(new: Path, final: Path) -> None:
    """Put a fully written folder in place of ``final`` by renames, never by overwriting."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    new.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, value: Any) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
