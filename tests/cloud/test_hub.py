from __future__ import annotations

from pathlib import Path

import pytest

from job.cloud import hub as hub_module
from job.cloud.hub import push_folder as push
from job.errors import BadConfig, CredentialsError, TransientError

CARD = "---\ntags:\n- huggingtweets\nlanguage: en\n---\n\n# a bot\n"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder as the job leaves it, with stand-in bytes: the Hub never loads it."""
    folder = tmp_path_factory.mktemp("m") / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)  # LFS, by its suffix
    (folder / "config.json").write_text('{"model_type": "gpt2"}')
    (folder / "tokenizer.json").write_text("{}")
    (folder / "README.md").write_text(CARD)
    return folder


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_module, "BACKOFF_SECONDS", 0.01)


def test_one_commit_with_model_and_card(hub, model_dir: Path) -> None:
    url = push(model_dir, "huggingtweets/alice", private=True, run_id="20260101T000000Z-abc")
    (commit,) = hub.state.commits
    assert url.endswith(commit.oid) and commit.repo == "huggingtweets/alice"
    assert commit.message == "huggingtweets run 20260101T000000Z-abc"
    assert commit.files == {p.name: p.read_bytes() for p in model_dir.iterdir()}
    assert ("POST", "/api/validate-yaml") in hub.state.requests
    assert any(p.endswith("/info/lfs/objects/batch") for _, p in hub.state.requests)
    assert hub.state.repos["huggingtweets/alice"] == {"private": True}


def test_existing_repo_is_fine(hub, model_dir: Path) -> None:
    push(model_dir, "huggingtweets/alice", private=False, run_id="r1")
    push(model_dir, "huggingtweets/alice", private=False, run_id="r2")
    assert [c.message for c in hub.state.commits] == [
        "huggingtweets run r1",
        "huggingtweets run r2",
    ]


def test_visibility_follows_each_push(hub, model_dir: Path) -> None:
    # create_repo(exist_ok=True) leaves an existing repo as it was: the push sets it.
    push(model_dir, "huggingtweets/alice", private=False, run_id="r1")
    assert hub.state.repos["huggingtweets/alice"] == {"private": False}
    push(model_dir, "huggingtweets/alice", private=True, run_id="r2")
    assert hub.state.repos["huggingtweets/alice"] == {"private": True}
    push(model_dir, "huggingtweets/alice", private=False, run_id="r3")
    assert hub.state.repos["huggingtweets/alice"] == {"private": False}


def test_5xx_is_retried(hub, model_dir: Path) -> None:
    failures = iter([503, 502])
    hub.state.faults.append(
        lambda m, p: next(failures, None) if p.endswith("/commit/main") else None
    )
    push(model_dir, "huggingtweets/alice", private=False, run_id="r1")
    assert len(hub.state.commits) == 1


def test_persistent_5xx_is_transient(hub, model_dir: Path) -> None:
    hub.state.faults.append(lambda m, p: 503 if p.endswith("/commit/main") else None)
    with pytest.raises(TransientError, match="retry with publish"):
        push(model_dir, "huggingtweets/alice", private=False, run_id="r1", retries=2)
    assert hub.state.commits == []
    assert sum(p.endswith("/commit/main") for _, p in hub.state.requests) == 3


def test_bad_token(hub, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(CredentialsError, match="refused HF_TOKEN"):
        push(model_dir, "huggingtweets/alice", private=False, run_id="r1")
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(CredentialsError, match="needs HF_TOKEN"):
        push(model_dir, "huggingtweets/alice", private=False, run_id="r1")


def test_invalid_card_is_refused(hub, tmp_path: Path, model_dir: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    for p in model_dir.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "README.md").write_text("---\ntags: not-a-list\n---\nhi\n")
    with pytest.raises(BadConfig, match="rejected the model card"):
        push(folder, "huggingtweets/alice", private=False, run_id="r1")
    assert hub.state.commits == []


def test_a_hub_that_stops_answering_times_out(
    hub, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """huggingface_hub sets no timeout of its own: a commit the Hub never answers would hang."""
    import time

    from job import deadline

    monkeypatch.setattr(deadline, "READ_TIMEOUT", 0.3)

    def stall(method: str, path: str) -> None:
        if path.endswith("/commit/main"):
            time.sleep(2)

    hub.state.faults.append(stall)
    start = time.monotonic()
    with pytest.raises(TransientError, match="ReadTimeout"):
        push(model_dir, "huggingtweets/alice", private=False, run_id="r1", retries=1)
    assert time.monotonic() - start < 2 and hub.state.commits == []


def test_hub_offline_at_push_time_is_a_configuration_error(
    hub, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HF_HUB_OFFLINE=1 left in the environment: one line and exit 10, not a traceback."""
    from huggingface_hub import constants

    from job import errors

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets
    with pytest.raises(Exception) as info:
        push(model_dir, "huggingtweets/alice", private=False, run_id="r1")
    error = errors.classify(info.value)
    assert error.exit_code == errors.BAD_CONFIG and "HF_HUB_OFFLINE" in str(error)
    assert hub.state.commits == []


def test_the_job_switches_xet_off_before_the_hub_client_reads_it() -> None:
    """hf_xet's uploads retry on their own, past every timeout and deadline of the job's (a 503
    from its token endpoint held a push 277 s): the job sends through huggingface_hub's HTTP
    client instead, unless HF_HUB_DISABLE_XET says otherwise (docs/exit-codes.md)."""
    import os
    import subprocess
    import sys

    script = "import job, huggingface_hub.constants as c; print(c.HF_HUB_DISABLE_XET)"
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_XET"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.stdout.strip() == "True", done.stderr
    env["HF_HUB_DISABLE_XET"] = "0"  # an operator's choice stands
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
