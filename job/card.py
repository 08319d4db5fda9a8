"""The model card: ``model/README.md``, rendered from ``templates/model_card.md.j2``.

Structured like the original HuggingTweets cards (front matter, avatar header, how it works,
training data table, training procedure, how to use, limitations), plus what they lacked:
validation perplexity before and after, the memorization figure, the exact config and versions.
The front matter is produced by ``yaml.safe_dump`` and every user-given string is escaped, so a
display name cannot break the YAML, the HTML header or a table.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import yaml

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
    """The card's Markdown; ``context`` is built by the run recipe (see run.py)."""
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
