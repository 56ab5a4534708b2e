# marginflow: every target creates .venv and installs the project first when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PORT   ?= 4200

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: demo test fuzz bench bench-smoke bench-scale dashboard screenshots lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)  ## run the pipeline on the built-in digits dataset and print the report
	$(BIN)/marginflow run --dataset digits

test: $(STAMP)  ## lint, then the whole test suite (2 pytest-xdist workers, a test file or class each, the slow ones first; the 15 slowest printed)
	$(BIN)/ruff check flows tasks tests benchmarks scripts
	$(BIN)/python -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder --durations=15

fuzz: $(STAMP)  ## the property-based input tests with 2,000 generated inputs each (6,000 in all; make test runs 30 each)
	MARGINFLOW_FUZZ_EXAMPLES=2000 $(BIN)/python -m pytest -q tests/test_fuzz.py --hypothesis-show-statistics

bench: $(STAMP)  ## accuracy, loop, speed, predict and image-encoder benchmarks (each prints a table)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python benchmarks/accuracy.py
	$(BIN)/python benchmarks/loop.py
	$(BIN)/python benchmarks/speed.py
	$(BIN)/python benchmarks/predict.py
	$(BIN)/python benchmarks/image_encoders.py

bench-smoke: $(STAMP)  ## every benchmark at tiny size (seconds each; make test runs these too)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python -m pytest -q -m bench_smoke

bench-scale: $(STAMP)  ## large data: 10k, 100k and 1M rows x 784 end to end, and exact vs approx SVM (about an hour)
	$(BIN)/python benchmarks/scale.py

dashboard: $(STAMP)  ## the Prefect dashboard on http://127.0.0.1:$(PORT)
	$(BIN)/marginflow dashboard --port $(PORT)

screenshots: $(STAMP)  ## PNGs of the dashboard (runs, graph, report, models) in screenshots/, via headless Chromium
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(BIN)/python scripts/screenshots.py

lint: $(STAMP)
	$(BIN)/ruff check flows tasks tests benchmarks scripts

clean:
	rm -rf $(VENV) data/artifacts data/cache
