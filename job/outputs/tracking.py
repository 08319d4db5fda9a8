"""Weights & Biases: runs, artifacts with lineage, the predictions table.

Like the original HuggingTweets, each step leaves an artifact: the raw tweets and the clean
dataset (from the "prepare" run), the model (from the "train" run, which uses the dataset), all
in one W&B group named after the bot. W&B cannot ``use_artifact`` offline, so every artifact
also names its parent in its metadata, and the lineage survives ``WANDB_MODE=offline``.

Modes: online, offline (the default: nothing leaves the machine) and disabled. Only configs
built by this package are logged; they hold no secrets (those come from the environment).
Disabled never imports wandb: it and the ``requests`` it pulls in cost ~0.7 s of start-up.
"""

from __future__ import annotations

import atexit
import logging
import numbers
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from job.errors import BadConfig, CredentialsError, TransientError

log = logging.getLogger(__name__)
MODES = ("online", "offline", "disabled")
# Online, W&B must answer within these or the job goes on without it: its metrics are worth
# less than the model. 90 s is wandb's own default for starting a run; finishing waits for
# uploads (a gpt2-xl model artifact is ~6 GB), where wandb's default is to wait forever.
INIT_TIMEOUT, FINISH_TIMEOUT = 90.0, 600.0
# Each public-API call of a takedown (list a group's runs, delete one with its artifacts):
# wandb's own client retries a 5xx or a dropped connection inside this, then gives up.
API_TIMEOUT = 60


# One W&B service (wandb-core and its system monitor) serves every run of the process, a
# task's many bots included: it reads WANDB_CACHE_DIR once, when the first run starts it, and
# writes its logs there for as long as it lives. In a bot's folder, it wrote into the first
# bot's after that bot was done and its folder removed (recreating it, and failing the
# removal when it wrote mid-way). So it gets a folder of the process's own, removed at exit.
_SERVICE: list[Path] = []
_MADE = threading.Lock()  # the service's folder is made once
_TURN = threading.Lock()  # one bot's folders in the environment at a time (``Tracker._turn``)


def service_home() -> Path:
    """The process's folder for W&B's service, made (and set as WANDB_CACHE_DIR, and as the
    staging folders outside a bot's turn) once, and removed at exit."""
    with _MADE:
        if _SERVICE:
            return _SERVICE[0]
        home = Path(tempfile.mkdtemp(prefix="huggingtweets-wandb-"))
        os.environ["WANDB_CACHE_DIR"] = str(home)
        # What W&B stages outside a bot's turn (``Tracker._turn``) lands here, not in
        # ~/.local/share, where it would outlive the bot's takedown.
        os.environ["WANDB_DATA_DIR"] = str(home / "data")
        os.environ["WANDB_ARTIFACT_DIR"] = str(home / "artifacts")
        # Registered before the first run registers W&B's own exit handler, which ends the
        # service (waiting for it): so it runs after that one, with the service gone.
        atexit.register(shutil.rmtree, home, ignore_errors=True)
        _SERVICE.append(home)
        return home


def default_mode() -> str:
    return os.environ.get("WANDB_MODE") or "offline"


class Tracker:
    def __init__(self, mode: str, project: str, group: str, workdir: Path) -> None:
        if mode not in MODES:
            raise BadConfig(f"W&B mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode, self.project, self.group, self.workdir = mode, project, group, workdir
        self.urls: dict[str, str] = {}
        # Before wandb is imported: its artifact messages ignore Settings(silent=True).
        os.environ.setdefault("WANDB_SILENT", "true")
        # W&B copies every artifact's files (the raw tweets, the dataset, the model) into its
        # staging folder: by default under ~/.local/share, where they would outlive the bot's
        # takedown. Under the bot's own scratch folder instead, which a takedown removes
        # (cloud/consent.py), set for each of the bot's copies (``_turn``).
        files = workdir / "wandb-files"
        self.folders = {"WANDB_DATA_DIR": files / "data", "WANDB_ARTIFACT_DIR": files / "artifacts"}
        self.run_ids: dict[str, str] = {}
        self.skipped: list[str] = []  # stages W&B did not answer for: they went on without it

    @contextmanager
    def stage(
        self, job_type: str, config: dict[str, Any], run_id: str | None = None
    ) -> Iterator[Any]:
        """A W&B run; ``run_id`` continues an earlier one (a resumed attempt)."""
        if self.mode == "disabled":
            yield _NoRun()
            return
        import wandb

        self.workdir.mkdir(parents=True, exist_ok=True)
        service_home()  # before the process's first run starts W&B's service
        try:
            run = self._init(wandb, job_type, config, run_id)
        except Exception as e:  # W&B down or refusing: the model matters more than its metrics
            log.warning("W&B: %s; the %s stage goes on without it", type(e).__name__, job_type)
            self.skipped.append(job_type)
            run = None
        if run is None:
            yield _NoRun()
            return
        try:
            yield run
        finally:
            self.run_ids[job_type] = run.id
            if self.mode == "online" and run.url:  # offline runs warn when asked
                self.urls[job_type] = run.url
            run.finish()

    def _init(self, wandb: Any, job_type: str, config: dict[str, Any], run_id: str | None) -> Any:
        return wandb.init(
            project=self.project,
            group=self.group,
            job_type=job_type,
            name=f"{self.group}-{job_type}",
            config=config,
            mode=self.mode,
            dir=str(self.workdir),
            reinit="create_new",
            id=run_id,
            resume="allow" if run_id else None,
            # Quiet: stdout carries only the job's one-line result.
            settings=wandb.Settings(
                silent=True,
                show_info=False,
                show_warnings=False,
                init_timeout=INIT_TIMEOUT,
                finish_timeout=FINISH_TIMEOUT,
            ),
        )

    def log_artifact(
        self,
        run: Any,
        name: str,
        kind: str,
        paths: list[Path],
        metadata: dict[str, Any],
        parent: Any = None,
    ) -> Any:
        if self.mode == "disabled" or isinstance(run, _NoRun):
            return None
        import wandb

        if parent is not None:
            metadata = {**metadata, "derived_from": parent.name}
        with self._turn():  # wandb copies the files as they are added, and stages the manifest
            artifact = wandb.Artifact(name, type=kind, metadata=metadata)
            for path in paths:
                # skip_cache: online, W&B's service would keep each uploaded file in its cache,
                # which is the process's (``service_home``), not the bot's
                if path.is_dir():
                    artifact.add_dir(str(path), skip_cache=True)
                else:
                    artifact.add_file(str(path), skip_cache=True)
            run.log_artifact(artifact)
        return artifact

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """This bot's folders in the environment, where wandb reads them as it copies: one
        process makes many bots (a task's), the one before finishing behind the next, and
        they take turns."""
        with _TURN:
            before = {name: os.environ.get(name) for name in self.folders}
            os.environ.update({name: str(folder) for name, folder in self.folders.items()})
            try:
                yield
            finally:
                for name, value in before.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value

    def use(self, run: Any, artifact: Any) -> None:
        if self.mode == "online" and artifact is not None:  # W&B's lineage; offline: metadata
            run.use_artifact(artifact)

    def log(self, run: Any, data: dict[str, Any], step: int | None = None) -> None:
        """``run.log``; in this bot's turn where it holds more than numbers and words: W&B
        copies a table it is given as an artifact of the run's, staged as ``log_artifact``'s
        files are. A training step's metrics wait for no other bot's copy (a gpt2-xl's model
        is ~6 GB of it)."""
        if all(v is None or isinstance(v, (numbers.Number, str)) for v in data.values()):
            run.log(data, step=step)
            return
        with self._turn():
            run.log(data, step=step)

    def table(self, columns: list[str], rows: list[list[Any]]) -> Any:
        if self.mode == "disabled":
            return None
        import wandb

        return wandb.Table(columns=list[Any](columns), data=rows)


def remove_group(project: str, group: str, entity: str | None = None) -> list[str]:
    """Delete every W&B run of ``group`` (a bot: the job names its runs' group after it) in
    ``project``, with the artifacts each logged (raw tweets, dataset, model); return their
    paths. For takedowns (cloud/consent.py). The key is WANDB_API_KEY; the entity, when not
    given, WANDB_ENTITY or the key's default one. A project that does not exist holds none."""
    import wandb
    from wandb.errors import AuthenticationError

    try:
        api = wandb.Api(timeout=API_TIMEOUT)
        entity = entity or os.environ.get("WANDB_ENTITY") or api.default_entity
        try:
            runs = list(api.runs(f"{entity}/{project}", filters={"group": group}))
        except ValueError:  # wandb's "Could not find project": nothing was ever logged there
            return []
        removed = []
        for run in runs:
            run.delete(delete_artifacts=True)
            removed.append(f"{entity}/{project}/{run.id}")
        return removed
    except AuthenticationError as e:
        raise CredentialsError(f"W&B refused WANDB_API_KEY while removing {group}'s runs") from e
    except Exception as e:  # its server's words stay out: they may quote the request
        raise TransientError(
            f"W&B: removing the runs of {group} in {project} failed ({type(e).__name__});"
            " run the takedown again"
        ) from e


class _NoRun:
    """What a stage yields when W&B is disabled: a run that records nothing."""

    id = None

    def log(self, *args: Any, **kwargs: Any) -> None:
        pass
