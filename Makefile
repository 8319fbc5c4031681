# Two commands set up and run everything on a fresh machine (see README):
#   make repro   - install, then regenerate the report with `dvc repro` (the committed profile,
#                  quick: real Fashion-MNIST, offline, on 2 CPU cores)
#   make test    - install, then lint, type-check (mypy) and run the test suite
# `make full` runs the CIFAR study (profile=full: the internet once, a GPU advised).
PY := .venv/bin/python
SETUP := .venv/.setup-done
# DVC runs each stage's `python -m stages.<name>` through the shell: use the venv's python.
export PATH := $(CURDIR)/.venv/bin:$(PATH)

$(SETUP): requirements.txt
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@# Real Fashion-MNIST for the quick profile and the end-to-end tests; Chromium for the
	@# test that renders `dvc plots show` in a browser. Both from Debian's packages.
	@if { [ ! -d /usr/share/datasets/fashion-mnist ] || ! command -v chromium >/dev/null; } \
		&& command -v apt-get >/dev/null; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist chromium) || \
		echo "note: could not install dataset-fashion-mnist/chromium; some tests will skip"; fi
	@[ -d .dvc ] || .venv/bin/dvc init -q
	touch $(SETUP)

setup: $(SETUP)

repro: $(SETUP)
	.venv/bin/dvc repro

full: $(SETUP)
	.venv/bin/dvc exp run -S profile=full

test-fast: $(SETUP)
	$(PY) -m pytest -q -m "not slow"

test: $(SETUP)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest -q

.PHONY: setup repro full test test-fast
