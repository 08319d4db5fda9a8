"""The model card: inert outside values, what it claims, and the repo it names."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from job import errors
from job.data.clean import Prepared
from job.outputs.card import context, for_repo, front_matter, inert, placed, render
from job.outputs.predict import Prediction
from job.training.train import TrainResult
from tests.helpers.jobs import tiny_job

HOSTILE = {
    # A display name as the API may give it: blank lines, Markdown and HTML of every kind.
    "display_name": "Sam\n\n# Pwned heading\n\n![img](https://e.vil/x.png) [link](https://e.vil)"
    " <img src=x onerror=alert(1)> www.e.vil https://e.vil/raw *em* `code` | cell </div>",
    "handle": "sam_\n\n## [x](https://e.vil)",
    "date": "2020-01-01\n\n# <b>date</b>",
    "avatar": "https://e.vil/avatar.png') ; background: url('https://e.vil/2",
    "language": "en\n# <script>",
    "tweet": "\n\n### ![a](https://e.vil/p.png) <a href=https://e.vil>x</a> http://e.vil",
    "warning": "only 10 characters\n\n# [x](https://e.vil)",
}


def card_context(tmp_path: Path, values: dict[str, str], **job: Any) -> dict[str, Any]:
    """The card's context through the real ``context()``, from a bot's data stats, a result and
    predictions, with ``values`` where the archive and the API put theirs."""
    stats = {
        "downloaded": 20,
        "retweets": 1,
        "short": 2,
        "dropped_replies": 0,
        "duplicates": 0,
        "kept": 17,
        "used": 17,
        "replies": 3,
        "languages": {"en": 15, values["language"]: 2},
        "handle": values["handle"],
        "display_name": values["display_name"],
        "avatar": values["avatar"],
        "provenance": "api",
        "first": values["date"],
        "last": values["date"],
    }
    data = Prepared(
        bot="sam",
        data_dir=tmp_path,
        tweets=[],
        stats={"users": {"sam": stats}, "warnings": [values["warning"]]},
    )
    result = TrainResult(
        base_val_loss=7.0,
        val_loss=5.0,
        train_loss=5.0,
        steps=30,
        train_tokens=9000,
        block_size=128,
        seconds=3.0,
        tokens_per_second=3000.0,
        precision="fp32",
        device="cpu",
        learning_rate=0.003,
        batch_size=8,
    )
    predictions = [
        Prediction(prompt="My dream is", text=f"My dream is {values['tweet']} {i}")
        for i in range(15)
    ]
    (tmp_path / "model").mkdir(exist_ok=True)
    return context(
        tmp_path / "model",
        data,
        tiny_job("sam", **job),
        result,
        predictions,
        0,
        wandb_url="https://e.vil/x)](javascript:alert(1)",
        versions={"huggingtweets": "0"},
        model_dir=tmp_path / "out" / "model",
    )


class Elements(HTMLParser):
    """The elements a renderer would make live: headings, images, links, and what they point to."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("img", "a", "script", "h1", "h2", "h3", "h4", "h5", "h6"):
            named = dict(attrs)
            self.found.append((tag, str(named.get("src") or named.get("href") or "")))


def live(markdown: str) -> list[tuple[str, str]]:
    from markdown_it import MarkdownIt

    parser = Elements()
    body = markdown.split("---\n", 2)[2]  # the front matter is the Hub's, not Markdown
    parser.feed(MarkdownIt("commonmark", {"html": True}).render(body))
    return parser.found


def test_inert_text_renders_as_itself_on_one_line() -> None:
    from markdown_it import MarkdownIt

    text = HOSTILE["display_name"]
    assert "\n" not in inert(text) and "e.vil" not in inert(text)  # no linkifier sees a host
    html = MarkdownIt("commonmark", {"html": True}).render(f"| x |\n| --- |\n| {inert(text)} |\n")
    assert "<h1>" not in html and "<img" not in html and "<a " not in html
    assert "![img](https://e.vil/x.png)" in html.replace("&amp;", "&")  # shown, as text
    assert inert(None) == ""


def test_every_outside_value_is_inert_everywhere_in_the_card(tmp_path: Path) -> None:
    """A card made of hostile values makes exactly the headings, images and links that a card
    of plain ones makes: none of the values starts one."""
    plain = {k: "plain" for k in HOSTILE} | {"language": "de", "date": "2020-01-01", "avatar": ""}
    hostile = render(placed(card_context(tmp_path, HOSTILE), None))
    benign = render(placed(card_context(tmp_path, plain), None))
    assert live(hostile) == live(benign)
    assert not [src for tag, src in live(hostile) if "e.vil" in src]
    # The header's HTML holds: no blank line in it ends the block early.
    header = hostile.split("---\n", 2)[2].split("</div>\n</div>", 1)[0]
    assert "\n\n" not in header.strip()
    meta = yaml.safe_load(hostile.split("---\n", 2)[1])
    assert meta["language"] == "en"  # codes only: the hostile one is not a code
    assert "e.vil" not in json.dumps(meta)
    assert "W&B run" not in hostile  # a W&B address not of W&B's form is left out


def test_the_card_says_what_the_run_used(tmp_path: Path) -> None:
    card = render(placed(card_context(tmp_path, HOSTILE), None))
    config = yaml.safe_load(card.split("```yaml\n", 1)[1].split("```", 1)[0])
    # The resolved values, not the config as given (block_size 256 asked; 128 trained).
    train = config["train"]
    assert (train["block_size"], train["batch_size"], train["learning_rate"]) == (128, 8, 0.003)
    assert (train["strategy"], train["precision"]) == ("ddp", "fp32")
    # 15 sampled, 10 in the table: it says so.
    assert "0 of the 15 sampled predictions" in card
    assert "The table shows the first 10 of the 15" in card
    assert len(re.findall(r"^\| My dream is \|", card, re.M)) == 10
    # A tiny random base links to no GPT-2 and claims none of its limitations.
    assert "openai-community/gpt2" not in card and "random weights" in card
    # No avatar from the Twitter API's host: no empty avatar row.
    assert 'class="flex"' not in card


def test_front_matter_survives_hostile_strings() -> None:
    meta = front_matter(
        {
            "languages": ["en", "de"],
            "thumbnail": "predictions.png",
            "sampling": {"start_texts": ['a: "b" --- #c']},
            "base_model_id": None,
        }
    )
    loaded = yaml.safe_load(yaml.safe_dump(meta))
    assert loaded["widget"] == [{"text": 'a: "b" --- #c'}]
    assert loaded["language"] == ["en", "de"] and "base_model" not in loaded


def test_a_push_to_another_repo_renders_the_card_for_that_repo(tmp_path: Path) -> None:
    job = {"train": {"base_model": "gpt2"}}
    saved = card_context(tmp_path, HOSTILE | {"avatar": "https://pbs.twimg.com/p/a.jpg"}, **job)
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "card.json").write_text(json.dumps(saved | {"contact": "takedown@example.org"}))
    for_repo(run, "someone/new-name", private=False)
    card = (run / "model" / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n", 2)[1])
    assert (
        meta["thumbnail"] == "https://huggingface.co/someone/new-name/resolve/main/predictions.png"
    )
    assert 'pipeline("text-generation", model="someone/new-name")' in card
    assert "pbs.twimg.com/p/a.jpg" in card  # the API's avatar address, as given
    assert "base_model: openai-community/gpt2" in card
    # A public push needs the contact the card names; a private one does not.
    (run / "card.json").write_text(json.dumps(saved | {"contact": None}))
    with pytest.raises(errors.BadConfig, match="contact"):
        for_repo(run, "someone/new-name", private=False)
    for_repo(run, "someone/new-name", private=True)


def test_a_prediction_with_nothing_after_its_prompt_is_empty() -> None:
    from job.outputs.card import empty

    assert empty({"prompt": "I wish", "text": "I wish"})  # a held-out German archive's
    assert empty({"prompt": "I wish", "text": "I wish "})
    assert not empty({"prompt": "I wish", "text": "I wish it rained"})
