# make test: set up .venv and pass every check. make demo: set up and run the main job.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test demo bench lint typecheck pytest clean docs docs-serve dist

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

# The docs build also runs every example of the site and the docstring check.
$(VENV)/.docs-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[docs,test]'
	touch $@

$(VENV)/.release-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[release]'
	touch $@

test: $(VENV)/.test-installed
	$(BIN)/ruff check src tests
	$(BIN)/mypy --strict src tests
	$(BIN)/python -m pytest -q -p no:cacheprovider

demo: $(VENV)/.demo-installed
	$(BIN)/workpool demo

bench: $(VENV)/.bench-installed
	$(BIN)/workpool bench

# make docs: the site, strict (a warning fails it), into site/ as plain HTML files.
docs: $(VENV)/.docs-installed
	$(BIN)/ruff check docs
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_docs_examples.py tests/test_docstrings.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# make docs-serve: the site on http://127.0.0.1:$(DOCS_PORT)/workpool/, rebuilt on every edit.
DOCS_PORT ?= 8000
docs-serve: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict --dev-addr 127.0.0.1:$(DOCS_PORT)

# make dist: the sdist and wheel a release uploads, checked as the index renders them,
# and the wheel installed into a fresh venv.
dist: $(VENV)/.release-installed
	rm -rf dist
	$(BIN)/python -m build --outdir dist
	$(BIN)/twine check --strict dist/*
	rm -rf build/dist-venv
	$(BIN)/python -m venv build/dist-venv
	build/dist-venv/bin/python -m pip install -q dist/*.whl
	cd build && dist-venv/bin/python -c 'import workpool; print("workpool", workpool.__version__, "installs and imports")'

clean:
	rm -rf $(VENV) build dist site .mypy_cache .ruff_cache .pytest_cache
