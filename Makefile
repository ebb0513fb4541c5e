# `make demo` and `make test` each create .venv when missing, install, and run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# A CPU build of torch first (the test extra's cross-checks against HF/PEFT need it);
	# an open range would pull a multi-GB CUDA build.
	$(BIN)/pip install -q '$(TORCH_SPEC)'
	$(BIN)/pip install -q -e '.[data,test]'
	touch $(STAMP)

install: $(STAMP)

DEMO_DIR ?= demo_out
DEMO_ARGS ?=
DEMO_EXPERIMENTS ?= ppt,projection-tt

# SPoT end to end on the task world (backbone cached under ~/.cache/spot_jax or
# $SPOT_JAX_CACHE), with PPT and task-loss small->large projection; DEMO_EXPERIMENTS= for SPoT
# alone, DEMO_ARGS=--quick for fewer steps and seeds (about 3 minutes with DEMO_EXPERIMENTS=).
demo: $(STAMP)
	$(BIN)/spot-jax demo --out $(DEMO_DIR) $(if $(DEMO_EXPERIMENTS),--experiments $(DEMO_EXPERIMENTS)) $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff format --check spot_jax tools tests
	$(BIN)/ruff check spot_jax tools tests

test: $(STAMP) lint
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) demo_out
