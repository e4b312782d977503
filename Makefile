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
# The OpenAPI importer (tools/openapi): a native binary, built with the `openapi`
# profile (Cargo.toml), never part of the module.
OPENAPI_BIN := target/openapi/api-guard-openapi
# rustc's wasm32 defaults use these proposals; binaryen must be told (V8 refuses
# modules optimised with --all-features).
WASM_OPT_FLAGS := -Oz --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
                  --enable-nontrapping-float-to-int --enable-reference-types --enable-multivalue
export CARGO_TERM_COLOR ?= never

# Fuzzing (fuzz/, README "Tests"): cargo-fuzz drives libFuzzer. With `--sanitizer
# none` cargo-fuzz passes rustc no nightly-only flag (AddressSanitizer would need
# -Zsanitizer, so nightly or RUSTC_BOOTSTRAP=1), so the stable toolchain builds the
# targets as they are; ASan would add nothing here, as the code under test is safe
# Rust. `--debug-assertions` turns on overflow checks. One build serves `fuzz` and
# `fuzz-ci`: `cargo fuzz run` must be given the same flags, or it rebuilds.
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_TARGETS    ?= path json jws mask headers
FUZZ_SECONDS    ?= 60
FUZZ_CI_SECONDS ?= 20
FUZZ_WORK       ?= fuzz/work
FUZZ_FLAGS      := --sanitizer none --debug-assertions --codegen-units 16
# -timeout: an input taking over 10 s is a failure (a hang), as is a crash or an
# out-of-memory (-rss_limit_mb, default 2048).
FUZZ_RUN_FLAGS  := -timeout=10 -print_final_stats=1

.PHONY: help setup build run test fmt-check clippy doc unit conformance fuzz-build fuzz fuzz-ci openapi openapi-build openapi-demo openapi-test e2e validate token bench clean

help: ## List the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_-]+:.*## /{printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	@touch $@

setup: $(STAMP) ## Install the wasm32-wasip1 target, binaryen, clang-14 (ring), cargo-fuzz, Envoy and pytest (.venv)
	@rustup target list --installed | grep -qx $(TARGET) || rustup target add $(TARGET)
	@command -v wasm-opt >/dev/null || { command -v apt-get >/dev/null && \
	  { apt-get update -qq && apt-get install -y -qq binaryen >/dev/null; } || \
	  echo "warning: binaryen (wasm-opt) not installed; the module will not be shrunk"; }
	@{ command -v clang-14 >/dev/null && command -v llvm-ar-14 >/dev/null; } || { \
	  command -v apt-get >/dev/null && \
	  { apt-get update -qq && apt-get install -y -qq clang-14 llvm-14 >/dev/null; } || \
	  { echo "error: clang-14 and llvm-ar-14 are needed to build ring for $(TARGET)"; exit 1; }; }
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked

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

unit: ## Unit tests (native), the regex shim's included (the importer's: make openapi-test)
	cargo test --workspace --lib --exclude api-guard-openapi

conformance: ## Wycheproof JWS/JWK and JSON-Schema-Test-Suite runs, with counts (reads ../shared/conformance)
	cargo test --test conformance_jws --test conformance_schema -- --nocapture

fuzz-build: ## Build the fuzz targets (fuzz/, its own workspace; stable Rust, see FUZZ_FLAGS)
	cargo fuzz build $(FUZZ_FLAGS)

# New inputs go to $(FUZZ_WORK)/<target>/ (git-ignored); the checked-in seeds in
# fuzz/corpus/<target>/ are only read. A crash, hang or out-of-memory fails the run
# after the other targets have run: the input is in fuzz/artifacts/<target>/, the
# log (tail printed) in fuzz/artifacts/<target>.log.
fuzz: fuzz-build ## Fuzz each target for FUZZ_SECONDS (default 60; FUZZ_TARGETS="path json" to choose)
	@failed=""; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_WORK)/$$t fuzz/artifacts; log=fuzz/artifacts/$$t.log; \
	  echo "== fuzz $$t: $(FUZZ_SECONDS) s"; \
	  if cargo fuzz run $(FUZZ_FLAGS) $$t $(FUZZ_WORK)/$$t fuzz/corpus/$$t -- \
	       -max_total_time=$(FUZZ_SECONDS) $(FUZZ_RUN_FLAGS) > $$log 2>&1; then \
	    grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units)' $$log; \
	  else tail -n 60 $$log; failed="$$failed $$t"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: FAILED:$$failed (inputs in fuzz/artifacts/)"; exit 1; fi

fuzz-ci: ## Fuzz every target for FUZZ_CI_SECONDS (default 20) after replaying its seeds: part of `make test`
	cargo fmt --manifest-path fuzz/Cargo.toml --check
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(FUZZ_CI_SECONDS)

openapi: ## Print the configuration for SPEC=<OpenAPI 3.0/3.1, JSON or YAML> [OVERLAY=<file>] [BASE_PATH=/v2] [JSON_ONLY=1] (use make -s)
	@test -n "$(SPEC)" || { echo "usage: make -s openapi SPEC=api.yaml [OVERLAY=overlay.yaml] [BASE_PATH=/prefix] [JSON_ONLY=1] [ADDITIONAL_QUERY=allow]" >&2; exit 2; }
	@cargo build -q --profile openapi -p api-guard-openapi
	@$(OPENAPI_BIN) "$(SPEC)" $(if $(OVERLAY),--overlay "$(OVERLAY)") $(if $(BASE_PATH),--base-path "$(BASE_PATH)") \
	  $(if $(JSON_ONLY),--json-only) $(if $(ADDITIONAL_QUERY),--additional-query "$(ADDITIONAL_QUERY)")

openapi-demo: openapi-build $(STAMP) ## Regenerate the demo's OpenAPI listener (envoy/envoy.yaml) from envoy/openapi-demo.yaml
	@$(PY) envoy/openapi_demo.py --openapi $(OPENAPI_BIN)

openapi-build: ## Build the OpenAPI importer (tools/openapi): target/openapi/api-guard-openapi
	cargo build --profile openapi -p api-guard-openapi

openapi-test: ## The importer's unit tests and its runs on real OpenAPI documents (builds it): part of `make test`
	cargo test --profile openapi -p api-guard-openapi

token: $(STAMP) ## Mint a demo JWT (ARGS="--sub bob --shop s2 --roles admin")
	@$(PY) envoy/mint_token.py $(ARGS)

validate: build ## envoy --mode validate on the demo configuration
	@$(PY) envoy/run_demo.py --envoy $(ENVOY) --wasm $(WASM) --validate

e2e: build openapi-build ## End-to-end tests through a real Envoy (the importer's output included)
	WASM=$(abspath $(WASM)) ENVOY=$(abspath $(ENVOY)) OPENAPI=$(abspath $(OPENAPI_BIN)) $(VENV)/bin/pytest -q tests/e2e

test: setup fmt-check clippy doc unit conformance fuzz-ci openapi-test e2e ## Everything CI runs: fmt, clippy, docs, unit, conformance, fuzzing, the OpenAPI importer, end-to-end

bench: build ## Filter vs no filter, no-op Wasm and native filters: bench/results/ (ARGS=--quick)
	@command -v wrk >/dev/null || { command -v apt-get >/dev/null && \
	  apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } || \
	  { echo "error: wrk not installed (Debian package wrk)"; exit 1; }
	WASM_OPT_FLAGS="$(WASM_OPT_FLAGS)" $(PY) bench/run.py --envoy $(ENVOY) --wasm $(WASM) $(ARGS)

clean: ## Remove build outputs (keeps .venv)
	cargo clean
	rm -rf build
