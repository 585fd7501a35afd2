# make test: set up .venv and pass every check. make demo: set up and run the main job.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test demo bench lint typecheck pytest clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# The demo needs rich alone (the cli extra), not the peers that bench measures.
$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[cli]'
	touch $@

# GNU parallel (Debian's package) is the third row of `workpool bench --only run`; where
# it cannot be installed (not root, not Debian) that row says so and the rest runs.
$(VENV)/.bench-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[bench,cli]'
	-command -v parallel >/dev/null || apt-get install -y -q parallel
	touch $@

test: $(VENV)/.test-installed
	$(BIN)/ruff check src tests
	$(BIN)/mypy --strict src tests
	$(BIN)/python -m pytest -q -p no:cacheprovider

demo: $(VENV)/.demo-installed
	$(BIN)/workpool demo

bench: $(VENV)/.bench-installed
	$(BIN)/workpool bench

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache
