"""Pushing a model folder to the Hugging Face Hub: one commit with the model and its card.

``push_folder``: ``create_repo(exist_ok=True)``, the repo's visibility set to the one asked
for (an existing repo keeps its own otherwise), then ``create_commit`` with every file, so the
Hub never shows a model without its card (``upload_folder`` may split a folder into several
commits when ``hf_xet`` is installed). The card is checked by the Hub's ``/api/validate-yaml``
first. 5xx answers, 429 and network failures are retried with backoff (job/retry.py), then
reported as transient; the commit message names the run. ``HF_ENDPOINT`` points at another Hub
(the tests' loopback one).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from job.deadline import deadline, hub_timeouts
from job.errors import BadConfig, CredentialsError, JobError
from job.inventory import repo_ref
from job.loading import load_yaml
from job.retry import Retry, with_retries

log = logging.getLogger(__name__)
T = TypeVar("T")
BACKOFF_SECONDS = 2.0  # first retry after 2 s, then 4, 8, 16: a Hub hiccup, not an outage


def hf_token(what: str) -> str:
    """``HF_TOKEN`` from the environment, or a CredentialsError saying what needed it."""
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise CredentialsError(f"{what} needs HF_TOKEN in the environment")
    return token


def push_folder(
    folder: Path,
    repo_id: str,
    *,
    private: bool,
    run_id: str,
    token: str | None = None,
    retries: int = 4,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Push ``folder`` to ``repo_id`` (a model's, or a Space's as records name it:
    inventory.py ``spaces/owner/name``; a static one) in one commit; return the commit's URL."""
    from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, SpaceCard
    from huggingface_hub.utils import disable_progress_bars

    repo_id, kind = repo_ref(repo_id)
    card = SpaceCard if kind == "space" else ModelCard
    sdk = "static" if kind == "space" else None  # the Space's page is static files
    token = token or hf_token("pushing to the Hub")
    disable_progress_bars()
    hub_timeouts()
    api = HfApi(token=token)
    files = sorted(p for p in folder.rglob("*") if p.is_file())

    def once() -> str:
        try:
            with _hub_errors(repo_id):
                card.load(folder / "README.md").validate(repo_type=kind)
                api.create_repo(
                    repo_id, private=private, exist_ok=True, repo_type=kind, space_sdk=sdk
                )
                # create_repo leaves an existing repo's visibility as it was: set it, so the
                # recorded `private` is what the Hub shows.
                api.update_repo_settings(repo_id, private=private, repo_type=kind)
                operations = [
                    CommitOperationAdd(
                        path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p)
                    )
                    for p in files
                ]
                info = api.create_commit(
                    repo_id,
                    operations=operations,
                    commit_message=f"huggingtweets run {run_id}",
                    repo_type=kind,
                )
        except ValueError as e:  # the Hub's card validation said no; its words are not shown
            raise BadConfig(
                "the Hub rejected the model card's metadata (its validate-yaml check); see the"
                " card's front matter"
            ) from e
        log.info("pushed %s to the Hub: %s", run_id, info.commit_url)
        return str(info.commit_url)

    return _within("hub_push", f"Hub push of {repo_id}", once, retries, sleep, "retry with publish")


def remove_repo(repo_id: str, keep_private: bool = False, retries: int = 4) -> str:
    """Delete ``repo_id`` from the Hub (a missing one is fine), or with ``keep_private`` make
    it private; say which. For takedowns (cloud/consent.py)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    token = hf_token(f"removing {repo_id} from the Hub")
    hub_timeouts()
    api = HfApi(token=token)
    ref = repo_id
    repo_id, kind = repo_ref(ref)

    def once() -> str:
        with _hub_errors(repo_id):
            if not keep_private:
                api.delete_repo(repo_id, missing_ok=True, repo_type=kind)
                return f"deleted {ref}"
            try:
                api.update_repo_settings(repo_id, private=True, repo_type=kind)
            except RepositoryNotFoundError:
                return f"not on the Hub: {ref}"
            return f"made private {ref}"

    return _within(
        "hub_call", f"Hub removal of {repo_id}", once, retries, time.sleep,
        "run the takedown again",
    )  # fmt: skip


MAX_CARD_BYTES = 1 << 20  # a card is a few KB; a larger README is not one the job wrote


def card_handles(repo_id: str, retries: int = 2) -> list[str] | None:
    """The handles the card of ``repo_id`` on the Hub names as its bot's (its front matter's
    ``huggingtweets.handles``, written by the job: outputs/card.py); None where the repo, its
    card or that field is not there, or the card cannot be read. A takedown's proof that a
    repo a record names is the bot's (cloud/consent.py)."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    token = hf_token(f"reading {repo_id}'s card on the Hub")
    hub_timeouts()

    repo_id, kind = repo_ref(repo_id)

    def once() -> bytes | None:
        with _hub_errors(repo_id):
            url = hf_hub_url(repo_id, "README.md", repo_type=kind)
            try:
                with get_session().stream(
                    "GET", url, headers=build_hf_headers(token=token), follow_redirects=True
                ) as response:
                    hf_raise_for_status(response)
                    data = b""
                    for chunk in response.iter_bytes():
                        data += chunk
                        if len(data) > MAX_CARD_BYTES:
                            return None
                    return data
            except (RepositoryNotFoundError, EntryNotFoundError):
                return None

    data = _within("hub_call", f"reading {repo_id}'s card", once, retries, time.sleep, "retry")
    return None if data is None else handles_of_card(data)


def handles_of_card(data: bytes) -> list[str] | None:
    """The handles a card's front matter names as its bot's (``huggingtweets.handles``)."""
    text = data.decode("utf-8", "replace")
    if not text.startswith("---\n") or "\n---" not in text[3:]:
        return None
    head = text[4 : text.index("\n---", 3)]
    try:
        meta = load_yaml(head, "the card's front matter")
    except JobError:
        return None
    named = meta.get("huggingtweets") if isinstance(meta, dict) else None
    handles = named.get("handles") if isinstance(named, dict) else None
    if not isinstance(handles, list):
        return None
    return [h.lower() for h in handles if isinstance(h, str)]


def whoami(token: str, retries: int = 2, sleep: Callable[[float], None] = time.sleep) -> dict:
    """The Hub's ``whoami-v2`` for ``token``: its user, organizations and role."""
    from huggingface_hub import HfApi

    hub_timeouts()

    def once() -> dict:
        with _hub_errors("whoami"):
            return dict(HfApi(token=token).whoami())

    return _within("hub_call", "the Hub's whoami", once, retries, sleep, "retry later")


def _within(
    limit: str,
    what: str,
    once: Callable[[], T],
    retries: int,
    sleep: Callable[[float], None],
    then: str,
) -> T:
    """One Hub operation: retried with backoff (job/retry.py), within its total deadline
    (job/deadline.py); past both, a transient error that says ``what`` and ``then``."""
    with deadline(limit, what):
        return with_retries(
            once,
            what=f"{what}: failed:",
            give_up=lambda why, tries: f"{what}: still failing ({why}); {then}",
            retries=retries,
            backoff=BACKOFF_SECONDS,
            sleep=sleep,
        )


@contextmanager
def _hub_errors(subject: str) -> Iterator[None]:
    """huggingface_hub's errors as the job's, for every Hub call: 401/403 is the token, another
    4xx is the request, and 5xx, 429 and network failures are retried (job/retry.py)."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else 0
        if status in (401, 403):
            raise CredentialsError(f"the Hub refused HF_TOKEN for {subject} ({status})") from e
        if status < 500 and status != 429:
            raise BadConfig(f"the Hub said {status} for {subject}") from e
        raise Retry(f"HTTP {status}") from e
    except httpx2.HTTPError as e:  # timeouts and connection failures
        raise Retry(type(e).__name__) from e
