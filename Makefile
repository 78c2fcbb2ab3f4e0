# The two commands of the quick start: `make run` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run test bench lint typecheck clean browser binary

# The operator page's test (tests/acceptance/test_ops_page.py) drives Debian's chromium through its
# chromium-driver; a machine without them gets them here (as root, or through sudo).
BROWSER := /usr/bin/chromium /usr/bin/chromedriver
APT     := $(if $(filter 0,$(shell id -u)),,sudo )env DEBIAN_FRONTEND=noninteractive apt-get

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/python run.py serve

$(BROWSER) &:
	$(APT) update -qq
	$(APT) install -y -qq chromium chromium-driver

browser: $(BROWSER)

test: $(STAMP) $(BROWSER)
	$(BIN)/ruff check .
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -q -n 4 --dist loadfile $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/kernel.py
	$(BIN)/python bench/storage.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/outbox.py
	$(BIN)/python bench/exports.py
	$(BIN)/python bench/impact.py
	$(BIN)/python bench/sync.py
	$(BIN)/python bench/edge.py
	$(BIN)/python bench/resilience.py
	$(BIN)/python bench/binary.py
	$(BIN)/python bench/ai.py

# dist/vigil: the whole service as one executable file (deploy/); rebuilt only when its sources changed.
binary: $(STAMP)
	$(BIN)/python deploy/build_binary.py

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache build dist
