"""The bot in a visitor's browser: an ONNX export beside the model, and a static Space page.

- ``export``: the fine-tuned GPT-2 as one ONNX graph in transformers.js's layout
  (``onnx/model_quantized.onnx``, what its ``dtype: "q8"`` loads), with the inputs and
  outputs it feeds a GPT-2 with a key/value cache: ``input_ids``, ``attention_mask``,
  ``position_ids``, ``past_key_values.{i}.key|value`` in, ``logits`` and
  ``present.{i}.key|value`` out. One graph serves the first step (a past of length 0) and
  every cached step. Made with ``torch.onnx`` (its dynamo exporter), which the lock has:
  optimum-onnx 0.1 pins transformers < 4.58. Then quantized (onnxruntime's dynamic int8 of
  the matrices), kept only where it keeps the text: the quantized graph's next token must be
  the full one's on at least ``MIN_AGREEMENT`` of the bot's own held-out text's positions,
  else the fp32 graph is published (``onnx/model.onnx``, ``dtype: "fp32"``).
- ``write_space``: ``space/README.md`` (the Hub's front matter for a static Space) and
  ``space/index.html``: a prompt, a button, the sampling controls, the not-their-words line
  and a link to the card; transformers.js at ``TRANSFORMERS_JS`` (a pinned version) from
  jsDelivr, the model's files from the Hub. Nothing is sent anywhere else.
- Which bases get one (``fits``): a browser holds the graph in WebAssembly's memory (4 GB at
  most) and downloads it whole: gpt2 (124 M parameters, a 126 MB quantized graph, measured) and
  gpt2-medium (355 M, ~358 MB) do; gpt2-large (774 M: ~780 MB quantized, 3.1 GB in fp32, past
  ONNX's 2 GB single file) and gpt2-xl (1.6 G) do not, and get a line pointing to
  ``huggingtweets generate``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from job.data.handles import Handle
from job.errors import JobError, TransientError, classify, of_code
from job.training.model import load

log = logging.getLogger(__name__)

TRANSFORMERS_JS = "4.3.2"  # @huggingface/transformers on npm, pinned: the page's runtime
CDN = f"https://cdn.jsdelivr.net/npm/@huggingface/transformers@{TRANSFORMERS_JS}/dist/transformers.min.js"
MAX_PARAMS = 400_000_000  # gpt2-medium's 355 M fit a browser; gpt2-large's 774 M do not
MIN_AGREEMENT = 0.9  # of next tokens the int8 graph picks as the fp32 one does
# The export process's host memory at its peak, measured (export_apart, resident): 0.51 GB for
# the tiny base (the imports: torch, transformers, onnxruntime), 2.69 GB for gpt2's 124 M
# parameters: ~17.5 bytes a parameter on top (its fp32 weights, the traced program, the graph,
# its int8 copy, two inference sessions). gpt2-medium's 355 M: ~6.9 GB.
EXPORT_FIXED_BYTES = 550_000_000
EXPORT_BYTES_PER_PARAM = 18
OPSET = 18
SPACE_FILES = ("README.md", "index.html")


@dataclass
class Export:
    file: str  # onnx/model_quantized.onnx or onnx/model.onnx
    dtype: str  # what transformers.js is asked for: q8 or fp32
    bytes: int  # what a visitor downloads for the graph
    agreement: float | None  # the int8 graph's next tokens against fp32's (None: not tried)


def fits(params: int) -> bool:
    """Whether a browser can hold a base of ``params`` parameters (module docstring)."""
    return params <= MAX_PARAMS


def saved_params(folder: Path) -> int:
    """The parameters of the model saved in ``folder`` (0 where there is none), read from its
    safetensors headers: no weights are loaded."""
    from safetensors import safe_open

    count = 0
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as weights:
            names = weights.keys()  # safe_open is no mapping: no `in` of its own
            count += sum(math.prod(weights.get_slice(n).get_shape()) for n in names)
    return count


def why_not(setting: str, base_kind: str, params: int, adapter: bool, merged: bool) -> str | None:
    """Why a bot gets no Space (config.py ``sampling.space``), or None when it gets one."""
    if setting == "off":
        return "sampling.space is off"
    if setting == "auto" and base_kind != "gpt2":
        # a base named for a GPT-2 size: gpt2 or gpt2-medium here, larger ones below
        return f"auto makes one for gpt2 and gpt2-medium, not a {base_kind} base (--space on)"
    if not fits(params):
        return (
            f"{params / 1e6:.0f} M parameters are too many for a browser (at most"
            f" {MAX_PARAMS / 1e6:.0f} M: gpt2 and gpt2-medium)"
        )
    if adapter and not merged:
        return "an adapter bot's Space runs its merged copy: give --lora-merged"
    return None


def _flat(model: Any, layers: int) -> Any:
    """``model`` as a module of flat tensors, as ONNX names its inputs and outputs (torch is
    imported here, when a graph is made, not with the run)."""
    import torch
    from transformers.cache_utils import DynamicCache

    class Flat(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache()
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,  # transformers 5's name: past_key_values goes in 5.40
                use_cache=True,
            )
            cached = out.cache.layers
            return (out.logits, *(t for c in cached for t in (c.keys, c.values)))

    return Flat().eval()


def names(layers: int) -> tuple[list[str], list[str]]:
    """The graph's input and output names, transformers.js's for a GPT-2 with a cache."""
    kv = [f"{{}}.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    past = [n.format("past_key_values") for n in kv]
    return ["input_ids", "attention_mask", "position_ids", *past], [
        "logits",
        *(n.format("present") for n in kv),
    ]


def graph(model: Any, path: Path) -> None:
    """``model`` (a GPT-2 on the host, fp32) as one fp32 ONNX graph at ``path``."""
    import torch

    config = model.config
    layers, heads = config.n_layer, config.n_head
    head = config.n_embd // heads
    inputs, outputs = names(layers)
    batch, seq = torch.export.Dim("batch_size"), torch.export.Dim("sequence_length")
    past_seq, total = torch.export.Dim("past_sequence_length"), torch.export.Dim("total_length")
    example_past = [torch.zeros(1, heads, 3, head) for _ in range(2 * layers)]
    example = (
        torch.ones(1, 4, dtype=torch.long),
        torch.ones(1, 7, dtype=torch.long),
        torch.arange(3, 7)[None],
        *example_past,
    )
    dynamic = {
        "input_ids": {0: batch, 1: seq},
        "attention_mask": {0: batch, 1: total},
        "position_ids": {0: batch, 1: seq},
        "past": tuple({0: batch, 2: past_seq} for _ in example_past),
    }
    with torch.no_grad(), _quiet():
        torch.onnx.export(
            _flat(model, layers),
            example,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=dynamic,
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )


def export(model: Any, folder: Path, texts: list[str], tokenizer: Any) -> Export:
    """``model`` (a GPT-2 on the host, fp32) as ``folder/onnx/``; ``texts`` (the bot's
    tweets) decide whether the int8 graph keeps the text (module docstring)."""
    target = folder / "onnx"
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="huggingtweets-onnx-") as tmp:
        full = Path(tmp) / "model.onnx"
        graph(model, full)
        quantized = Path(tmp) / "model_quantized.onnx"
        _quantize(full, quantized)
        shape = Shape.of(model.config)
        agreement = next_token_agreement(full, quantized, texts, tokenizer, shape)
        chosen, dtype = (quantized, "q8") if agreement >= MIN_AGREEMENT else (full, "fp32")
        if dtype == "fp32":
            log.warning(
                "the int8 graph picks the fp32 one's next token on only %.0f%% of the bot's"
                " tweets' positions: the Space loads the fp32 graph", 100 * agreement,
            )  # fmt: skip
        for old in target.glob("*.onnx"):
            old.unlink()
        shutil.copyfile(chosen, target / chosen.name)
    return Export(f"onnx/{chosen.name}", dtype, (target / chosen.name).stat().st_size, agreement)


def export_host_bytes(params: int) -> int:
    """The host memory an export of a model of ``params`` parameters takes at its peak."""
    return EXPORT_FIXED_BYTES + params * EXPORT_BYTES_PER_PARAM


def export_saved(folder: Path, texts: list[str]) -> Export:
    """The model saved in ``folder`` (a bot's, or its merged copy), loaded on the host in
    fp32, as ``folder/onnx/`` (``export``)."""
    import gc

    import torch

    host, tokenizer = load(str(folder), device="cpu", dtype=torch.float32)
    made = export(host.eval(), folder, texts, tokenizer)
    del host
    gc.collect()
    return made


def export_apart(folder: Path, texts: list[str], seconds: float) -> Export:
    """``export_saved`` in a process of its own, for a bot whose rest runs behind the next
    bot's training (job/behind.py): the exporter is Python through and through (~20 s of
    tracing and rewriting for gpt2 on a CPU core), and in the training process's thread it
    would hold the interpreter's lock the training loop launches its kernels under. Its own
    process costs ~4 s of imports, on a core the training does not use. A failure comes back
    as the job's error of the same exit code; past ``seconds`` it is killed."""
    import os
    import subprocess
    import sys

    with tempfile.TemporaryDirectory(prefix="huggingtweets-texts-") as tmp:
        given = Path(tmp) / "texts.json"
        given.write_text(json.dumps(texts))
        try:
            done = subprocess.run(
                [sys.executable, "-m", "job.outputs.browser", str(folder), str(given),
                 str(os.getpid())],
                capture_output=True, text=True, timeout=seconds,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise TransientError(f"the Space's export took over {seconds:.0f} s") from None
    answer = done.stdout.strip().rpartition("\n")[2]
    try:
        said = json.loads(answer)
    except ValueError:
        said = {}
    if done.returncode == 0 and "file" in said:
        return Export(**said)
    if done.returncode < 0:  # killed: the kernel's OOM killer, most likely
        raise TransientError(f"the Space's export was killed (signal {-done.returncode})")
    error: JobError = of_code(done.returncode, said.get("error") or "the Space's export failed")
    raise error


def _apart(folder: str, texts: str, parent: str) -> int:
    """``python -m job.outputs.browser FOLDER TEXTS PARENT``: ``export_apart``'s process. Dies
    with its parent (a task stopped while it exports); answers one JSON line on stdout."""
    import ctypes
    import os
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: ends when its parent does
    if os.getppid() != int(parent):  # the parent was gone before that was set
        return 75
    try:
        made = export_saved(Path(folder), json.loads(Path(texts).read_text()))
    except Exception as e:
        error = classify(e)
        print(json.dumps({"error": str(error)}))
        return error.exit_code
    print(json.dumps(made.__dict__))
    return 0


def _quantize(source: Path, target: Path) -> None:
    """onnxruntime's dynamic int8: the matrices' weights as int8 with a scale each."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QUInt8)


@contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's and the quantizer's notes to their own authors (torchvision's ops it
    skips, axes it renames, "consider pre-processing" on the root logger), kept out of the
    job's log; their errors still raise."""
    import warnings

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return record.levelno >= logging.ERROR

    drop = _Drop()
    root = logging.getLogger()  # onnxruntime.quantization logs on the root logger itself
    # torch logs each skipped torchvision op on this logger (filters do not reach children)
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root.addFilter(drop)
        registration.setLevel(logging.ERROR)
        try:
            yield
        finally:
            root.removeFilter(drop)
            registration.setLevel(level)


def session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # its warnings about unused initializers are not ours
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass
class Shape:
    """What the graph's cache is made of: a GPT-2's layers, heads and head width."""

    layers: int
    heads: int
    head: int

    @classmethod
    def of(cls, config: Any) -> Shape:
        return cls(config.n_layer, config.n_head, config.n_embd // config.n_head)


def run_graph(sess: Any, ids: Any, past: list[Any] | None, shape: Shape) -> tuple[Any, list[Any]]:
    """One step of the graph: ``ids`` (1 x n) after ``past`` (None: the first step)."""
    layers, heads, head = shape.layers, shape.heads, shape.head
    import numpy as np

    done = 0 if past is None else past[0].shape[2]
    if past is None:
        past = [np.zeros((1, heads, 0, head), np.float32) for _ in range(2 * layers)]
    n = ids.shape[1]
    feed = {
        "input_ids": ids.astype(np.int64),
        "attention_mask": np.ones((1, done + n), np.int64),
        "position_ids": np.arange(done, done + n, dtype=np.int64)[None],
    }
    inputs, _ = names(layers)
    feed.update(dict(zip(inputs[3:], past, strict=True)))
    logits, *present = sess.run(None, feed)
    return logits, present


def next_token_agreement(
    full: Path, quantized: Path, texts: list[str], tokenizer: Any, shape: Shape
) -> float:
    """How often the int8 graph's most likely next token is the fp32 graph's, over the
    positions of ``texts`` (at most 32 of them, 64 tokens each)."""
    import numpy as np

    a, b = session(full), session(quantized)
    same = count = 0
    for text in texts[:32]:
        ids = np.array([tokenizer(text)["input_ids"][:64]], np.int64)
        if ids.shape[1] == 0:
            continue
        left, _ = run_graph(a, ids, None, shape)
        right, _ = run_graph(b, ids, None, shape)
        same += int((left.argmax(-1) == right.argmax(-1)).sum())
        count += ids.shape[1]
    return same / count if count else 1.0


def write_space(
    folder: Path,
    *,
    bot: str,
    repo: str | None,
    card_url: str,
    who: str,
    made: Export,
    sampling: dict[str, Any],
    model: str = "model",
    handles: list[Handle] | None = None,
) -> None:
    """``folder`` (``space/``) as a static Space: its README's front matter and its page. The
    page loads the model from the Hub repo ``repo``, or, without one, from ``../<model>/`` (the
    bot's own folder, served with the page: OUT/<bot>/space beside OUT/<bot>/model, or beside
    merged/ for an adapter bot)."""
    import yaml
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    folder.mkdir(parents=True, exist_ok=True)
    handles = handles or []
    megabytes = made.bytes / 1e6
    said = f"Text generated by a model trained on {who}'s posts: not their words."
    front = {
        "title": f"{bot} (huggingtweets)"[:60],
        # whose bot this is, as the model's card says it (a takedown's proof: cloud/consent.py)
        "huggingtweets": {"bot": bot, "handles": [h.key for h in handles]},
        "emoji": "🤖",
        "colorFrom": "blue",
        "colorTo": "gray",
        "sdk": "static",
        "app_file": "index.html",
        "pinned": False,
        **({"models": [repo]} if repo else {}),
        "short_description": "A GPT-2 bot's text, generated in your browser: not the person's"[:60],
        "tags": ["huggingtweets", "transformers.js"],
    }
    readme = (
        f"---\n{yaml.safe_dump(front, sort_keys=False, allow_unicode=True)}---\n\n"
        f"# {bot}\n\n{said}\n\nThe page runs the bot in your browser with transformers.js"
        f" {TRANSFORMERS_JS}: it downloads the model's ONNX graph ({made.dtype},"
        f" {megabytes:.1f} MB) from the Hub once and sends nothing anywhere. The model and its"
        f" card: {card_url}\n"
    )
    (folder / "README.md").write_text(readme, encoding="utf-8")
    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        undefined=StrictUndefined,
        autoescape=True,  # every value is text in HTML here
    )
    page = env.get_template("space.html.j2").render(
        bot=bot,
        said=said,
        card_url=card_url,
        settings=json.dumps(
            {
                "cdn": CDN,
                "local": repo is None,
                "root": "../",
                "model": repo or model,
                "dtype": made.dtype,
                "temperature": sampling["temperature"],
                "top_p": sampling["top_p"],
                "max_new_tokens": min(int(sampling["max_length"]), 200),
                "prompt": sampling["start_texts"][0],
            }
        ),
        megabytes=f"{megabytes:.1f}",
        version=TRANSFORMERS_JS,
    )
    (folder / "index.html").write_text(page, encoding="utf-8")


def for_hub(space: Path, target: Path, repo: str, card_url: str) -> None:
    """The Space's files in ``space`` (written for the bot's own folder) as the Hub serves
    them, in ``target``: the page loads the model from the Hub repo ``repo`` and links its card
    at ``card_url``; the README names ``repo`` as its model."""
    import html
    import re

    import yaml

    target.mkdir(parents=True, exist_ok=True)
    page = (space / "index.html").read_text(encoding="utf-8")
    found = re.search(r'data-settings="([^"]*)"', page)
    if found is None:
        raise ValueError(f"{space}/index.html is not a page this job wrote")
    settings = json.loads(html.unescape(found.group(1)))
    local_card = f"../{settings['model']}/README.md"
    settings.update(local=False, model=repo)
    page = page.replace(found.group(0), f'data-settings="{html.escape(json.dumps(settings))}"')
    page = page.replace(f'href="{html.escape(local_card)}"', f'href="{html.escape(card_url)}"')
    (target / "index.html").write_text(page, encoding="utf-8")
    text = (space / "README.md").read_text(encoding="utf-8")
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    meta["models"] = [repo]
    body = body.replace(
        f"The model and its card: {local_card}", f"The model and its card: {card_url}"
    )
    dumped = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    (target / "README.md").write_text(f"---\n{dumped}---\n{body}", encoding="utf-8")


if __name__ == "__main__":
    import sys

    sys.exit(_apart(*sys.argv[1:4]))
