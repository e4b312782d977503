"""`make validate CONFIG=...` and `make run`'s refusal to start twice, through the
scripts those targets run."""
import os
import socket
import subprocess
import sys

from harness import ENVOY, ROOT, WASM


def validate(path):
    return subprocess.run([sys.executable, os.path.join(ROOT, "envoy", "validate.py"),
                           "--envoy", ENVOY, "--wasm", WASM, path],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)


def test_validate_names_the_field_of_a_bad_plugin_json(tmp_path):
    bad = tmp_path / "plugin.json"
    bad.write_text('{"routes": [{"name": "a", "match": {"path": "/a"}},\n'
                   ' {"name": "b", "match": {"path": "b"}}]}\n')
    r = validate(str(bad))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "routes[1].match.path: template \"b\" must start with '/'" in r.stdout
    assert r.stdout.strip().endswith("REFUSED")


def test_validate_reports_positions_of_the_file_as_written(tmp_path):
    dup = tmp_path / "plugin.json"
    dup.write_text('{\n  "routes": [],\n  "routes": []\n}\n')
    r = validate(str(dup))
    assert r.returncode == 1
    assert "duplicate member name in an object at line 3" in r.stdout, r.stdout


def test_validate_accepts_plugin_yaml_and_envoy_yaml(tmp_path):
    plugin = tmp_path / "plugin.yaml"
    plugin.write_text("routes:\n- name: health\n  match: {path: /healthz}\n")
    for path in (str(plugin), os.path.join(ROOT, "envoy", "envoy.yaml")):
        r = validate(path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.strip().endswith("OK")


def test_validate_refuses_an_envoy_yaml_envoy_refuses(tmp_path):
    broken = tmp_path / "envoy.yaml"
    broken.write_text("static_resources:\n  listeners:\n  - name: x\n    no_such_field: 1\n")
    r = validate(str(broken))
    assert r.returncode == 1
    assert "REFUSED" in r.stdout


def test_a_second_make_run_fails_loudly():
    # Hold one of the demo's ports (unless something else already does: the demo
    # must refuse either way) and start the demo script as `make run` does.
    held = socket.socket()
    try:
        held.bind(("127.0.0.1", 9901))
        held.listen(1)
    except OSError:
        held.close()
        held = None
    try:
        r = subprocess.run([sys.executable, os.path.join(ROOT, "envoy", "run_demo.py"),
                            "--envoy", ENVOY, "--wasm", WASM],
                           cwd=ROOT, capture_output=True, text=True, timeout=30)
    finally:
        if held:
            held.close()
    assert r.returncode != 0
    assert "demo is up" not in r.stdout
    assert "127.0.0.1:9901 (Envoy admin)" in r.stderr, r.stderr


def test_the_readme_minimal_configuration_loads(tmp_path):
    import yaml
    with open(os.path.join(ROOT, "README.md")) as f:
        section = f.read().split("\n## A minimal configuration\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    filters = yaml.safe_load(block)["http_filters"]
    config = filters[0]["typed_config"]["config"]
    assert config["allow_on_headers_stop_iteration"] is True and config["fail_open"] is False
    assert filters[-1]["name"] == "envoy.filters.http.router"
    plugin = tmp_path / "plugin.json"
    plugin.write_text(config["configuration"]["value"])
    r = validate(str(plugin))
    assert r.returncode == 0, r.stdout + r.stderr
