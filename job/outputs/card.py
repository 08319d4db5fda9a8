"""The model card: ``model/README.md``, rendered from ``templates/model_card.md.j2``.

Structured like the original HuggingTweets cards (front matter, avatar header, how it works,
training data table, training procedure, how to use, limitations), plus what they lacked:
validation perplexity before and after, the memorization figure, the exact config and versions.

Every value that comes from an archive, the API or a server (names, handles, dates, tweets and
the predictions learnt from them, language codes, avatar and W&B addresses) is inert wherever
the card shows it: text goes through ``inert`` (one line, Markdown's and HTML's punctuation as
character references, so it starts no heading, link, image, emphasis or tag); addresses are
shown only in the form their source gives them (``AVATAR_URL``, ``WANDB_URL``); language codes
only as codes. The front matter is produced by ``yaml.safe_dump``.

The card's context is saved as ``card.json`` beside the model folder: a push to another repo
renders the card again for that repo (``for_repo``), so a card always names its own repo.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from job import __version__
from job.atomic import write_json
from job.config import STRATEGIES
from job.data.handles import Handle
from job.errors import BadConfig
from job.inventory import CARD, merged_repo
from job.outputs import thumbnail
from job.records import AnyObject, read_record
from job.storage import LocalStorage

if TYPE_CHECKING:
    from job.data.clean import Prepared
    from job.outputs.predict import Prediction
    from job.spec import BotJob
    from job.training.train import TrainResult

TEMPLATES = Path(__file__).parent / "templates"
ROWS = [  # the original card's table, plus what our cleaning adds, in its network's words
    ("{Posts} downloaded", "downloaded"),
    ("{Reposts}", "retweets"),
    ("Short {posts}", "short"),
    ("Replies dropped", "dropped_replies"),
    ("Duplicates", "duplicates"),
    ("{Posts} kept", "kept"),
    ("{Posts} used (after balancing)", "used"),
]
# What each network calls a post and a repost; ``on`` follows "posts" where it is named.
WORDS = {
    "twitter": {"posts": "tweets", "Posts": "Tweets", "Reposts": "Retweets", "on": ""},
    "bluesky": {"posts": "posts", "Posts": "Posts", "Reposts": "Reposts", "on": " on Bluesky"},
    "mastodon": {"posts": "posts", "Posts": "Posts", "Reposts": "Boosts", "on": " on Mastodon"},
}
MIXED = {"posts": "posts", "Posts": "Posts", "Reposts": "Retweets and reposts", "on": ""}


# Markdown's and HTML's punctuation, and what starts an autolink (':' of a scheme, '.' of a
# host, '@' of an address): as numeric character references each renders as itself and
# starts nothing. ('-', '+', '=' start a list or a heading only at a line's start, where no
# value stands: they stay, and dates read as dates.)
_INERT = {c: f"&#{ord(c)};" for c in "\\`*_{}[]()#!|<>&\"':~.@$"}
# An avatar address as the Twitter API gives them; anything else is not shown.
AVATAR_URL = re.compile(r"https://pbs\.twimg\.com/[A-Za-z0-9_./-]{1,200}")
# A W&B run's address, as W&B gives it (wandb.ai or a server's https host).
WANDB_URL = re.compile(r"https://[A-Za-z0-9.-]{1,100}(?::\d{1,5})?/[A-Za-z0-9_./-]{1,300}")
# BCP-47-like codes, as the API and archives tag tweets; the Hub's front matter expects them.
LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})?")
TABLE_ROWS = 10  # predictions the card shows


def inert(value: Any) -> str:
    """Text that renders as itself anywhere in the card: on one line (a newline could start a
    heading or end the HTML header), every character that means something to Markdown or
    HTML as a character reference."""
    text = " ".join(str(value if value is not None else "").split())
    return "".join(_INERT.get(c, c) for c in text)


def front_matter(context: dict[str, Any]) -> dict[str, Any]:
    languages = [c for c in context["languages"] if LANGUAGE.fullmatch(c)] or ["en"]
    meta: dict[str, Any] = {
        "language": languages if len(languages) > 1 else languages[0],
        "thumbnail": context["thumbnail"],
        "tags": ["huggingtweets", "gpt2", "text-generation"],
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "widget": [{"text": context["sampling"]["start_texts"][0]}],
    }
    if context.get("base_model_id"):
        meta["base_model"] = context["base_model_id"]
    # Whose bot this is, as the job names it: a takedown deletes a repo whose name is not the
    # bot's (a copy made with publish --repo) only when its card says so (cloud/consent.py).
    users = context.get("users") or []
    handles = context.get("handles") or [str(u["handle"]).lower() for u in users]
    meta["huggingtweets"] = {"bot": context.get("bot") or "-".join(handles), "handles": handles}
    if context.get("adapter"):  # the Hub lists it under its base's adapters
        meta["library_name"] = "peft"
        meta["tags"] = [*meta["tags"], "lora"]
    return meta


def render(context: dict[str, Any]) -> str:
    """The card's Markdown, from ``context()`` placed by ``placed()``."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,  # a missing value is a bug, not an empty string
        keep_trailing_newline=True,
        autoescape=False,  # Markdown, not HTML: every outside value goes through | inert
    )
    context = {"words": WORDS["twitter"], **context}  # a card.json of an earlier version
    env.filters["inert"] = inert
    env.filters["prefix"] = lambda value, p: f"{p}{value}"
    template = env.get_template("model_card.md.j2")
    return template.render(
        **context,
        rows=[(label.format(**context["words"]), key) for label, key in ROWS],
        table_rows=TABLE_ROWS,
        front_matter=yaml.safe_dump(front_matter(context), sort_keys=False, allow_unicode=True),
        config_yaml=yaml.safe_dump(context["config"], sort_keys=False, allow_unicode=True),
    )


def placed(context: dict[str, Any], repo: str | None) -> dict[str, Any]:
    """The context with what depends on where the model lives: on the Hub at ``repo``
    (absolute addresses), or in the folder ``context["model_dir"]`` (relative names)."""
    hub = f"https://huggingface.co/{repo}/resolve/main/" if repo else ""
    merged = None  # an adapter bot's merged copy (train.lora_merged), where it will be
    if context.get("adapter") and context.get("train", {}).get("lora_merged"):
        merged = merged_repo(repo) if repo else _merged_dir(context)
    users = []
    for user in context["users"]:
        src = f"{hub}{user['avatar_file']}" if user.get("avatar_file") else user.get("avatar_url")
        users.append({**user, "avatar_src": src or ""})
    return {
        **context,
        "repo": repo,
        "users": users,
        "thumbnail": f"{hub}predictions.png",
        "model_ref": repo or context["model_dir"],
        "merged_ref": merged,
    }


def _merged_dir(context: dict[str, Any]) -> str:
    """Where an adapter bot's merged copy is, beside its model folder."""
    return str(Path(context["model_dir"]).parent / "merged")


def _merged(context: dict[str, Any], repo: str | None) -> str:
    """The merged copy's card: a full model's, that names the adapter it was made from."""
    adapter_at = repo or context["model_dir"]
    context = {
        **context,
        "adapter": None,
        "merged_of": adapter_at,
        "model_dir": _merged_dir(context),
    }
    return render(placed(context, merged_repo(repo) if repo else None))


def write_merged(run_dir: Path, context: dict[str, Any]) -> None:
    """``run_dir/merged``'s card, and the picture and avatars the card shows (the adapter's)."""
    folder = run_dir / "merged"
    pictures = [
        "predictions.png",
        *(u["avatar_file"] for u in context["users"] if u["avatar_file"]),
    ]
    for name in pictures:
        shutil.copyfile(run_dir / "model" / name, folder / name)
    (folder / "README.md").write_text(_merged(context, context["repo"]), encoding="utf-8")


def write(folder: Path, context: dict[str, Any], data_dir: Path) -> None:
    """The card (``README.md``) and ``predictions.png`` into the model folder, and the card's
    context as ``card.json`` beside it."""
    predictions, per = context["predictions"], context["sampling"]["per_prompt"]
    # One prediction per start text first, then the rest; never a memorized one if avoidable.
    ordered = predictions[::per] + [p for i, p in enumerate(predictions) if i % per]
    said = [p for p in ordered if not empty(p)]  # a prompt with nothing after it says nothing
    shown = [p["text"] for p in said if not p["memorized"]] or [p["text"] for p in said]
    language = (context["languages"] or [None])[0]
    pictured = [{**u, "avatar": u["stats"].get("avatar")} for u in context["users"]]
    thumbnail.render(folder / "predictions.png", pictured, shown, data_dir, language)
    (folder / "README.md").write_text(render(placed(context, context["repo"])), encoding="utf-8")
    write_json(folder.parent / "card.json", context)


def for_repo(run_dir: Path, repo: str, private: bool) -> None:
    """Render ``run_dir/model/README.md`` again for ``repo`` from ``run_dir/card.json``: the
    card names the repo it is pushed to (its thumbnail, avatars and ``pipeline(model=...)``)."""
    found = read_record(LocalStorage(run_dir), CARD, AnyObject)  # damaged: exit 5
    if found is None:  # a run made before cards were saved: only its own repo will do
        return
    context = found.model_dump()
    if not private and not context.get("contact"):
        raise BadConfig(
            "a public Hub push needs a contact for removal requests on its card; this run was"
            " made without one: push it --private, or make the bot again with a contact"
        )
    (run_dir / "model" / "README.md").write_text(
        render(placed({**context, "repo": repo}, repo)), encoding="utf-8"
    )
    if (run_dir / "merged").is_dir():
        (run_dir / "merged" / "README.md").write_text(_merged(context, repo), encoding="utf-8")


def empty(prediction: dict[str, Any]) -> bool:
    """Nothing sampled after the prompt (the model ended the tweet at once)."""
    text, prompt = prediction["text"].strip(), prediction["prompt"].strip()
    return not text or text == prompt


# What each kind of source means for the person (data/sources: each source's ``kind``).
PROVENANCE = {
    "archive": "their own Twitter archive export (the person downloaded it from Twitter)",
    "files": "tweet files given by the operator (JSONL/CSV)",
    "api": "the public Twitter API v2 (their newest public tweets)",
    "bluesky": "their public posts on Bluesky, read with no login from an AppView",
    "mastodon": "their public posts on Mastodon, read with no login from their server",
}


def context(
    folder: Path,
    data: Prepared,
    job: BotJob,
    result: TrainResult,
    predictions: list[Prediction],
    flagged: int,
    wandb_url: str | None,
    versions: dict[str, str],
    model_dir: Path,
) -> dict[str, Any]:
    """Everything the template shows, as plain JSON data (``card.json``). Archive avatars are
    copied into ``folder``, the staged model folder; ``model_dir`` is where it will be once the
    run is done."""
    from dataclasses import asdict

    config = job.config
    if job.hub_push and not job.hub_private and not job.contact:
        raise BadConfig("a public Hub push needs a contact for removal requests on its card")
    users = []
    for handle, stats in data.stats["users"].items():
        avatar = stats.get("avatar") or ""
        avatar_file = avatar_url = None
        if avatar and not avatar.startswith("http"):
            avatar_file = f"avatar-{handle}{Path(avatar).suffix}"
            shutil.copy(data.data_dir / avatar, folder / avatar_file)
        elif AVATAR_URL.fullmatch(avatar):
            avatar_url = avatar
        person = Handle(handle)
        users.append(
            {
                "handle": stats.get("handle") or handle,
                "platform": person.platform,
                # a link to their profile for the networks whose handles are not Twitter's
                "profile_url": person.profile_url if person.platform != "twitter" else None,
                "display_name": stats.get("display_name") or stats.get("handle") or handle,
                "avatar_file": avatar_file,
                "avatar_url": avatar_url,
                "stats": stats,
            }
        )
    base = job.base
    hub_id = base.hub_id
    shown = [asdict(p) for p in predictions]
    adapter_file = folder / "adapter_model.safetensors"
    platforms = {u["platform"] for u in users}
    return {
        "users": users,
        "words": WORDS[platforms.pop()] if len(platforms) == 1 else MIXED,
        "bot": job.bot,
        "handles": [u.handle.key for u in job.users],  # the front matter's proof: cloud/hub.py
        "version": __version__,
        "repo": job.hub_repo,
        "model_dir": str(model_dir),
        "base_model_label": base.label,
        "base_model_url": f"https://huggingface.co/{hub_id}" if hub_id else None,
        "base_model_id": hub_id,
        "random_base": base.kind == "tiny",
        "adapter": config.train.adapter if config.train.lora else None,
        # as measured, not "a few megabytes": the tiny one's is 18 KB, gpt2-xl's rank 16 79 MB
        "adapter_size": size(adapter_file.stat().st_size) if adapter_file.is_file() else None,
        "wandb_url": wandb_url if wandb_url and WANDB_URL.fullmatch(wandb_url) else None,
        "languages": languages(data.stats),
        "clean": config.clean.model_dump(),
        "balance_ratio": config.prepare.balance_ratio,
        "warnings": data.stats["warnings"],
        "train": config.train.model_dump(),
        "result": result.summary(),
        "sampling": config.sampling.model_dump(),
        "predictions": shown,
        "shown": [p for p in shown if not empty(p)],
        "flagged": flagged,
        "config": resolved(config.model_dump(), result),
        "versions": versions,
        "contact": job.contact,
        "provenance": PROVENANCE,
    }


def size(count: int) -> str:
    """Bytes as a reader says them: 18 KB, 6.3 MB, 3.1 GB (decimal units, as the Hub shows)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            value = count / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{count} bytes"


def resolved(config: dict[str, Any], result: TrainResult) -> dict[str, Any]:
    """The config as the run used it: what ``auto`` and the defaults became (the block the
    model's context allowed, the batch and rate picked for the hardware, the strategy and
    precision), so that running it again makes the same training."""
    train = {
        **config["train"],
        "block_size": result.block_size,
        "batch_size": result.batch_size,
        "learning_rate": float(f"{result.learning_rate:.6g}"),
        "strategy": result.strategy if result.strategy in STRATEGIES else "auto",
        "precision": result.precision if result.precision in ("bf16", "fp32") else "auto",
    }
    return {**config, "train": train}


def languages(stats: dict[str, Any]) -> list[str]:
    """Languages of at least 5% of the kept tweets, most common first ("und" is no language)."""
    counts: dict[str, int] = {}
    for user in stats["users"].values():
        for lang, n in user["languages"].items():
            counts[lang] = counts.get(lang, 0) + n
    total = sum(counts.values()) or 1
    return [
        k
        for k, n in sorted(counts.items(), key=lambda kv: -kv[1])
        if k not in ("und", "qme", "zxx") and n / total >= 0.05
    ]
