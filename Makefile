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
# What the module is built from: a change to any of these rebuilds it, nothing else does.
RUST_INPUTS := Cargo.toml Cargo.lock .cargo/config.toml $(shell find src vendor -type f 2>/dev/null)
# wasm-opt reruns only when the raw module's bytes or its flags changed (cargo may relink to the
# same bytes, e.g. after a comment edit); this file holds the digest it last optimised.
RAW_DIGEST := build/.raw-wasm.sha256
# The OCI image layout `make image` writes, and the tag it carries.
IMAGE_DIR  := build/oci
IMAGE_TAG  ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
# Conformance data (Wycheproof, JSON-Schema-Test-Suite): beside the clone, as CI has it.
CONFORMANCE_DIR ?= $(abspath ../shared/conformance)
export CONFORMANCE_DIR
# The OpenAPI importer (tools/openapi): a native binary, built with the `openapi`
# profile (Cargo.toml), never part of the module.
OPENAPI_BIN := target/openapi/api-guard-openapi
# rustc's wasm32 defaults use these proposals; binaryen must be told (V8 refuses
# modules optimised with --all-features). `-ocimfs 150`: binaryen inlines a function
# with one caller only up to 150 bytes (default: any size), which otherwise builds
# functions of up to 70 KB. Envoy's V8 compiles every function with TurboFan as the
# module loads, and the compiler's memory for the largest functions stays in Envoy's
# allocator: 145-147 MB RSS without the limit, 127-129 with 1000, 120-121 with 150,
# for 2.3 KB more module (docs/performance.md, "Memory").
WASM_OPT_FLAGS := -Oz -ocimfs 150 --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
                  --enable-nontrapping-float-to-int --enable-reference-types --enable-multivalue
export CARGO_TERM_COLOR ?= never

# Fuzzing (fuzz/, docs/testing.md): cargo-fuzz drives libFuzzer. With `--sanitizer
# none` cargo-fuzz passes rustc no nightly-only flag (AddressSanitizer would need
# -Zsanitizer, so nightly or RUSTC_BOOTSTRAP=1), so the stable toolchain builds the
# targets as they are; ASan would add nothing here, as the code under test is safe
# Rust. `--debug-assertions` turns on overflow checks. One build serves `fuzz` and
# `fuzz-ci`: `cargo fuzz run` must be given the same flags, or it rebuilds.
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_TARGETS    ?= path json jws mask headers rls
FUZZ_SECONDS    ?= 60
FUZZ_CI_SECONDS ?= 20
FUZZ_WORK       ?= fuzz/work
FUZZ_FLAGS      := --sanitizer none --debug-assertions --codegen-units 16
# -timeout: an input taking over 10 s is a failure (a hang), as is a crash or an
# out-of-memory (-rss_limit_mb, default 2048).
FUZZ_RUN_FLAGS  := -timeout=10 -print_final_stats=1

.PHONY: help setup build image run test fmt-check clippy doc unit conformance fuzz-build fuzz fuzz-ci openapi openapi-build openapi-demo openapi-test e2e checks validate token api-key bench footprint clean

help: ## List the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_-]+:.*## /{printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): tests/requirements.txt
	@echo "setup: Python virtualenv $(VENV) with Envoy, pytest, PyYAML (tests/requirements.txt; about a minute)"
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	@touch $@

# One line per step, so a first run that takes minutes shows where it is.
setup: $(STAMP) ## Install the wasm32-wasip1 target, binaryen, clang-14 (ring), cargo-fuzz, redis-server, Envoy and pytest (.venv)
	@echo "setup [1/7] Python virtualenv $(VENV): ready (Envoy $$($(ENVOY) --version 2>/dev/null | sed -n 's|.*version: [^/]*/\([0-9.]*\)/.*|\1|p'))"
	@printf 'setup [2/7] Rust target $(TARGET): '; \
	  if rustup target list --installed | grep -qx $(TARGET); then echo installed; \
	  else echo "installing"; rustup target add $(TARGET); fi
	@printf 'setup [3/7] wasm-opt (Debian binaryen): '; \
	  if command -v wasm-opt >/dev/null; then echo installed; \
	  elif command -v apt-get >/dev/null; then echo "installing"; \
	    apt-get update -qq && apt-get install -y -qq binaryen >/dev/null; \
	  else echo "missing: the module will not be shrunk"; fi
	@printf 'setup [4/7] clang-14, llvm-ar-14 (ring for $(TARGET)): '; \
	  if command -v clang-14 >/dev/null && command -v llvm-ar-14 >/dev/null; then echo installed; \
	  elif command -v apt-get >/dev/null; then echo "installing"; \
	    apt-get update -qq && apt-get install -y -qq clang-14 llvm-14 >/dev/null; \
	  else echo "missing"; echo "error: clang-14 and llvm-ar-14 are needed to build ring for $(TARGET)"; exit 1; fi
	@printf 'setup [5/7] cargo-fuzz $(CARGO_FUZZ_VERSION): '; \
	  if command -v cargo-fuzz >/dev/null; then echo installed; \
	  else echo "installing (about 3 minutes)"; cargo install --quiet cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked; fi
	@printf 'setup [6/7] redis-server (global quota tests, Debian redis-server): '; \
	  if command -v redis-server >/dev/null; then echo installed; \
	  elif command -v apt-get >/dev/null; then echo "installing"; \
	    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; \
	  else echo "missing: tests/e2e/test_global_quota.py will fail"; fi
	@printf 'setup [7/7] conformance data: '; \
	  if [ -d "$(CONFORMANCE_DIR)/wycheproof" ] && [ -d "$(CONFORMANCE_DIR)/json-schema-test-suite" ]; then \
	    echo "$(CONFORMANCE_DIR)"; \
	  else echo "MISSING at $(CONFORMANCE_DIR): make conformance will skip (see docs/testing.md)"; fi

# Real file targets: cargo runs when a source changed, wasm-opt when the raw module did.
$(RAW_WASM): $(RUST_INPUTS) | setup
	cargo build --release --target $(TARGET)
	@touch $@

# The digest covers wasm-opt's flags too, and the Makefile is a prerequisite, so a
# change of flags reruns wasm-opt.
$(WASM): $(RAW_WASM) Makefile
	@mkdir -p build
	@digest=$$({ sha256sum $(RAW_WASM) | cut -d' ' -f1; echo "$(WASM_OPT_FLAGS)"; } | sha256sum | cut -d' ' -f1); \
	if [ -f $@ ] && [ -f $(RAW_DIGEST) ] && [ "$$(cat $(RAW_DIGEST))" = "$$digest" ]; then \
	  echo "  $(RAW_WASM) unchanged: wasm-opt skipped"; touch $@; \
	else \
	  if command -v wasm-opt >/dev/null; then \
	    echo "wasm-opt $(WASM_OPT_FLAGS) $(RAW_WASM) -o $@"; \
	    wasm-opt $(WASM_OPT_FLAGS) $(RAW_WASM) -o $@.tmp; \
	  else cp $(RAW_WASM) $@.tmp; fi && mv $@.tmp $@ && echo "$$digest" > $(RAW_DIGEST); \
	fi
	@ls -l $(RAW_WASM) $@ | awk '{print "  " $$5 " bytes  " $$9}'

build: $(WASM) ## Build the filter: build/api_guard.wasm (release, wasm-opt -Oz); does nothing when nothing changed

image: $(WASM) ## OCI image layout in build/oci for Istio's WasmPlugin (Wasm artifact + compat image); README "Istio" pushes it
	@$(PY) tools/wasm_image.py --wasm $(WASM) --out $(IMAGE_DIR) --tag $(IMAGE_TAG)

run: build ## Start Envoy on 127.0.0.1:10000 with the demo config and upstream; prints curl commands
	@$(PY) envoy/run_demo.py --envoy $(ENVOY) --wasm $(WASM)

fmt-check: ## cargo fmt --check over the workspace
	cargo fmt --all --check

clippy: ## cargo clippy on every target, warnings as errors
	cargo clippy --workspace --all-targets -- -D warnings

doc: ## Code docs (private items included) with broken links as errors
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --document-private-items -p api-guard

unit: ## Unit tests (native), the regex and idna shims' included (the importer's: make openapi-test)
	cargo test --workspace --lib --exclude api-guard-openapi

# Without the data (a clone outside this project's machines) the suites are skipped
# with a notice naming what is missing; under CI=true a missing suite fails the run.
conformance: ## Wycheproof JWS/JWK and JSON-Schema-Test-Suite runs, with counts (CONFORMANCE_DIR, default ../shared/conformance)
	@missing=""; for d in wycheproof json-schema-test-suite; do \
	  [ -d "$(CONFORMANCE_DIR)/$$d" ] || missing="$$missing $(CONFORMANCE_DIR)/$$d"; done; \
	if [ -z "$$missing" ]; then \
	  cargo test --test conformance_jws --test conformance_schema -- --nocapture; \
	elif [ "$$CI" = true ]; then \
	  echo "conformance: FAILED: data missing:$$missing (CI must run the suites in full)"; exit 1; \
	else \
	  echo "################################################################################"; \
	  echo "## conformance: SKIPPED. Missing:$$missing"; \
	  echo "##   Wycheproof (C2SP/wycheproof testvectors_v1: json_web_signature_test.json,"; \
	  echo "##   json_web_key_test.json) and JSON-Schema-Test-Suite (tests/draft2020-12,"; \
	  echo "##   tests/draft7, remotes/) are not in any package registry; put them there or"; \
	  echo "##   set CONFORMANCE_DIR. The JWS and JSON Schema conformance suites did NOT run."; \
	  echo "################################################################################"; \
	fi

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

api-key: ## A new random API key (first line) and its configuration entry with the SHA-256 (ARGS="--id acme --claims '{\"plan\": \"gold\"}'")
	@python3 envoy/api_key.py $(ARGS)

validate: build ## envoy --mode validate: the demo, or CONFIG=file (Envoy YAML, plugin JSON/YAML, Istio WasmPlugin/EnvoyFilter)
	@$(PY) envoy/validate.py --envoy $(ENVOY) --wasm $(WASM) $(or $(CONFIG),envoy/envoy.yaml)

e2e: build openapi-build ## End-to-end tests through a real Envoy (the importer's output included)
	WASM=$(abspath $(WASM)) ENVOY=$(abspath $(ENVOY)) OPENAPI=$(abspath $(OPENAPI_BIN)) $(VENV)/bin/pytest -q tests/e2e

checks: image ## Repository checks without Envoy: markdown tables, the OCI image, the Grafana dashboard, make's own behaviour
	WASM=$(abspath $(WASM)) IMAGE_DIR=$(abspath $(IMAGE_DIR)) $(VENV)/bin/pytest -q tests/repo

test: setup fmt-check clippy doc unit conformance checks fuzz-ci openapi-test e2e ## Everything CI runs: fmt, clippy, docs, unit, conformance, repository checks, fuzzing, the OpenAPI importer, end-to-end

# A tool a measuring target needs, installed from Debian when missing:
# $(call need,<command>,<package>).
need = command -v $(1) >/dev/null || { command -v apt-get >/dev/null && \
  apt-get update -qq && apt-get install -y -qq $(2) >/dev/null; } || \
  { echo "error: $(1) not installed (Debian package $(2))"; exit 1; }

bench: build ## Filter vs no filter, no-op Wasm and native filters: bench/results/ (ARGS=--quick, ARGS=--profile)
	@$(call need,wrk,wrk)
	@case "$(ARGS)" in *--profile*) $(call need,perf,linux-perf) ;; esac
	@case "$(ARGS)" in *--count*) $(call need,valgrind,valgrind) ;; esac
	WASM_OPT_FLAGS="$(WASM_OPT_FLAGS)" $(PY) bench/run.py --envoy $(ENVOY) --wasm $(WASM) $(ARGS)

footprint: ## Instructions and code lines the filter runs per request (callgrind over the whole-filter bench; ARGS="--top 25")
	@$(call need,valgrind,valgrind)
	@python3 bench/micro/footprint.py $(ARGS)

clean: ## Remove build outputs (keeps .venv)
	cargo clean
	rm -rf build
