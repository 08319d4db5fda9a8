"""The model card: ``model/README.md``, rendered from ``templates/model_card.md.j2``.

Structured like the original HuggingTweets cards (front matter, avatar header, how it works,
training data table, training procedure, how to use, limitations), plus what they lacked:
validation perplexity before and after, the memorization figure, the exact config and versions.
The front matter is produced by ``yaml.safe_dump`` and every user-given string is escaped, so a
display name cannot break the YAML, the HTML header or a table.
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from job import __version__
from job.errors import BadConfig
from job.training.model import GPT2

if TYPE_CHECKING:
    from job.config import BotJob
    from job.data.clean import Prepared
    from job.outputs.predict import Prediction
    from job.training.train import TrainResult

TEMPLATES = Path(__file__).parent / "templates"
ROWS = [  # the original card's table, plus what our cleaning adds
    ("Tweets downloaded", "downloaded"),
    ("Retweets", "retweets"),
    ("Short tweets", "short"),
    ("Replies dropped", "dropped_replies"),
    ("Duplicates", "duplicates"),
    ("Tweets kept", "kept"),
    ("Tweets used (after balancing)", "used"),
]


def md_cell(value: Any) -> str:
    """Safe inside a Markdown table cell: HTML-escaped, pipes and newlines neutralised."""
    text = html.escape(str(value if value is not None else ""))
    return " ".join(text.replace("|", "&#124;").split())


def front_matter(context: dict[str, Any]) -> dict[str, Any]:
    languages = context["languages"] or ["en"]
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
    return meta


def render(context: dict[str, Any]) -> str:
    """The card's Markdown, from ``context()``."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,  # a missing value is a bug, not an empty string
        keep_trailing_newline=True,
        autoescape=False,  # Markdown, not HTML: escaping is explicit (| e, | md)
    )
    env.filters["md"] = md_cell
    env.filters["prefix"] = lambda value, p: f"{p}{value}"
    template = env.get_template("model_card.md.j2")
    return template.render(
        **context,
        rows=ROWS,
        front_matter=yaml.safe_dump(front_matter(context), sort_keys=False, allow_unicode=True),
        config_yaml=yaml.safe_dump(context["config"], sort_keys=False, allow_unicode=True),
    )


def write(folder: Path, context: dict[str, Any], data_dir: Path) -> None:
    """The card (``README.md``) and ``predictions.png`` into the model folder."""
    from job.outputs import thumbnail

    predictions, per = context["predictions"], context["sampling"]["per_prompt"]
    # One prediction per start text first, then the rest; never a memorized one if avoidable.
    ordered = predictions[::per] + [p for i, p in enumerate(predictions) if i % per]
    said = [p for p in ordered if not empty(p)]  # a prompt with nothing after it says nothing
    shown = [p.text for p in said if not p.memorized] or [p.text for p in said]
    language = (context["languages"] or [None])[0]
    thumbnail.render(folder / "predictions.png", context["users"], shown, data_dir, language)
    (folder / "README.md").write_text(render(context), encoding="utf-8")


def empty(prediction: Prediction) -> bool:
    """Nothing sampled after the prompt (the model ended the tweet at once)."""
    return not prediction.text.strip() or prediction.text.strip() == prediction.prompt.strip()


# What each kind of source means for the person (data/sources: each source's ``kind``).
PROVENANCE = {
    "archive": "their own Twitter archive export (the person downloaded it from Twitter)",
    "files": "tweet files given by the operator (JSONL/CSV)",
    "api": "the public Twitter API v2 (their newest public tweets)",
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
    """Everything the template shows. Archive avatars are copied into ``folder``, the staged
    model folder; ``model_dir`` is where it will be once the run is done."""
    repo, config = job.hub_repo, job.config
    if job.hub_push and not job.hub_private and not job.contact:
        raise BadConfig("a public Hub push needs a contact for removal requests on its card")
    users = []
    for handle, stats in data.stats["users"].items():
        avatar = stats.get("avatar")
        if avatar and not avatar.startswith("http"):
            name = f"avatar-{handle}{Path(avatar).suffix}"
            shutil.copy(data.data_dir / avatar, folder / name)
            avatar = f"https://huggingface.co/{repo}/resolve/main/{name}" if repo else name
        users.append(
            {
                "handle": stats.get("handle") or handle,
                "display_name": stats.get("display_name") or stats.get("handle") or handle,
                "avatar_src": avatar or "",
                "avatar": stats.get("avatar"),
                "stats": stats,
            }
        )
    base = config.train.base_model
    gpt2 = GPT2.get(base)
    return {
        "users": users,
        "version": __version__,
        "base_model_label": "a tiny GPT-2 (random init)" if base == "tiny" else base,
        "base_model_url": f"https://huggingface.co/{(gpt2 or GPT2['gpt2']).hub_id}",
        "base_model_id": gpt2.hub_id
        if gpt2
        else (base if "/" in base and not Path(base).exists() else None),
        "thumbnail": f"https://huggingface.co/{repo}/resolve/main/predictions.png"
        if repo
        else "predictions.png",
        "model_ref": repo or str(model_dir),
        "wandb_url": wandb_url,
        "languages": languages(data.stats),
        "clean": config.clean.model_dump(),
        "balance_ratio": config.prepare.balance_ratio,
        "warnings": data.stats["warnings"],
        "train": config.train.model_dump(),
        "result": result.summary(),
        "sampling": config.sampling.model_dump(),
        "predictions": predictions,
        "shown": [p for p in predictions if not empty(p)],
        "flagged": flagged,
        "config": config.model_dump(),
        "versions": versions,
        "contact": job.contact,
        "provenance": PROVENANCE,
    }


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
