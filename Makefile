.DEFAULT_GOAL := help
VENV := .venv/bin

.PHONY: help install demo test test-fast lint format bench bench-embedding bench-seq2seq bench-startup bench-text-lengths clean

help:  ## Show this help
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

install:  ## Install system packages and .venv (Debian/Ubuntu)
	bash scripts/install.sh

demo: install  ## Build, launch and query the embedded default model end to end
	$(VENV)/trb demo

test: install  ## Run the whole test suite (unit + integration against the real tritonserver)
	$(VENV)/python -m pytest

test-fast:  ## Unit tests only (no server)
	$(VENV)/python -m pytest -m "not integration and not slow"

lint:  ## ruff + mypy
	$(VENV)/ruff check model_repo_builder tests bench
	$(VENV)/ruff format --check model_repo_builder tests bench
	$(VENV)/mypy

format:  ## Apply ruff formatting and fixes
	$(VENV)/ruff format model_repo_builder tests bench
	$(VENV)/ruff check --fix model_repo_builder tests bench

bench: bench-embedding bench-seq2seq bench-startup bench-text-lengths  ## All benchmarks, one after another (results in bench/results/)

bench-embedding:  ## trb vs in-process ONNX Runtime, naive repo, sentence-transformers
	$(VENV)/python bench/bench_embedding.py

bench-seq2seq:  ## flan-t5-small architecture: trb vs HF generate (fp32, int8), naive repo
	$(VENV)/python bench/bench_seq2seq.py

bench-startup:  ## build and server-ready times, int8 layer exclusion
	$(VENV)/python bench/bench_startup.py

bench-text-lengths:  ## fixed vs mixed-length text: served vs in-process, with and without length buckets
	$(VENV)/python bench/bench_text_lengths.py

clean:  ## Remove generated repositories, runs and caches
	rm -rf repos runs bench/work .pytest_cache .mypy_cache .ruff_cache
