# api-guard: a thin wrapper. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV       := .venv
PY         := $(VENV)/bin/python
ENVOY      := $(VENV)/bin/envoy
TARGET     := wasm32-wasip1
RAW_WASM   := target/$(TARGET)/release/api_guard.wasm
WASM       := build/api_guard.wasm
STAMP      := $(VENV)/.installed
# rustc's wasm32 defaults use these proposals; binaryen must be told (V8 refuses
# modules optimised with --all-features).
WASM_OPT_FLAGS := -Oz --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
                  --enable-nontrapping-float-to-int --enable-reference-types --enable-multivalue
export CARGO_TERM_COLOR ?= never

.PHONY: help setup build run test fmt-check clippy doc unit conformance e2e validate token bench clean

help: ## List the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_-]+:.*## /{printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	@touch $@

setup: $(STAMP) ## Install the wasm32-wasip1 target, binaryen, clang-14 (ring), Envoy and pytest (.venv)
	@rustup target list --installed | grep -qx $(TARGET) || rustup target add $(TARGET)
	@command -v wasm-opt >/dev/null || { command -v apt-get >/dev/null && \
	  { apt-get update -qq && apt-get install -y -qq binaryen >/dev/null; } || \
	  echo "warning: binaryen (wasm-opt) not installed; the module will not be shrunk"; }
	@{ command -v clang-14 >/dev/null && command -v llvm-ar-14 >/dev/null; } || { \
	  command -v apt-get >/dev/null && \
	  { apt-get update -qq && apt-get install -y -qq clang-14 llvm-14 >/dev/null; } || \
	  { echo "error: clang-14 and llvm-ar-14 are needed to build ring for $(TARGET)"; exit 1; }; }

build: setup ## Build the filter: build/api_guard.wasm (release, wasm-opt -Oz)
	cargo build --release --target $(TARGET)
	@mkdir -p build
	@if command -v wasm-opt >/dev/null; then \
	  wasm-opt $(WASM_OPT_FLAGS) $(RAW_WASM) -o $(WASM); \
	else cp $(RAW_WASM) $(WASM); fi
	@ls -l $(RAW_WASM) $(WASM) | awk '{print "  " $$5 " bytes  " $$9}'

run: build ## Start Envoy on 127.0.0.1:10000 with the demo config and upstream; prints curl commands
	@$(PY) envoy/run_demo.py --envoy $(ENVOY) --wasm $(WASM)

fmt-check: ## cargo fmt --check over the workspace
	cargo fmt --all --check

clippy: ## cargo clippy on every target, warnings as errors
	cargo clippy --workspace --all-targets -- -D warnings

doc: ## Code docs (private items included) with broken links as errors
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --document-private-items -p api-guard

unit: ## Unit tests (native), the regex shim's included
	cargo test --workspace --lib

conformance: ## Wycheproof JWS/JWK and JSON-Schema-Test-Suite runs, with counts (reads ../shared/conformance)
	cargo test --test conformance_jws --test conformance_schema -- --nocapture

token: $(STAMP) ## Mint a demo JWT (ARGS="--sub bob --shop s2 --roles admin")
	@$(PY) envoy/mint_token.py $(ARGS)

validate: build ## envoy --mode validate on the demo configuration
	@$(PY) envoy/run_demo.py --envoy $(ENVOY) --wasm $(WASM) --validate

e2e: build ## End-to-end tests through a real Envoy
	WASM=$(abspath $(WASM)) ENVOY=$(abspath $(ENVOY)) $(VENV)/bin/pytest -q tests/e2e

test: setup fmt-check clippy doc unit conformance e2e ## Everything CI runs: fmt, clippy, docs, unit, conformance, end-to-end

bench: build ## Filter vs no filter, no-op Wasm and native filters: bench/results/ (ARGS=--quick)
	@command -v wrk >/dev/null || { command -v apt-get >/dev/null && \
	  apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } || \
	  { echo "error: wrk not installed (Debian package wrk)"; exit 1; }
	WASM_OPT_FLAGS="$(WASM_OPT_FLAGS)" $(PY) bench/run.py --envoy $(ENVOY) --wasm $(WASM) $(ARGS)

clean: ## Remove build outputs (keeps .venv)
	cargo clean
	rm -rf build
