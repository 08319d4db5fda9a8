"""The original HuggingTweets recipe, as the benchmark's baseline.

The recipe of borisdayma/huggingtweets, ``huggingtweets-demo.ipynb`` (commit 0025539), on
today's libraries. Each choice below is the notebook's, and the comment names its code:

- ``EPOCHS = 4``, ``LEARNING_RATE = 1.372e-4`` (the set-up cell's hyper-parameters).
- The training file: ``'<|endoftext|>'`` then, ``for _ in range(EPOCHS)``, the tweets
  reshuffled (``dataRandom.shuffle(cool_tweets)``) and joined by ``'<|endoftext|>'`` with one
  after the last (``dl_tweets()``): four shuffled copies in one file.
- ``TextDataset(..., block_size=tokenizer.model_max_length)``: the whole text tokenized at
  once and cut into blocks of the model's full context (1,024 for GPT-2), the rest dropped.
- ``TrainingArguments(num_train_epochs=1, per_device_train_batch_size=1, learning_rate=...)``:
  one epoch over that file, batch 1, fp32 (no ``fp16``), the Trainer's AdamW defaults.
- ``get_cosine_schedule_with_warmup(num_warmup_steps=0, ...)`` replaces the linear schedule:
  the Trainer's ``lr_scheduler_type="cosine"`` with no warm-up builds that same schedule.
- Predictions: per prompt, one ``model.generate(max_length=160, min_length=10, temperature=1.,
  top_p=0.95, do_sample=True, num_return_sequences=10)`` (``predict()``); here
  ``--per-prompt`` sequences, the job's count, so both sides sample the same number.
- ``trainer.save_model``.

Not kept from the notebook: W&B and Hub calls (the job's bench runs have them off too), and
``TextDataset`` itself (removed from transformers; its cutting is re-done here as it was).
The notebook held nothing out; the bench gives this script only the training tweets and
evaluates both sides' final models itself on the same held-out tweets (bench.py). Run by
bench.py in its own process, so its time-to-bot includes start-up like the job's does.

    python bench/baseline.py --tweets train.jsonl --base-model FOLDER --out DIR
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import common  # noqa: F401 (the checkout on sys.path: job.training.clock)

START = time.perf_counter()


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tweets", type=Path, required=True, help="JSONL of training tweets")
    parser.add_argument("--base-model", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=4, help="shuffled copies (EPOCHS)")
    parser.add_argument("--learning-rate", type=float, default=1.372e-4)
    parser.add_argument("--per-prompt", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    return parser.parse_args()


def load(args: argparse.Namespace) -> tuple[Any, Any]:
    """The tokenizer and the model, as the notebook loaded them (the imports count: the
    caller's clock runs over them)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.base_model)
    model = AutoModelForCausalLM.from_pretrained(args.base_model)  # fp32, eager defaults
    return tokenizer, model


def blocks_of(args: argparse.Namespace, tokenizer: Any, model: Any) -> tuple[list, int]:
    """EPOCHS shuffled copies of the tweets joined by EOS, cut into full-context blocks."""
    import torch

    tweets = [json.loads(line)["text"] for line in args.tweets.open()]
    eos = tokenizer.eos_token
    shuffler = random.Random(args.seed)
    total_text = eos
    for _ in range(args.epochs):
        shuffler.shuffle(tweets)
        total_text += eos.join(tweets) + eos
    ids = tokenizer(total_text, add_special_tokens=False)["input_ids"]
    # tokenizer.model_max_length for GPT-2 (1,024); a model with a shorter context (tiny) is
    # cut at its own.
    block = min(tokenizer.model_max_length, model.config.n_positions)
    blocks = [ids[i : i + block] for i in range(0, len(ids) - block + 1, block)]
    # DataCollatorForLanguageModeling(mlm=False) of 2020 gave labels = input_ids for GPT-2 (no
    # pad token, so nothing masked); today's asks for a pad token, so the labels are set here.
    return [{"input_ids": torch.tensor(b), "labels": torch.tensor(b)} for b in blocks], block


def trainer_of(args: argparse.Namespace, model: Any, dataset: list) -> tuple[Any, Any]:
    """The notebook's Trainer: one block a step, one pass over the copies, cosine, no warm-up."""
    import torch
    from transformers import Trainer, TrainingArguments

    from job.training.clock import SteadyClock, counted

    clock = SteadyClock()  # counts each batch as the job's does (one block a step here)
    trainer = counted(Trainer, clock)(
        model=model,
        args=TrainingArguments(
            output_dir=str(args.out / "trainer"),
            num_train_epochs=1,
            learning_rate=args.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=0,
            per_device_train_batch_size=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),
            logging_steps=5,
            seed=args.seed,
        ),
        train_dataset=dataset,
        callbacks=[clock],
    )
    return trainer, clock


def predict(args: argparse.Namespace, tokenizer: Any, model: Any) -> list[str]:
    """The notebook's predictions: one batched generate per prompt."""
    prompts = ["My dream is", "I think that", "I wish", "The best thing about", "Today I"]
    eos = tokenizer.eos_token
    model.eval()
    predictions = []
    for prompt in prompts:
        encoded = tokenizer(eos + prompt, add_special_tokens=False, return_tensors="pt")
        out = model.generate(
            input_ids=encoded.input_ids.to(model.device),
            attention_mask=encoded.attention_mask.to(model.device),
            max_length=min(160, model.config.n_positions),
            min_length=10,
            temperature=1.0,
            top_p=0.95,
            do_sample=True,
            num_return_sequences=args.per_prompt,
            pad_token_id=tokenizer.eos_token_id,
        )
        for sequence in out:
            text = tokenizer.decode(sequence, skip_special_tokens=True)
            predictions.append(text.split("\n")[0].strip())
    return predictions


def main() -> None:
    args = arguments()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    import torch

    tokenizer, model = load(args)
    timings["load"] = time.perf_counter() - t
    t = time.perf_counter()
    dataset, block = blocks_of(args, tokenizer, model)
    timings["tokenize"] = time.perf_counter() - t
    trainer, clock = trainer_of(args, model, dataset)
    t = time.perf_counter()
    trainer.train()
    train_seconds = timings["train"] = time.perf_counter() - t
    t = time.perf_counter()
    predictions = predict(args, tokenizer, model)
    timings["predict"] = time.perf_counter() - t
    t = time.perf_counter()
    trainer.save_model(str(args.out / "model"))
    tokenizer.save_pretrained(str(args.out / "model"))
    timings["save"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - START
    tokens = len(dataset) * block
    result = {
        "timings": timings,
        "model_dir": str(args.out / "model"),
        "base_model": args.base_model,
        "block_size": block,
        "steps": len(dataset),
        "train_tokens": tokens,
        "train_seconds": train_seconds,
        "tokens_per_second": tokens / train_seconds,
        "steady_tokens_per_second": clock.tokens_per_second,
        "steady_steps": clock.steps,
        "predictions": predictions,
        "peak_memory_bytes": int(torch.cuda.max_memory_allocated())
        if torch.cuda.is_available()
        else 0,
    }
    (args.out / "baseline.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
