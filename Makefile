# The two entry points the README opens with. Both make their own virtual
# environment in .venv, so a fresh machine needs only Python 3.11 and pip.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 9814
NODES ?= 3

.PHONY: run test venv lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Start a local cluster of $(NODES) nodes on 127.0.0.1:$(PORT) and up (Ctrl-C stops it).
run: venv
	$(BIN)/python -m keycafe launch --nodes $(NODES) --port $(PORT)

# Install everything the tests need (Python packages and Debian's redis-tools
# for redis-cli/redis-benchmark), lint, type-check and run the whole suite.
test: venv
	bash scripts/ensure-debian-packages.sh redis-tools nftables faketime iproute2
	$(BIN)/ruff check keycafe tests bench sims
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check keycafe tests bench sims
	$(BIN)/mypy

bench: venv
	$(BIN)/python bench/server.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
