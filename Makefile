# feedrec: two commands on a fresh machine -- `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Installing torch by its exact version makes pip take the CPU wheel on disk.
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: demo test lint bench clean browser services

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(STAMP_RUN)

demo: $(STAMP_RUN)
	$(BIN)/feedrec demo

# The dashboard's browser tests drive Debian's Chromium (headless, through Playwright's driver
# from pip: no browser download); installed from the distribution's packages when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "installing Chromium (Debian package) for the dashboard's browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# The Redis backend's tests start a real redis-server (Debian's package, installed when missing);
# the Spark tests run Spark in local mode on the machine's Java (17 or later).
services:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (Debian package) for the Redis backend's tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server; }
	@command -v java >/dev/null 2>&1 || { \
	  echo "installing a Java runtime (Debian's default-jre-headless) for the Spark tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q default-jre-headless; }

test: $(STAMP_DEV) browser services
	$(BIN)/python -m pytest -n 2 --dist loadscope -q

lint: $(STAMP_DEV)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

bench: $(STAMP_DEV)
	$(BIN)/python benchmarks/bench_ml100k.py
	$(BIN)/python benchmarks/bench_simulator.py
	$(BIN)/python benchmarks/bench_cold_start.py
	$(BIN)/python benchmarks/bench_ranker.py
	$(BIN)/python benchmarks/bench_ann.py
	$(BIN)/python benchmarks/bench_compression.py
	$(BIN)/python benchmarks/bench_serve.py
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_loop.py --rps 30 --speed 2
	$(BIN)/python benchmarks/bench_experiments.py
	$(BIN)/python benchmarks/bench_ope.py
	$(BIN)/python benchmarks/bench_monitor.py
	$(BIN)/python benchmarks/bench_warm_start.py
	$(BIN)/python benchmarks/bench_featurelog.py
	$(BIN)/python benchmarks/bench_continuous.py
	$(BIN)/python benchmarks/plot_continuous.py
	$(BIN)/python benchmarks/bench_dashboard.py
	$(BIN)/python benchmarks/bench_post_latency.py
	$(BIN)/python benchmarks/bench_spark.py
	$(BIN)/python benchmarks/bench_serve_redis.py --rps 200 --result serve_redis_200rps
	$(BIN)/python benchmarks/bench_serve_redis.py --rps 20 --reuse-redis

clean:
	rm -rf $(VENV) workspace .pytest_cache .mypy_cache .ruff_cache
