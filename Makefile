# CF-DAN companion: set-up, notebooks, book, tests.
#   make book   -> .venv + MathJax + re-executed notebooks + HTML book in book/_build/html
#   make test   -> .venv + MathJax + pytest --nbval over tests/ and notebooks/
# Every tool is called through .venv/bin explicitly; nothing is installed outside .venv,
# node_modules/ and book/_extra/ (all three are git-ignored).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Torch comes first and pinned, so pip takes the wheels that lie on local disk.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.cfdan-installed
# html_extra_path (book/_extra) copies this to _build/html/_static/mathjax/. It must not live in
# book/_static: jupyter-book adds every .js found there as a <script> to every page.
MATHJAX_DIR := book/_extra/_static/mathjax
MATHJAX := $(MATHJAX_DIR)/tex-chtml.js
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
KERNEL := python3

.PHONY: help venv mathjax notebooks book test lint clean clean-all

help:
	@echo "make book       install (once), re-execute notebooks with papermill, build the book"
	@echo "make test       install (once), run pytest --nbval over tests/ and notebooks/"
	@echo "make venv       only install .venv (stamp: $(STAMP))"
	@echo "make mathjax    only fetch MathJax 3 (pinned in package.json) from npm for the offline book"
	@echo "make notebooks  re-execute every notebook in place (cwd notebooks/)"
	@echo "make lint       ruff check"
	@echo "make clean      remove build outputs (keeps .venv; 'make clean-all' removes it too)"

venv: $(STAMP)

# Re-runs only when pyproject.toml changes (or the stamp is deleted).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e ".[book,test]"
	@touch $@

mathjax: $(MATHJAX)

# MathJax 3 from the npm registry, copied into the book so no page needs a CDN.
# latest.js is left out: it exists only to fetch the newest MathJax from a CDN.
$(MATHJAX): package.json
	npm install --no-package-lock --no-audit --no-fund --loglevel=error
	rm -rf $(MATHJAX_DIR)
	mkdir -p $(dir $(MATHJAX_DIR))
	cp -r node_modules/mathjax/es5 $(MATHJAX_DIR)
	rm -f $(MATHJAX_DIR)/latest.js
	@touch $@

notebooks: $(STAMP)
	@for nb in $(NOTEBOOKS); do \
	  echo "papermill $$nb"; \
	  $(BIN)/papermill "$$nb" "$$nb" -k $(KERNEL) --cwd notebooks --no-progress-bar --log-level WARNING; \
	done

book: $(STAMP) $(MATHJAX) notebooks
	$(BIN)/jupyter-book build book/

test: $(STAMP) $(MATHJAX)
	$(BIN)/pytest --nbval

lint: $(STAMP)
	$(BIN)/ruff check $(wildcard cfdan tests benchmarks scripts book/_ext)

clean:
	rm -rf book/_build _build .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf

clean-all: clean
	rm -rf $(VENV) node_modules book/_extra
