# CF-DAN companion: set-up, notebooks, book, tests.
#   make book   -> .venv + MathJax + the Try-it page's files + re-executed notebooks + HTML book
#                  in book/_build/html
#   make test   -> .venv + MathJax + the Try-it page's files + pytest --nbval over tests/ and
#                  notebooks/
#   make publish [PUSH=1] -> the built book (book/_build/html) onto the gh-pages branch
#   make lock   -> constraints.txt: the exact versions in .venv (make venv installs with it)
# Every tool is called through .venv/bin explicitly; nothing is installed outside .venv,
# node_modules/ and book/_extra/ (git-ignored, but for the Try-it page's own script,
# book/_extra/_static/demo/try.js).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Torch comes first and pinned, so pip takes the wheels that lie on local disk.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.cfdan-installed
# Exact versions of everything in .venv (pip freeze; `make lock` rewrites it). Every install goes
# through it, so a new release of pandas or matplotlib cannot change what the stored outputs show.
# pyproject.toml keeps its ranges for those who install the package alone.
LOCK := constraints.txt
LOCK_ARG := $(if $(wildcard $(LOCK)),-c $(LOCK))
# html_extra_path (book/_extra) copies this to _build/html/_static/mathjax/. It must not live in
# book/_static: jupyter-book adds every .js found there as a <script> to every page.
MATHJAX_DIR := book/_extra/_static/mathjax
MATHJAX := $(MATHJAX_DIR)/tex-chtml.js
# npm installs package.json's pinned versions into node_modules once per change of the file.
NPM_STAMP := node_modules/.cfdan-installed
# ONNX Runtime Web for the book's Try-it page (book/try.md), copied like MathJax and for the same
# reason under book/_extra: only try.md loads it (its script adds it when a photo arrives). Only
# the WebAssembly build: its loader, the .mjs it imports and the .wasm (about 15 MB).
ORT_DIR := book/_extra/_static/ort
ORT_FILES := ort.wasm.min.js ort.wasm.min.js.map ort-wasm-simd-threaded.mjs \
             ort-wasm-simd-threaded.wasm
ORT := $(ORT_DIR)/ort.wasm.min.js
# The Try-it page's nets: the shipped model and MTCNN's P-, R- and O-Net as ONNX, and meta.json
# (python -m cfdan export --web). try.js beside them is source, kept in git.
DEMO_DIR := book/_extra/_static/demo
DEMO := $(DEMO_DIR)/meta.json
DEMO_FILES := cfdan.onnx pnet.onnx rnet.onnx onet.onnx meta.json
MODEL := models/cfdan_cpu_ferplus.pt
# Chapters (01_...) first, then the appendix notebooks (A1_...), each re-executed in that order.
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb)) $(sort $(wildcard notebooks/A[0-9]*.ipynb))
KERNEL := python3

# make publish: ghp-import commits HTML (with .nojekyll) to PAGES_BRANCH of this repository;
# only PUSH=1 pushes it to REMOTE. GHP_IMPORT may name another ghp-import (the tests do).
HTML ?= book/_build/html
PAGES_BRANCH ?= gh-pages
REMOTE ?= origin
PUSH ?=
GHP_IMPORT ?= $(BIN)/ghp-import
PUBLISH_MESSAGE ?= Book built from $(shell git describe --always --dirty 2>/dev/null || echo "an unknown commit")

.PHONY: help venv lock mathjax ort demo notebooks book publish test lint clean clean-all

help:
	@echo "make book       install (once), re-execute notebooks with papermill, build the book"
	@echo "make test       install (once), run pytest --nbval over tests/ and notebooks/"
	@echo "make venv       only install .venv, versions from $(LOCK) (stamp: $(STAMP))"
	@echo "make lock       rewrite $(LOCK) from what .venv holds now (pip freeze)"
	@echo "make mathjax    only fetch MathJax 3 (pinned in package.json) from npm for the offline book"
	@echo "make ort        only fetch ONNX Runtime Web (pinned in package.json) for the Try-it page"
	@echo "make demo       only export the Try-it page's nets to $(DEMO_DIR) (python -m cfdan export --web)"
	@echo "make notebooks  re-execute every notebook in place (cwd notebooks/)"
	@echo "make publish    commit the built book ($(HTML)) to the $(PAGES_BRANCH) branch; PUSH=1 also pushes"
	@echo "make lint       ruff check"
	@echo "make clean      remove build outputs (keeps .venv; 'make clean-all' removes it too)"

venv: $(STAMP)

# Re-runs only when pyproject.toml or the lock changes (or the stamp is deleted).
$(STAMP): pyproject.toml $(wildcard $(LOCK))
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(LOCK_ARG) $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet $(LOCK_ARG) -e ".[book,test]"
	@touch $@

# The lock is what .venv holds: to move a version, pip install it into .venv, run the tests,
# then `make lock`. The package itself (editable) and pip are left out; setuptools and wheel,
# which some dependencies need at run time, stay in.
lock: $(STAMP)
	@{ echo "# Exact versions that made the stored outputs: pip freeze of .venv (Python $$($(BIN)/python -c 'import platform; print(platform.python_version())'))."; \
	   echo "# Written by \`make lock\`; \`make venv\` installs with -c $(LOCK). Do not edit by hand."; \
	   $(BIN)/python -m pip freeze --all --exclude-editable | grep -viE '^(cfdan|pip)( *==| @)' | LC_ALL=C sort -f; \
	 } > $(LOCK).tmp
	@mv $(LOCK).tmp $(LOCK)
	@echo "wrote $(LOCK): $$(grep -c '==' $(LOCK)) pinned packages"

mathjax: $(MATHJAX)

$(NPM_STAMP): package.json
	npm install --no-package-lock --no-audit --no-fund --loglevel=error
	@touch $@

# MathJax 3 from the npm registry, copied into the book so no page needs a CDN.
# latest.js is left out: it exists only to fetch the newest MathJax from a CDN.
$(MATHJAX): $(NPM_STAMP)
	rm -rf $(MATHJAX_DIR)
	mkdir -p $(dir $(MATHJAX_DIR))
	cp -r node_modules/mathjax/es5 $(MATHJAX_DIR)
	rm -f $(MATHJAX_DIR)/latest.js
	@touch $@

ort: $(ORT)

# ONNX Runtime Web from the npm registry, copied into the book as MathJax is (above).
$(ORT): $(NPM_STAMP)
	rm -rf $(ORT_DIR)
	mkdir -p $(ORT_DIR)
	cp $(addprefix node_modules/onnxruntime-web/dist/,$(ORT_FILES)) $(ORT_DIR)/
	@touch $@

demo: $(DEMO)

# Written again when the model, its code or the export changes (about 40 s on a CPU).
$(DEMO): $(STAMP) $(MODEL) cfdan/onnx_export.py $(wildcard cfdan/model/*.py)
	$(BIN)/python -m cfdan export --web $(DEMO_DIR)

notebooks: $(STAMP)
	@for nb in $(NOTEBOOKS); do \
	  echo "papermill $$nb"; \
	  $(BIN)/papermill "$$nb" "$$nb" -k $(KERNEL) --cwd notebooks --no-progress-bar --log-level WARNING; \
	done

book: $(STAMP) $(MATHJAX) $(ORT) $(DEMO) notebooks
	$(BIN)/jupyter-book build book/

# Publishes what is built (stored notebook outputs; nothing is re-executed). Without PUSH=1 it
# only writes the local branch; PUSH=1 force-pushes it (ghp-import -p -f), as Jupyter Book's
# guide does. The venv's ghp-import needs the install; one named with GHP_IMPORT= does not.
publish: $(if $(filter $(BIN)/ghp-import,$(GHP_IMPORT)),$(STAMP))
	@test -f "$(HTML)/index.html" || { echo "no $(HTML)/index.html: build the book first (make book, or jupyter-book build book/)" >&2; exit 1; }
	$(GHP_IMPORT) -n -b $(PAGES_BRANCH) -m "$(PUBLISH_MESSAGE)" $(if $(filter 1 yes true,$(PUSH)),-p -f -r $(REMOTE)) "$(HTML)"
	@echo "$(HTML) is on branch $(PAGES_BRANCH)$(if $(filter 1 yes true,$(PUSH)), and pushed to $(REMOTE),; not pushed (make publish PUSH=1 pushes it))"

test: $(STAMP) $(MATHJAX) $(ORT) $(DEMO)
	$(BIN)/pytest --nbval

lint: $(STAMP)
	$(BIN)/ruff check $(wildcard cfdan tests benchmarks scripts book/_ext)

clean:
	rm -rf book/_build _build .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf

clean-all: clean
	rm -rf $(VENV) node_modules $(MATHJAX_DIR) $(ORT_DIR)
	rm -f $(addprefix $(DEMO_DIR)/,$(DEMO_FILES))
