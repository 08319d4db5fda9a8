# Every target runs inside .venv (made by `make install`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A CPU build of torch lies on this machine's disk; a looser pin pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
DEEPSPEED_SPEC ?= deepspeed==0.19.8

.PHONY: install test lint demo clean

$(BIN)/huggingtweets: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	# DeepSpeed's setup.py imports torch: build it against the torch above, not an isolated
	# (CUDA) one. No ops are compiled at install; on CPU the job uses torch's Adam.
	$(BIN)/pip install -q --no-build-isolation "$(DEEPSPEED_SPEC)"
	$(BIN)/pip install -q -e ".[test,deepspeed]"
	touch $@

install: $(BIN)/huggingtweets

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check job tests
	$(BIN)/ruff format --check job tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache

# The README's first command: the whole job on embedded defaults (local folder, W&B offline,
# no Hub push) and our own sample data, on a tiny GPT-2 built locally. A randomly initialised
# model needs a far higher learning rate and more epochs than fine-tuning a pretrained one.
demo: install
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/huggingtweets run sourdough_sam \
		--jsonl job/samples/sourdough_sam.jsonl --base-model tiny \
		--learning-rate 3e-3 --epochs 30 --out out
