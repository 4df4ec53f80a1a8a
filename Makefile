# The two commands a new user runs: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint typecheck pytest bench debian-test-tools clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

## make run: serve the bundled demo site on http://127.0.0.1:8080
run: $(STAMP)
	$(BIN)/twistd --nodaemon --pidfile= wsgi --config twistwsgi/demo/site.toml

## make test: the whole suite (ruff, mypy, pytest)
test: $(STAMP) debian-test-tools lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

## make bench: twistwsgi against its peers with wrk (BENCH_ARGS=--quick for a ~2-minute run)
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# Real-client tests drive curl, and tests/test_hidden_costs.py runs the request path
# under gdb; install them from Debian when they are missing.
debian-test-tools:
	@missing=""; for tool in curl gdb; do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q $$missing; \
		else echo "missing and not root:$$missing (their tests will be skipped)"; fi; fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
