from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from job import temporary
from tests.helpers import REPO

# --- The suite keeps to itself ----------------------------------------------------------------
# Every process of the suite has a home of its own from its first line (HOME, and the Hugging
# Face, W&B and cache folders that would follow it, unset or pointed there), so that a library
# that fixes its folders when it is imported (huggingface_hub's cache) never uses the user's;
# every test then gets one of its own as well. The suite once wrote a fake gpt2 into the real
# Hugging Face cache, and a later `run --base-model gpt2` trained on it. The session checks
# that the user's folders are as it found them.
REAL_HOME = Path.home()
WATCHED = [
    REAL_HOME / ".cache" / "huggingface",
    REAL_HOME / ".cache" / "wandb",
    REAL_HOME / ".local" / "share" / "wandb",
    REAL_HOME / ".config" / "wandb",
    *([Path(os.environ["HF_HOME"])] if os.environ.get("HF_HOME") else []),
]
HOME_VARIABLES = (
    "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME", "XDG_DATA_HOME", "WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR",
    "WANDB_DATA_DIR", "TORCH_EXTENSIONS_DIR",
)  # fmt: skip
# Each process of the suite (a worker, xdist's controller) keeps its home and its tests' own
# temporary folders in one folder of its own in the machine's, held as the job holds its own
# (job/temporary.py): removed when the session ends, and, when a session is killed outright
# (SIGKILL; SIGTERM to `make test`), by the next session or job, which finds it unheld. A
# killed run once left ~1,000 folders in /tmp. Not pytest's own tmp_path (pytest keeps the
# last three sessions' for a look after a failure).
_TEMPORARY = str(temporary.hold(Path(tempfile.gettempdir())) or tempfile.gettempdir())
PROCESS_HOME = Path(tempfile.mkdtemp(prefix="home-", dir=_TEMPORARY))


def _home_at(home: Path, environ: Any) -> None:
    environ["HOME"] = str(home)
    for name in HOME_VARIABLES:
        environ.pop(name, None)
    environ["HF_HOME"] = str(home / ".cache" / "huggingface")


_home_at(PROCESS_HOME, os.environ)


# Under pytest-xdist each worker, and every job process a test starts, would run torch with a
# thread per core: two workers on two cores then run four threads that spin-wait for each
# other (OpenMP). A worker's share of the cores each, set before anything imports torch.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

# CI clones the project with ../shared beside it; HUGGINGTWEETS_SHARED overrides.
SHARED = Path(os.environ.get("HUGGINGTWEETS_SHARED", REPO.parent / "shared"))


MISSING_SHARED = (
    f"the shared test data is missing: expected {SHARED}/data (a checkout's ../shared);"
    " point HUGGINGTWEETS_SHARED at it"
)


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "data").is_dir():  # a hard failure, not a skip: these tests matter
        pytest.fail(MISSING_SHARED)
    return SHARED


_BEFORE = pytest.StashKey[dict]()


def snapshot(folders: list[Path]) -> dict[str, tuple[int, int]]:
    """Every file under ``folders``: its size and modification time."""
    found = {}
    for folder in folders:
        if folder.is_dir():
            for p in folder.rglob("*"):
                if p.is_file() or p.is_symlink():
                    stat = p.lstat()
                    found[str(p)] = (stat.st_size, stat.st_mtime_ns)
    return found


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if hasattr(config, "workerinput"):
        return
    if not (SHARED / "data").is_dir():  # at the start, once: not as 28 errors minutes later
        pytest.exit(MISSING_SHARED, returncode=4)
    config.stash[_BEFORE] = snapshot(WATCHED)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if hasattr(config, "workerinput") or _BEFORE not in config.stash:
        return
    before, after = config.stash[_BEFORE], snapshot(WATCHED)
    changed = sorted(k for k in {*after, *before} if after.get(k) != before.get(k))
    if changed:
        session.exitstatus = 1
        sys.stderr.write(
            f"\nthe suite changed the user's caches: {len(changed)} file(s), first {changed[0]}\n"
        )


@pytest.fixture(scope="session")
def _homes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("homes")


@pytest.fixture(autouse=True)
def _a_home_of_its_own(_homes: Path, monkeypatch: pytest.MonkeyPatch):
    """HOME, and every cache folder that would follow it, in a folder of the test's own
    (made with mkdtemp: tmp_path_factory.mktemp scans its folder on each call); and a temporary
    folder of its own, removed with the process's folder (``_TEMPORARY``), so that what a
    test's process leaves there (141 folders with a person's tweets in /tmp after a day's
    runs, before the job's own temporary folder, job/temporary.py) goes."""
    import tempfile

    home = Path(tempfile.mkdtemp(dir=_homes))
    monkeypatch.setenv("HOME", str(home))
    for name in HOME_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(home / ".cache" / "huggingface"))
    # Short: a Unix socket's path is at most 107 bytes (Chromium's goes in here, and W&B's in
    # the job's own folder inside it, job/temporary.py). Kept until the process's session
    # ends: a library makes a folder of its own there once, when imported (wandb's for
    # media), and a later test of the same worker uses it.
    folder = tempfile.mkdtemp(prefix="t-", dir=_TEMPORARY)
    monkeypatch.setenv("TMPDIR", folder)
    monkeypatch.setattr(tempfile, "tempdir", folder)  # this process's, read once
    yield


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
# Bluesky's and Mastodon's public servers are the sources' defaults: here a loopback port where
# nothing listens (refused at once), so no test reads a real person's posts by accident. Tests
# that read posts start their own servers (tests/helpers/social.py) and point these at them.
CLOSED = "http://127.0.0.1:9"
os.environ["BLUESKY_APPVIEW_URL"] = CLOSED
os.environ["MASTODON_URL"] = CLOSED


@pytest.fixture(scope="session", autouse=True)
def _hub_server():
    yield _HUB
    _HUB.stop()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    _HUB.reset()
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    return _HUB


# moto starts in each process that runs tests (pytest_configure), as its own process, and is
# waited for by the first test that uses it. Not in pytest-xdist's controller, which runs none:
# it once started one there that outlived every run (~200 MB each).
_MOTO: MotoS3 | None = None


def _runs_tests(config: pytest.Config) -> bool:
    """A worker, or a run without workers; not xdist's controller."""
    return hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None)


def pytest_configure(config: pytest.Config) -> None:
    global _MOTO
    if _runs_tests(config) and _MOTO is None:
        _MOTO = MotoS3().start()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stopped when the process's session ends, whether or not it ran a test (a worker may
    run none); the process's home goes with it."""
    global _MOTO
    if _MOTO is not None:
        _MOTO.stop()
        _MOTO = None
    shutil.rmtree(PROCESS_HOME, ignore_errors=True)
    temporary.end()  # the process's folder, its tests' temporary folders in it


@pytest.fixture(scope="session")
def _moto():
    assert _MOTO is not None
    return _MOTO.wait()


@pytest.fixture
def s3(_moto: MotoS3, monkeypatch: pytest.MonkeyPatch) -> MotoS3:
    """A fresh S3 on loopback with the bucket 'results'; boto3 reaches it by AWS_ENDPOINT_URL.
    The bucket is made with the job's own client (storage.s3_client: one a process for the same
    settings, where boto3.client costs ~30 ms a test)."""
    from job.storage import s3_client

    _moto.reset()
    for key, value in {
        "AWS_ENDPOINT_URL": _moto.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    s3_client().create_bucket(Bucket="results")
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
