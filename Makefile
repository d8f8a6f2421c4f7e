# `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The official socket.io client, served locally by the examples.
JS_CLIENT := node_modules/socket.io-client/dist/socket.io.min.js

.PHONY: demo test lint typecheck docs pytest install system-packages clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=25.1"

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e ".[asgi,prometheus,redis,pydantic,fastapi,testing]" --group dev
	touch $(STAMP)

$(JS_CLIENT): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(JS_CLIENT)

# What the tests need from Debian: Chromium for the browser tests (Playwright drives
# it and downloads no browser) and redis-server for the cluster tests.
system-packages:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
		apt-get update && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi

install: $(STAMP) $(JS_CLIENT)


demo: $(STAMP) $(JS_CLIENT)
	$(PY) examples/aiohttp_clinic/app.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP) $(JS_CLIENT) system-packages
	$(VENV)/bin/pytest

# The documentation site (mkdocs-material, mkdocstrings) into site/; --strict turns
# every warning (a broken link, a README section gone, a docstring griffe cannot
# read) into a failure. Not --quiet: it would hide the warnings from --strict's count.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

test: lint typecheck docs pytest

clean:
	rm -rf $(VENV) site node_modules benchmarks/node/node_modules .pytest_cache .mypy_cache .ruff_cache

# Benchmarks against raw python-socketio and Node's socket.io, then the 5-minute soak
# of the gateway alone: writes benchmarks/RESULTS.md; then cluster mode on a real
# redis-server: benchmarks/CLUSTER.md. Node's socket.io (server C) and
# socket.io-client (the load generator) go into benchmarks/node/node_modules unless
# Node finds them already. `make soak` runs the soak alone (benchmarks/SOAK.md).
.PHONY: bench soak
bench: $(STAMP) system-packages
	@cd benchmarks/node && node -e "require.resolve('socket.io'); require.resolve('socket.io-client')" \
		2>/dev/null || npm install --no-audit --no-fund
	@test -x $(VENV)/bin/py-spy || $(PY) -m pip install --quiet py-spy
	$(PY) benchmarks/run.py
	$(PY) benchmarks/recovery_redis.py
	$(PY) benchmarks/cluster.py

soak: $(STAMP)
	$(PY) benchmarks/run.py --scenarios SOAK --servers A --out benchmarks/SOAK.md
