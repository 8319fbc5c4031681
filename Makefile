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
	@# Byte-compiled on both cores after the install rather than one file at a time during it
	@# (77 s -> 57 s on a 2-core AMD EPYC). As pip does, a file that does not compile (torch
	@# ships Python 3.12-only test helpers) is left alone: it fails only if imported.
	$(PY) -m pip install -q --no-compile -r requirements.txt
	$(PY) -m compileall -q -j 0 .venv/lib >/dev/null 2>&1 || true
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
	$(PY) -m pytest -q -n auto --dist loadfile --no-loadscope-reorder -m "not slow"

# --durations: the ten slowest tests close the log, so a slow suite shows where its time went.
# -n auto --dist loadfile: one worker per core, each test file on one worker (its module-scoped
# fixtures built once), in the order tests/conftest.py collects them (the files that run whole
# pipelines first) rather than xdist's own (the files with the most tests first).
test: $(SETUP)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest -q -n auto --dist loadfile --no-loadscope-reorder --durations=10

.PHONY: setup repro full test test-fast
