"""The original HuggingTweets recipe, as the benchmark's baseline.

What the seed did (and what `huggingtweets run` improves on): the same cleaned tweets, joined
with <|endoftext|> and cut into blocks (concatenation, no more), batch size 1, fp32, the HF
Trainer's defaults otherwise (linear schedule, eval through the Trainer), predictions sampled
one sequence at a time through `pipeline`, and a plain save. Run by bench.py in its own
process, so its time-to-bot includes start-up like the job's does.

    python bench/baseline.py --data DIR/<bot>/data --base-model FOLDER --out DIR
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

START = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True, help="a prepared data folder")
    parser.add_argument("--base-model", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=float, default=4.0)
    parser.add_argument("--learning-rate", type=float, default=1.372e-4)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--predictions", type=int, default=15)
    args = parser.parse_args()
    timings: dict[str, float] = {}

    t = time.perf_counter()
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        pipeline,
        set_seed,
    )

    set_seed(42)
    tokenizer = AutoTokenizer.from_pretrained(args.base_model)
    model = AutoModelForCausalLM.from_pretrained(args.base_model)  # fp32, eager defaults
    timings["load"] = time.perf_counter() - t

    t = time.perf_counter()
    texts = [json.loads(line)["text"] for line in (args.data / "clean.jsonl").open()]
    ids: list[int] = []
    for text in texts:  # one tokenizer call per tweet
        ids += tokenizer(tokenizer.eos_token + text)["input_ids"]
    block = min(args.block_size, model.config.n_positions)
    blocks = [ids[i : i + block] for i in range(0, len(ids) - block + 1, block)]
    split = max(1, len(blocks) // 10)
    val, train = blocks[:split], blocks[split:]
    dataset = [{"input_ids": torch.tensor(b), "labels": torch.tensor(b)} for b in train]
    eval_set = [{"input_ids": torch.tensor(b), "labels": torch.tensor(b)} for b in val]
    timings["tokenize"] = time.perf_counter() - t

    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(args.out / "trainer"),
            num_train_epochs=args.epochs,
            learning_rate=args.learning_rate,
            per_device_train_batch_size=1,
            per_device_eval_batch_size=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),
            logging_steps=10**9,
        ),
        train_dataset=dataset,
        eval_dataset=eval_set,
    )
    t = time.perf_counter()
    base_loss = trainer.evaluate()["eval_loss"]
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    val_loss = trainer.evaluate()["eval_loss"]
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    generator = pipeline(
        "text-generation",
        model=model,
        tokenizer=tokenizer,
        device=0 if torch.cuda.is_available() else -1,
    )
    prompts = ["My dream is", "I think that", "I wish", "The best thing about", "Today I"]
    predictions = []
    for i in range(args.predictions):  # one sequence at a time
        out = generator(
            tokenizer.eos_token + prompts[i % len(prompts)],
            do_sample=True,
            top_p=0.95,
            max_length=min(160, model.config.n_positions),
        )
        predictions.append(out[0]["generated_text"])
    timings["predict"] = time.perf_counter() - t

    t = time.perf_counter()
    trainer.save_model(str(args.out / "model"))
    tokenizer.save_pretrained(str(args.out / "model"))
    timings["save"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - START
    tokens = len(train) * block * args.epochs
    result = {
        "timings": timings,
        "train_tokens": int(tokens),
        "train_seconds": train_seconds,
        "tokens_per_second": tokens / train_seconds,
        "base_perplexity": math.exp(base_loss),
        "perplexity": math.exp(val_loss),
        "peak_memory_bytes": int(torch.cuda.max_memory_allocated())
        if torch.cuda.is_available()
        else 0,
    }
    (args.out / "baseline.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
