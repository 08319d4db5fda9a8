"""The bot in a browser (job/outputs/browser.py): the ONNX graph computes what the model does,
first step and cached steps; its int8 form is kept only where it keeps the text; the Space's
files are what the Hub accepts; and the page, in a real Chromium, generates text from a bot's
own folder with transformers.js served from the npm package (no CDN)."""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from job.outputs import browser
from tests.helpers import REPO, SAMPLE

NPM = REPO / "build" / "npm" / "node_modules"
TEXTS = [json.loads(line)["text"] for line in SAMPLE.read_text().splitlines()]
# fp32 through a graph against fp32 through PyTorch: the same arithmetic, reordered
TOLERANCE = 1e-4


def tiny_bot(
    folder: Path, arch: dict[str, int] | None = None, vocab: Path | None = None, seed: int = 3
) -> Any:
    from job.training.model import build_random, load

    build_random(folder, TEXTS, vocab, seed, arch)
    model, tokenizer = load(str(folder), device="cpu")
    return model.float().eval(), tokenizer


def steps(model: Any, sess: Any, ids: list[int], split: int) -> float:
    """The largest logit difference over a first step of ``split`` tokens and then one cached
    step a token, graph against model."""
    import numpy as np
    import torch

    shape = browser.Shape.of(model.config)
    worst = 0.0
    graph_past = None
    torch_past = None
    chunks = [ids[:split]] + [[t] for t in ids[split:]]
    for chunk in chunks:
        x = np.array([chunk], np.int64)
        logits, graph_past = browser.run_graph(sess, x, graph_past, shape)
        with torch.no_grad():
            out = model(torch.tensor([chunk]), cache=torch_past, use_cache=True)
        torch_past = out.cache
        worst = max(worst, float(np.abs(logits - out.logits.numpy()).max()))
    return worst


@pytest.mark.integration
@pytest.mark.parametrize("stand_in", ["tiny", "gpt2-shaped"])
def test_the_graph_computes_what_the_model_computes(stand_in, tmp_path, shared) -> None:
    """First step and cached steps, several lengths, on the tiny model and on one of GPT-2's
    width, heads and vocabulary (2 of its 12 layers: the graph is the same layer repeated)."""
    arch = {"n_embd": 768, "n_head": 12, "n_layer": 2, "n_positions": 1024}
    model, tokenizer = (
        tiny_bot(tmp_path / "base")
        if stand_in == "tiny"
        else tiny_bot(tmp_path / "base", arch, shared / "tokenizers" / "gpt2")
    )
    full = tmp_path / "model.onnx"
    browser.graph(model, full)
    sess = browser.session(full)
    ids = tokenizer(" ".join(TEXTS[:6]))["input_ids"][:40]
    for split in (1, 7, 30):  # a first step of 1, 7 and 30 tokens, then one token a step
        assert steps(model, sess, ids, split) < TOLERANCE, split


@pytest.mark.integration
def test_the_int8_graph_is_kept_where_it_keeps_the_text(tmp_path: Path, capfd) -> None:
    model, tokenizer = tiny_bot(tmp_path / "base")
    # counted from the saved file's headers, tied weights once, as the model counts them
    assert browser.saved_params(tmp_path / "base") == model.num_parameters()
    assert browser.saved_params(tmp_path / "none") == 0
    capfd.readouterr()
    made = browser.export(model, tmp_path / "bot", TEXTS[:16], tokenizer)
    said = capfd.readouterr().err  # the libraries' notes to their authors stay out of the log
    assert "torchvision" not in said and "pre-processing" not in said and "axis" not in said
    assert made.file == "onnx/model_quantized.onnx" and made.dtype == "q8"
    assert made.agreement is not None and made.agreement >= browser.MIN_AGREEMENT
    assert [p.name for p in (tmp_path / "bot" / "onnx").iterdir()] == ["model_quantized.onnx"]
    quantized = tmp_path / "bot" / made.file
    assert quantized.stat().st_size == made.bytes
    # the measure tells graphs apart: the model with its logits negated (its final norm's
    # scale, and so every logit, flipped: the most likely token becomes the least) agrees
    # nowhere
    import torch

    other, _ = tiny_bot(tmp_path / "other")
    with torch.no_grad():
        other.transformer.ln_f.weight.neg_()
        other.transformer.ln_f.bias.neg_()
    other_graph = tmp_path / "other.onnx"
    browser.graph(other, other_graph)  # fp32, of the same shape: the size the int8 one spares
    assert made.bytes < 0.8 * other_graph.stat().st_size  # what a visitor is spared
    shape = browser.Shape.of(model.config)
    assert browser.next_token_agreement(quantized, other_graph, TEXTS[:16], tokenizer, shape) < 0.05


@pytest.mark.parametrize(
    ("setting", "kind", "params", "adapter", "merged", "why"),
    [
        ("auto", "gpt2", 124_439_808, False, False, None),
        ("auto", "gpt2", 354_823_168, False, False, None),
        ("auto", "gpt2", 774_030_080, False, False, "too many for a browser"),
        ("on", "hub", 1_557_611_200, False, False, "too many for a browser"),
        ("auto", "tiny", 170_000, False, False, "not a tiny base"),
        ("auto", "folder", 124_439_808, False, False, "not a folder base"),
        ("on", "folder", 124_439_808, False, False, None),
        ("on", "tiny", 170_000, False, False, None),
        ("on", "hub", 124_439_808, True, False, "--lora-merged"),
        ("on", "hub", 124_439_808, True, True, None),
        ("off", "hub", 124_439_808, False, False, "off"),
    ],
)
def test_which_bots_get_a_space(setting, kind, params, adapter, merged, why) -> None:
    said = browser.why_not(setting, kind, params, adapter, merged)
    assert (said is None) if why is None else (why in (said or ""))


def test_the_spaces_front_matter_is_the_hubs(tmp_path: Path) -> None:
    from huggingface_hub import SpaceCard

    made = browser.Export("onnx/model_quantized.onnx", "q8", 131_000_000, 0.97)
    sampling = {"temperature": 0.9, "top_p": 0.95, "max_length": 160, "start_texts": ["I <3"]}
    browser.write_space(
        tmp_path, bot="sourdough_sam", repo="me/sourdough_sam", card_url="https://x/</a>",
        who="@sourdough_sam", made=made, sampling=sampling,
    )  # fmt: skip
    card = SpaceCard.load(tmp_path / "README.md")
    assert card.data.sdk == "static" and card.data.models == ["me/sourdough_sam"]
    assert "not" in card.data.short_description and len(card.data.short_description) <= 60
    page = (tmp_path / "index.html").read_text()
    assert "not their words" in page and "131.0 MB" in page
    assert '</a>"' not in page and "&lt;/a&gt;" in page  # every value inert in the HTML
    settings = json.loads(_attribute(page, "data-settings"))
    assert settings["model"] == "me/sourdough_sam" and settings["local"] is False
    assert settings["cdn"].endswith(f"@{browser.TRANSFORMERS_JS}/dist/transformers.min.js")
    assert settings["max_new_tokens"] == 160 and settings["prompt"] == "I <3"


def _attribute(page: str, name: str) -> str:
    import html

    start = page.index(f'{name}="') + len(name) + 2
    return html.unescape(page[start : page.index('"', start)])


def test_onnxruntime_in_the_job_keeps_no_device_id_and_sends_nothing(tmp_path: Path) -> None:
    """onnxruntime 1.29+ on Linux starts its telemetry when imported: a device id in the home
    folder, a session file in the temporary one, events for Microsoft's collector (job/__init__.py
    NO_TELEMETRY). First without the job, to show this machine's onnxruntime does it (its own
    opt-outs, CI among them, taken out); then the job's way, an operator's "0" overruled."""
    import subprocess
    import sys

    quiet = ("CI", "ORT_RUNNING_UNIT_TESTS", "ORT_DISABLE_TELEMETRY")
    base = {k: v for k, v in os.environ.items() if k not in quiet}
    left = {}
    for way, script in (("alone", "import onnxruntime"), ("job", "import job, onnxruntime")):
        home, temporary = tmp_path / way / "home", tmp_path / way / "tmp"
        home.mkdir(parents=True)
        temporary.mkdir()
        env = {**base, "HOME": str(home), "TMPDIR": str(temporary)}
        if way == "job":
            env["ORT_DISABLE_TELEMETRY"] = "0"
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
        assert done.returncode == 0, done.stderr
        left[way] = sorted(str(p.relative_to(tmp_path / way)) for p in (tmp_path / way).rglob("*"))
    assert "home/.cache/Microsoft/DeveloperTools/.onnxruntime/deviceid" in left["alone"]
    assert left["job"] == ["home", "tmp"]


def test_the_makefile_installs_the_pinned_transformers_js() -> None:
    assert f"TRANSFORMERS_JS := {browser.TRANSFORMERS_JS}\n" in (REPO / "Makefile").read_text()


@pytest.mark.integration
def test_the_page_generates_in_a_real_browser(tmp_path: Path) -> None:
    """Chromium, headless, opens the Space's page from a loopback server holding the bot's
    folder, with the pinned CDN's transformers.js and onnxruntime-web routed to the npm
    package, and generates at least 10 new tokens; the screenshot is kept."""
    import shutil

    chromium = shutil.which("chromium")
    package = NPM / "@huggingface" / "transformers" / "package.json"
    missing = [
        what
        for what, ok in (("chromium", chromium), ("transformers.js", package.exists()))
        if not ok
    ]
    if missing:
        message = f"{', '.join(missing)} not installed: make install puts them in place"
        if os.environ.get("HUGGINGTWEETS_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    assert json.loads(package.read_text())["version"] == browser.TRANSFORMERS_JS
    from playwright.sync_api import sync_playwright

    bot = tmp_path / "sourdough_sam"
    model, tokenizer = tiny_bot(bot / "model")
    tokenizer.save_pretrained(bot / "model")
    made = browser.export(model, bot / "model", TEXTS[:8], tokenizer)
    sampling = {"temperature": 1.0, "top_p": 0.95, "max_length": 24, "start_texts": ["Bread is"]}
    browser.write_space(
        bot / "space", bot="sourdough_sam", repo=None, card_url="../model/README.md",
        who="@sourdough_sam", made=made, sampling=sampling,
    )  # fmt: skip
    served: list[str] = []
    handler = functools.partial(_Files, directory=str(bot), log=served)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    outside: list[str] = []
    try:
        with sync_playwright() as p:
            chrome = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = chrome.new_page()
            page.route("https://cdn.jsdelivr.net/**", _from_npm)
            page.on(
                "request",
                lambda r: (
                    outside.append(r.url)
                    if not r.url.startswith(
                        ("http://127.0.0.1", "https://cdn.jsdelivr.net/", "data:", "blob:")
                    )
                    else None
                ),
            )
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/space/index.html")
            page.wait_for_function(
                "document.getElementById('app').dataset.ready"
                " || document.getElementById('app').dataset.failed",
                timeout=120_000,
            )
            assert page.evaluate("document.getElementById('app').dataset.failed") is None
            page.click("#go")
            page.wait_for_function(
                "document.getElementById('app').dataset.generated", timeout=120_000
            )
            text = page.inner_text("#out")
            (REPO / "build").mkdir(exist_ok=True)
            page.screenshot(path=str(REPO / "build" / "space-page.png"))  # kept for a reader
            chrome.close()
    finally:
        server.shutdown()
        server.server_close()
    assert text.startswith("Bread is")
    assert len(tokenizer(text[len("Bread is") :])["input_ids"]) >= 10  # new tokens, generated
    assert "/model/onnx/model_quantized.onnx" in served and outside == []


class _Files(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args: Any, log: list[str], **kwargs: Any) -> None:
        self.served = log
        super().__init__(*args, **kwargs)

    def log_message(self, *args: Any) -> None:
        self.served.append(self.path)


def _from_npm(route: Any) -> None:
    """The CDN's address, answered from the npm package installed for the test."""
    url = route.request.url.split("?", 1)[0]
    package, _, path = url.split("cdn.jsdelivr.net/npm/", 1)[1].partition("/dist/")
    local = NPM / package.rsplit("@", 1)[0] / "dist" / path
    if not local.is_file():
        route.fulfill(status=404, body="")
        return
    kind = "application/wasm" if local.suffix == ".wasm" else "text/javascript"
    route.fulfill(status=200, body=local.read_bytes(), headers={"Content-Type": kind})


@pytest.mark.integration
def test_a_bot_with_a_space_is_published_with_it_and_taken_down_with_it(hub, tmp_path) -> None:
    """`run --space on` leaves space/ beside model/ and onnx/ in the model; `publish` pushes the
    model, its graph and the Space (its page pointed at the repo); `takedown` deletes both."""
    from huggingface_hub import SpaceCard

    from tests.helpers.cli import invoke
    from tests.helpers.jobs import TINY_FLAGS

    out = tmp_path / "out"
    made = invoke(
        "run", "sourdough_sam", "--jsonl", str(SAMPLE), *TINY_FLAGS, "--space", "on",
        "--contact", "takedown@example.org", "--out", str(out), "--wandb-mode", "disabled",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    bot = out / "sourdough_sam"
    assert (bot / "model" / "onnx" / "model_quantized.onnx").is_file()
    assert "a visitor downloads" in (bot / "model" / "README.md").read_text()
    local = json.loads(_attribute((bot / "space" / "index.html").read_text(), "data-settings"))
    assert local["local"] is True and local["model"] == "model"
    hidden = invoke("publish", "sourdough_sam", "--output", str(out), "--repo", "me/sam-bot",
                    "--private")  # fmt: skip
    assert hidden.returncode == 0, hidden.stderr  # a browser could not read a private model:
    assert "spaces/me/sam-bot" not in hub.state.repos  # no Space
    assert "onnx/model_quantized.onnx" in hub.state.files("me/sam-bot")
    pushed = invoke(
        "publish", "sourdough_sam", "--output", str(out), "--repo", "me/sam-bot", "--public"
    )
    assert pushed.returncode == 0, pushed.stderr
    assert "onnx/model_quantized.onnx" in hub.state.files("me/sam-bot")
    space = hub.state.files("spaces/me/sam-bot")
    assert set(space) == {"README.md", "index.html"}
    card = SpaceCard(space["README.md"].decode())
    assert card.data.models == ["me/sam-bot"] and card.data.sdk == "static"
    assert card.data.huggingtweets == {"bot": "sourdough_sam", "handles": ["sourdough_sam"]}
    settings = json.loads(_attribute(space["index.html"].decode(), "data-settings"))
    assert settings["local"] is False and settings["model"] == "me/sam-bot"
    assert 'href="https://huggingface.co/me/sam-bot"' in space["index.html"].decode()
    status = invoke("status", "--output", str(out))
    assert "spaces/me/sam-bot" in status.stdout  # listed beside the repo
    taken = invoke("takedown", "sourdough_sam", "--output", str(out))
    assert taken.returncode == 0, taken.stderr
    assert "deleted spaces/me/sam-bot" in taken.stdout and "deleted me/sam-bot" in taken.stdout
    assert not {"me/sam-bot", "spaces/me/sam-bot"} & set(hub.state.repos)


@pytest.mark.integration
def test_an_adapter_bots_space_runs_its_merged_copy(tmp_path) -> None:
    """An adapter bot's graph is its merged weights' (merged/onnx/), and its page loads the
    merged copy; without --lora-merged it gets no Space, and one line says why."""
    from tests.helpers.cli import invoke
    from tests.helpers.jobs import TINY_FLAGS

    out = tmp_path / "out"
    common = ["--jsonl", str(SAMPLE), *TINY_FLAGS, "--adapter", "lora", "--space", "on"]
    made = invoke("run", "sourdough_sam", *common, "--lora-merged", "--out", str(out))
    assert made.returncode == 0, made.stderr
    bot = out / "sourdough_sam"
    assert (bot / "merged" / "onnx" / "model_quantized.onnx").is_file()
    assert not (bot / "model" / "onnx").exists()  # the adapter's folder stays peft's own
    assert json.loads((bot / "merged" / "config.json").read_text())["use_cache"] is True
    settings = json.loads(_attribute((bot / "space" / "index.html").read_text(), "data-settings"))
    assert settings["model"] == "merged" and settings["local"] is True
    alone = invoke("run", "sourdough_sam", *common, "--out", str(tmp_path / "alone"))
    assert alone.returncode == 0, alone.stderr
    assert "no Space: an adapter bot's Space runs its merged copy" in alone.stderr
    assert not (tmp_path / "alone" / "sourdough_sam" / "space").exists()


@pytest.mark.integration
def test_an_export_in_its_own_process_fails_as_it_would_in_this_one(tmp_path: Path) -> None:
    """export_apart (a task's bot behind the next one's training): the process's failure is
    the error the export here raises, its code and line; past its seconds it is killed and
    the bot's error is transient. (Its success: tests/test_behind.py's task.)"""
    from job.errors import JobError, TransientError

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt2", "n_layer": 100000}')
    with pytest.raises(JobError) as here:
        browser.export_saved(folder, ["Bread is good"])
    with pytest.raises(JobError) as apart:
        browser.export_apart(folder, ["Bread is good"], 120)
    assert type(apart.value) is type(here.value) and str(apart.value) == str(here.value)
    assert here.value.exit_code != 1  # a known error, not a bug
    with pytest.raises(TransientError, match="took over 0 s"):
        browser.export_apart(folder, ["Bread is good"], 0.2)
