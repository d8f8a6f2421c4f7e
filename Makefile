# `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The official socket.io client, served locally by the examples.
JS_CLIENT := node_modules/socket.io-client/dist/socket.io.min.js
CHROMIUM := /usr/bin/chromium

.PHONY: demo test lint typecheck pytest install browser clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=25.1"

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e ".[asgi,prometheus,redis]" --group dev
	touch $(STAMP)

$(JS_CLIENT): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(JS_CLIENT)

# Debian's Chromium for the browser tests (Playwright drives it; it downloads no browser).
$(CHROMIUM):
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium

install: $(STAMP) $(JS_CLIENT)

browser: $(CHROMIUM)

demo: $(STAMP) $(JS_CLIENT)
	$(PY) examples/aiohttp_clinic/app.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP) $(JS_CLIENT) $(CHROMIUM)
	$(VENV)/bin/pytest

test: lint typecheck pytest

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
