# Every target runs inside .venv (made by `make install`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A CPU build of torch lies on this machine's disk; a looser pin pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
DEEPSPEED_SPEC ?= deepspeed==0.19.8

.PHONY: install test test-fast lint docs demo bench clean image push submit

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

# The unit tier: every test not marked integration, in-process, in seconds.
test-fast: install
	$(BIN)/pytest -q -m "not integration"

# docs/options.md is generated from job/config.py (tests/test_config.py checks it is current).
docs: install
	$(BIN)/python -m job.config > docs/options.md

lint: install
	$(BIN)/ruff check job tests bench
	$(BIN)/ruff format --check job tests bench
	$(BIN)/mypy

# Time-to-bot and training throughput against the original recipe, in one run (see bench/).
BENCH_FLAGS ?= --archive ../shared/data/archives/andreruffert --handle andreruffert
bench: install
	$(BIN)/python bench/bench.py $(BENCH_FLAGS)

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache bench-out

# The README's first command: the whole job on embedded defaults (local folder, W&B offline,
# no Hub push) and our own sample data, on a tiny GPT-2 built locally. A randomly initialised
# model needs a far higher learning rate and more epochs than fine-tuning a pretrained one.
demo: install
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/huggingtweets run sourdough_sam \
		--jsonl job/samples/sourdough_sam.jsonl --base-model tiny \
		--learning-rate 3e-3 --epochs 30 --out out

# --- Shipping ------------------------------------------------------------------------------
IMAGE ?= huggingtweets
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
REVISION := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# docker by default; CONTAINER=podman works too (podman can build here, not run)
CONTAINER ?= docker

image:
	$(CONTAINER) build -f docker/Dockerfile --build-arg VERSION=$(VERSION) \
		--build-arg REVISION=$(REVISION) -t $(IMAGE):$(VERSION) -t $(IMAGE):latest .

push: image
	@test -n "$(REGISTRY)" || { echo "make push needs REGISTRY=..." >&2; exit 2; }
	$(CONTAINER) tag $(IMAGE):$(VERSION) $(REGISTRY)/$(IMAGE):$(VERSION)
	$(CONTAINER) push $(REGISTRY)/$(IMAGE):$(VERSION)

# make inherits USER from the login environment: only a USER given on the command line counts.
BASE_MODEL ?= gpt2
TARGET ?= batch
submit: install
	@if [ "$(origin USER)" != "command line" ]; then \
		echo "make submit needs the Twitter handle on the command line: make submit USER=__wmww" \
			"(USER=$(USER) here comes from your login environment)" >&2; exit 2; fi
	$(BIN)/huggingtweets submit $(USER) --base-model $(BASE_MODEL) --target $(TARGET) $(SUBMIT_FLAGS)
