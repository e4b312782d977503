"""make's own behaviour: an up-to-date build does nothing, `make help` lists every
target, and the conformance suites skip loudly without their data but fail under CI."""
import os
import re
import subprocess

from conftest import ROOT


def make(*args, **env):
    clean = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "CI")}
    clean.update(env)
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, env=clean,
                          capture_output=True, text=True, timeout=300)


def test_an_up_to_date_build_runs_neither_cargo_nor_wasm_opt():
    wasm = os.path.join(ROOT, "build", "api_guard.wasm")
    first = make("build")
    assert first.returncode == 0, first.stdout + first.stderr
    before = os.stat(wasm).st_mtime_ns
    again = make("build")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "cargo build --release" not in again.stdout, again.stdout
    assert "wasm-opt -Oz" not in again.stdout and "unchanged" not in again.stdout, again.stdout
    assert os.stat(wasm).st_mtime_ns == before


def test_help_lists_every_documented_target():
    with open(os.path.join(ROOT, "Makefile")) as f:
        documented = set(re.findall(r"^([a-zA-Z0-9_-]+):.*## ", f.read(), re.M))
    out = make("help").stdout
    listed = set(re.findall(r"^  make (\S+)", out, re.M))
    assert {"e2e", "checks", "image", "validate", "run", "test", "setup"} <= listed
    assert listed == documented


def test_conformance_skips_loudly_without_data_and_fails_under_ci(tmp_path):
    missing = str(tmp_path / "nowhere")
    r = make("conformance", CONFORMANCE_DIR=missing)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "conformance: SKIPPED" in r.stdout
    assert f"{missing}/wycheproof" in r.stdout and f"{missing}/json-schema-test-suite" in r.stdout
    r = make("conformance", CONFORMANCE_DIR=missing, CI="true")
    assert r.returncode != 0
    assert "conformance: FAILED: data missing" in r.stdout
