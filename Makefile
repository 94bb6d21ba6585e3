# The two commands of the quick start: `make run` and `make test`. Each sets up what it needs:
# `make run` the runtime dependencies only, `make test` (and lint, bench) the `dev` extra too.
# Both install the client distribution (schemas/: approvals-client) and the server editable, in
# one pip call so that pip takes approvals-client from here, not from an index.
PYTHON    ?= python3
VENV      := .venv
BIN       := $(VENV)/bin
PROJECTS  := pyproject.toml schemas/pyproject.toml
HASH      := $(shell cat $(PROJECTS) | cksum | cut -d' ' -f1)
STAMP     := $(VENV)/.installed-$(HASH)
RUN_STAMP := $(VENV)/.runtime-$(HASH)

.PHONY: run test lint docs bench setup browser typing-root

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# What running needs.
$(RUN_STAMP): $(PROJECTS) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --editable ./schemas --editable .
	rm -f $(VENV)/.runtime-*
	touch $@

# What testing needs (which includes what running needs).
$(STAMP): $(PROJECTS) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --editable ./schemas --editable '.[dev]'
	rm -f $(VENV)/.installed-* $(VENV)/.runtime-*
	touch $@ $(RUN_STAMP)

# mypy cannot follow an editable install's import hook: it reads the folders by their installed
# names (approvals.services, ...) through these links.
typing-root:
	@mkdir -p .typing/approvals
	@for top in services schemas projections; do ln -sfn ../../$$top .typing/approvals/$$top; done
	@ln -sfn ../../schemas/client .typing/approvals/client

## run: the service on its embedded default (nats-server + SQLite under ./var); Ctrl-C stops it
## (DEV_FLAGS passes options on, e.g. DEV_FLAGS="--data-dir /tmp/x --nats-port 4334")
run: $(RUN_STAMP)
	$(BIN)/approvals dev $(DEV_FLAGS)

## browser: Debian's chromium for the browser tests (Playwright drives it; it downloads nothing)
browser:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

## test: every test (PostgreSQL ones need APPROVALS_TEST_POSTGRES_DSN)
test: $(STAMP) browser
	$(BIN)/pytest

## lint: ruff and mypy, and the documentation site, as CI runs them
lint: $(STAMP) typing-root docs
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## docs: build the documentation site (docs/, mkdocs.yml) into ./site; a broken link fails it.
## It builds offline. `$(BIN)/mkdocs serve` shows it while you write.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

## bench: the end-to-end request benchmark, the status projection benchmark, the audit benchmark
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_requests.py
	$(BIN)/python benchmarks/bench_projection.py
	$(BIN)/python benchmarks/bench_audit.py
	$(BIN)/python benchmarks/bench_load.py
