from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

# Under pytest-xdist each worker, and every job process a test starts, would run torch with a
# thread per core: two workers on two cores then run four threads that spin-wait for each
# other (OpenMP). A worker's share of the cores each, set before anything imports torch.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

# CI clones the project with ../shared beside it; HUGGINGTWEETS_SHARED overrides.
SHARED = Path(os.environ.get("HUGGINGTWEETS_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "data").is_dir():  # a hard failure, not a skip: these tests matter
        pytest.fail(f"the shared test data is missing: expected it at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def real_archive(shared: Path) -> Path:
    return shared / "data" / "archives" / "andreruffert"


@pytest.fixture(scope="session")
def gpt2_stand_in(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init model of gpt2's own shape (12 layers, 768 wide) and vocabulary (GPT-2's
    BPE files), for what runs `--base-model gpt2` as printed: a base named gpt2 must be one
    (training/model.py check_shape). Built once a worker (~8 s, 480 MB)."""
    import json

    from job.gpt2 import GPT2
    from job.training.model import build_random
    from tests.helpers import SAMPLE

    texts = [json.loads(line)["text"] for line in SAMPLE.read_text().splitlines()]
    folder = tmp_path_factory.mktemp("gpt2-stand-in")
    return build_random(folder, texts, shared / "tokenizers" / "gpt2", 42, GPT2["gpt2"].arch)


# --- Loopback servers -------------------------------------------------------------------------
# huggingface_hub reads HF_ENDPOINT and HF_HUB_DISABLE_XET when it is imported, so the fake Hub
# starts here, before any test imports it; the session fixture below stops it.
from tests.helpers.hub import FakeHub  # noqa: E402
from tests.helpers.s3 import MotoS3  # noqa: E402

HUB_TOKEN = "hf_test_token_0123456789"
_HUB = FakeHub(token=HUB_TOKEN).start()
os.environ["HF_ENDPOINT"] = _HUB.url
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ.setdefault("WANDB_MODE", "offline")  # never reach W&B's servers from the tests


@pytest.fixture(scope="session", autouse=True)
def _hub_server():
    yield _HUB
    _HUB.stop()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    _HUB.reset()
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    return _HUB


# moto starts now, as its own process, and is waited for by the first test that uses it.
_MOTO = MotoS3().start()


@pytest.fixture(scope="session", autouse=True)
def _moto_process():
    """Stopped when the session ends, whether or not a test used it (a leaked server per
    session piles up: ~200 MB each)."""
    yield _MOTO
    _MOTO.stop()


@pytest.fixture(scope="session")
def _moto():
    return _MOTO.wait()


@pytest.fixture
def s3(_moto: MotoS3, monkeypatch: pytest.MonkeyPatch) -> MotoS3:
    """A fresh S3 on loopback with the bucket 'results'; boto3 reaches it by AWS_ENDPOINT_URL."""
    import boto3

    _moto.reset()
    for key, value in {
        "AWS_ENDPOINT_URL": _moto.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3").create_bucket(Bucket="results")
    return _moto


@pytest.fixture(autouse=True)
def _environment_as_it_was():
    """A job run in this process sets variables for the libraries it drives (the compile
    caches, W&B's folders under the bot's scratch); the next test, and every process it
    starts, gets the environment as the session had it."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(autouse=True)
def _no_inherited_wandb_service():
    """wandb puts its service's address in os.environ (WANDB_SERVICE) when a test starts a run
    in this process; a job the test spawns would then attach to it, and wait up to a minute
    (seen: the ZeRO-2 test took 75 s, not 20). Every process a test starts gets its own."""
    os.environ.pop("WANDB_SERVICE", None)
    yield


# The unit tier's rule, kept by the suite itself: a test not marked integration loads neither
# torch nor transformers (~2-5 s of imports each time a tier runs alone). A module already
# loaded by an earlier integration test in the same worker is not counted against it.
HEAVY = ("torch", "transformers")


@pytest.fixture(autouse=True)
def _unit_tier_stays_light(request: pytest.FixtureRequest):
    before = {name for name in HEAVY if name in sys.modules}
    yield
    if request.node.get_closest_marker("integration") is None:
        loaded = sorted(name for name in HEAVY if name in sys.modules and name not in before)
        if loaded:
            pytest.fail(
                f"a unit-tier test loaded {', '.join(loaded)}: mark it integration, or keep "
                "the heavy import off its path",
                pytrace=False,
            )
