# Every target runs inside .venv (made by `make install`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# One lock for every install: the exact versions the tests pass with, which the image ships
# too (docker/Dockerfile installs with the same file). Made by uv from pyproject.toml (make
# lock). torch's version comes from it; which build (CPU or CUDA) comes from where pip looks,
# TORCH_PIP_ARGS, the same build arg in docker/Dockerfile. Here it is empty: this machine's
# pip finds the CPU build on disk first. In the image it is empty too: PyPI's Linux wheels are
# CUDA builds. Elsewhere, for the CPU: --index-url https://download.pytorch.org/whl/cpu.
CONSTRAINTS := requirements/constraints.txt
TORCH_PIP_ARGS ?=

.PHONY: fonts browser install test test-fast lint format docs demo bench gpu-kit clean image image-test image-standin push submit lock

$(BIN)/huggingtweets: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c $(CONSTRAINTS) $(TORCH_PIP_ARGS) torch
	# DeepSpeed's setup.py imports torch: build it against the torch above, not an isolated
	# (CUDA) one. No ops are compiled at install; on CPU the job uses torch's Adam.
	$(BIN)/pip install -q -c $(CONSTRAINTS) --no-build-isolation deepspeed
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e ".[test,deepspeed]"
	touch $@

# Re-resolve the lock after changing pyproject.toml's dependencies (needs uv: pip install uv).
# The current lock's pins are kept where they still fit; --upgrade-package NAME moves one.
lock:
	uv pip compile pyproject.toml --extra test --extra deepspeed --universal \
		--python-version 3.10 --python $(BIN)/python --no-build-isolation-package deepspeed \
		-o $(CONSTRAINTS) $(LOCK_FLAGS)

install: $(BIN)/huggingtweets fonts browser

# The Space's page in a real browser (tests/outputs/test_browser.py): transformers.js from npm
# (the version job/outputs/browser.py pins; its onnxruntime-node install script downloads from
# the internet and is not needed in a browser: --ignore-scripts) into build/npm, and Debian's
# Chromium where apt can. Elsewhere one line says so, and `make test` fails on its test.
TRANSFORMERS_JS := 4.3.2
NPM_DIR := build/npm
browser:
	@if [ -f $(NPM_DIR)/node_modules/@huggingface/transformers/package.json ] && \
	  grep -q '"version": "$(TRANSFORMERS_JS)"' $(NPM_DIR)/node_modules/@huggingface/transformers/package.json; then :; \
	elif command -v npm >/dev/null; then \
	  mkdir -p $(NPM_DIR) && npm install --silent --prefix $(NPM_DIR) --ignore-scripts --no-audit --no-fund \
	    @huggingface/transformers@$(TRANSFORMERS_JS) >/dev/null \
	    || echo "warning: npm could not install transformers.js: the browser test cannot run here"; \
	else echo "warning: npm not found: the browser test (transformers.js) cannot run here"; fi
	@if ! command -v chromium >/dev/null; then \
	  sudo=""; if [ "$$(id -u)" != 0 ]; then sudo="sudo -n"; fi; \
	  if command -v apt-get >/dev/null && $$sudo true 2>/dev/null; then \
	    echo "installing chromium"; \
	    $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium >/dev/null; \
	  else echo "warning: chromium not installed: the browser test cannot run here"; fi; \
	fi

# The card picture's fonts (job/outputs/fonts.py): Debian's and Ubuntu's packages, the same the
# image installs. Installed where apt can (as root, or with sudo); elsewhere one line says so,
# and the picture draws the characters it has no font for as boxes.
FONT_PACKAGES := fonts-noto-core fonts-noto-cjk fonts-noto-color-emoji libfribidi0
fonts:
	@missing=""; for p in $(FONT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	sudo=""; if [ "$$(id -u)" != 0 ]; then sudo="sudo -n"; fi; \
	if command -v apt-get >/dev/null && $$sudo true 2>/dev/null; then \
	  echo "installing fonts:$$missing"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq \
	    --no-install-recommends $$missing >/dev/null; \
	else \
	  echo "warning: fonts not installed ($$missing): predictions.png will draw boxes for non-ASCII text"; \
	fi

# Both tiers run on every core, at most 4 workers (each starts its own moto, ~200 MB, and
# torch's threads share the cores): 2 on a 2-core machine. A worker that runs out of tests
# takes some of the other's (worksteal: the tests last from milliseconds to a minute). The
# image's build is its own step.
WORKERS := -n auto --maxprocesses 4 --dist worksteal
# pytest rewrites every test module's asserts on import, and Python compiles the package: with
# PYTHONDONTWRITEBYTECODE set (some machines set it), each worker does both on every run, ~2 s
# of the fast tier's. The tests write their bytecode (__pycache__/, ignored by git).
PYTEST := PYTHONDONTWRITEBYTECODE= $(BIN)/pytest
# The browser test runs in every `make test`, never skipped (make install put its Chromium and
# transformers.js in place; a bare pytest without them skips it and says why).
test: install
	HUGGINGTWEETS_REQUIRE_BROWSER=1 $(PYTEST) -q $(WORKERS) -m "not image"

# The unit tier: every test not marked integration, in-process, in seconds.
test-fast: install
	$(PYTEST) -q $(WORKERS) -m "not integration"

# docs/options.md is generated from job/config.py's fields by job/options_page.py (tests/test_config.py checks it is current).
docs: install
	$(BIN)/python -m job.options_page > docs/options.md

lint: install
	$(BIN)/ruff check job tests bench
	$(BIN)/ruff format --check job tests bench
	$(BIN)/mypy

# What lint checks, put right where a tool can: the format, and ruff's safe fixes.
format: install
	$(BIN)/ruff check --fix job tests bench
	$(BIN)/ruff format job tests bench

# Time-to-bot and training throughput against the original recipe, in one run (see bench/).
BENCH_FLAGS ?= --archive ../shared/data/archives/andreruffert --handle andreruffert
bench: install
	$(BIN)/python bench/bench.py $(BENCH_FLAGS)

# What a device session needs, built here (no hand steps there): GPT-2's tokenizer, a real
# archive and the wheels the device's image lacks, into the ignored .gpu/ and .whl/; it prints
# the device call (docs/benchmarks.md, "The device scripts").
gpu-kit: install
	PY=$(BIN)/python bash bench/gpu_kit.sh

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache bench-out .gpu .whl

# The README's first command: the whole job on embedded defaults (local folder, W&B offline,
# no Hub push) and our own sample data, on a tiny GPT-2 built locally. A randomly initialised
# model needs a far higher learning rate and more epochs than fine-tuning a pretrained one.
demo: install
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/huggingtweets run sourdough_sam \
		--jsonl job/samples/sourdough_sam.jsonl --base-model tiny \
		--learning-rate 3e-3 --epochs 30 --out out
	@echo "hear it: $(BIN)/huggingtweets generate out/sourdough_sam"

# --- Shipping ------------------------------------------------------------------------------
IMAGE ?= huggingtweets
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' job/__init__.py)
REVISION := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# docker by default; CONTAINER=podman works too (podman can build here, not run)
CONTAINER ?= docker

image:
	$(CONTAINER) build -f docker/Dockerfile --build-arg VERSION=$(VERSION) \
		--build-arg REVISION=$(REVISION) -t $(IMAGE):$(VERSION) -t $(IMAGE):latest .

# The image's build, checked here without a GPU or a Docker engine: the same Dockerfile on a
# stand-in base (docker/standin.sh: Debian made by debootstrap) with the CPU torch from this
# machine's disk and DeepSpeed's CPU ops, then docker/Dockerfile.test runs, as uid 1000 inside
# a build of the image, `huggingtweets --help` and the tiny job. Only the bases differ from
# `make image`; docs/deploy.md says what this proves and what it does not.
STANDIN ?= localhost/huggingtweets-standin:bookworm
TORCH_WHEELS ?= /opt/wheels
image-test: install
	REQUIRE_IMAGE_TEST=1 $(BIN)/pytest -q -m image

# What tests/test_image.py runs and checks the output of (`make image-test` runs the test).
image-standin:
	bash docker/standin.sh $(STANDIN)
	podman build --isolation=chroot --network=host --format docker --volume $(TORCH_WHEELS):/torch-wheels:ro \
		-f docker/Dockerfile --build-arg BUILD_BASE=$(STANDIN) --build-arg RUNTIME_BASE=$(STANDIN) \
		--build-arg DS_ACCELERATOR=cpu --build-arg TORCH_PIP_ARGS=--find-links=/torch-wheels \
		--build-arg VERSION=$(VERSION) -t localhost/huggingtweets:standin .
	podman build --isolation=chroot --network=host --format docker --no-cache -f docker/Dockerfile.test \
		--build-arg IMAGE=localhost/huggingtweets:standin -t localhost/huggingtweets:standin-tested .
	podman image inspect localhost/huggingtweets:standin --format '{{.Size}}' \
		| awk '{printf "stand-in image: %.2f GB\n", $$1 / 1e9}'

push: image
	@test -n "$(REGISTRY)" || { echo "make push needs REGISTRY=..." >&2; exit 2; }
	$(CONTAINER) tag $(IMAGE):$(VERSION) $(REGISTRY)/$(IMAGE):$(VERSION)
	$(CONTAINER) push $(REGISTRY)/$(IMAGE):$(VERSION)

# make inherits USER from the login environment: only a USER given on the command line counts.
BASE_MODEL ?= gpt2
TARGET ?= batch
# Where people ask for a bot's removal (an e-mail or a URL): every card names it, and a public
# push is refused without one. CONTACT=... here, or HUGGINGTWEETS_CONTACT in the environment.
CONTACT ?=
submit: install
	@if [ "$(origin USER)" != "command line" ]; then \
		echo "make submit needs the Twitter handle on the command line: make submit USER=__wmww" \
			"(USER=$(USER) here comes from your login environment)" >&2; exit 2; fi
	@$(BIN)/huggingtweets submit $(USER) --base-model $(BASE_MODEL) --target $(TARGET) $(if $(CONTACT),--contact "$(CONTACT)") $(SUBMIT_FLAGS) \
		|| { code=$$?; echo "huggingtweets submit exited $$code (docs/exit-codes.md); make itself can only exit 2: a script that reads the code runs $(BIN)/huggingtweets submit" >&2; exit $$code; }
