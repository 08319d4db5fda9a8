"""The image's build, run here: `make image-test` (podman, a stand-in base, the CPU torch).

Builds the real Dockerfile's steps on a Debian stand-in, then runs, inside a build of the
image as its uid 1000, `huggingtweets --help` and the tiny job (docker/Dockerfile.test).
docs/deploy.md says what this proves and what only a CUDA build can. Needs podman and
debootstrap (.ci/run installs them); without them the test is skipped, and says why.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.integration


@pytest.mark.skipif(
    not (shutil.which("podman") and shutil.which("debootstrap")),
    reason="needs podman and debootstrap (apt-get install podman debootstrap)",
)
def test_the_image_builds_and_runs_the_tiny_job_as_uid_1000() -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", "image-test"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    # Run afresh every time (--no-cache), in the runtime image: its ops came across.
    assert "DeepSpeed 0.19.8: cpu ops ['cpu_adam']" in output
    assert "image test: uid 1000 ran the tiny job into /work/out" in output
    assert "stand-in image:" in output
