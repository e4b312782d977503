#!/usr/bin/env python3
"""`make validate [CONFIG=file]`: checks a configuration with `envoy --mode validate`,
which loads the module and runs the plugin's configure step, so the filter's own
configuration errors show (with the field path).

What the file may be:
- an Envoy bootstrap (YAML or JSON with `static_resources`, `admin`, ...): validated
  as it is;
- a plugin configuration (JSON or YAML with `routes`): put into the demo bootstrap
  (envoy/envoy.yaml) in place of its plugin configuration. JSON text is passed as
  written, so error positions are the file's own lines and columns;
- Istio resources (one or more YAML documents): each `WasmPlugin`'s `pluginConfig`
  is validated as istiod passes it (a JSON string), and each `EnvoyFilter` patch that
  carries a Wasm filter config is validated as that filter, with the module path
  replaced by the local build. Other kinds (ConfigMap, Deployment, ...) are skipped.

Exit status 0 when every configuration was accepted.
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEMO = os.path.join(HERE, "envoy.yaml")
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"


def demo_bootstrap():
    with open(DEMO) as f:
        return yaml.safe_load(f)


def demo_wasm_config(doc):
    """The `config` of the Wasm filter in the demo bootstrap (edited in place)."""
    for listener in doc["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for net in chain["filters"]:
                for http in net["typed_config"].get("http_filters", []):
                    if http["typed_config"].get("@type") == WASM_TYPE:
                        return http["typed_config"]["config"]
    raise SystemExit("envoy/envoy.yaml has no Wasm filter")


def with_plugin_config(text, wasm):
    """The demo bootstrap with `text` (JSON) as the plugin configuration."""
    doc = demo_bootstrap()
    cfg = demo_wasm_config(doc)
    cfg["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": text}
    cfg["vm_config"]["code"] = {"local": {"filename": wasm}}
    return doc


def with_filter_config(filter_config, wasm):
    """The demo bootstrap with its Wasm filter's `config` replaced by `filter_config`
    (an EnvoyFilter's), the module loaded from the local build."""
    doc = demo_bootstrap()
    http_filters = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]["http_filters"]
    cfg = copy.deepcopy(filter_config)
    vm = cfg.setdefault("vm_config", {})
    vm["code"] = {"local": {"filename": wasm}}
    vm.setdefault("runtime", "envoy.wasm.runtime.v8")
    for f in http_filters:
        if f["typed_config"].get("@type") == WASM_TYPE:
            f["typed_config"]["config"] = cfg
    return doc


def envoy_validate(envoy, doc_or_path, label):
    """Runs `envoy --mode validate`; prints Envoy's errors and a verdict line."""
    if isinstance(doc_or_path, str):
        path = doc_or_path
    else:
        fd, path = tempfile.mkstemp(prefix="apiguard-validate-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(doc_or_path, f)
    try:
        r = subprocess.run([envoy, "--mode", "validate", "-c", path, "-l", "warning",
                            "--component-log-level", "wasm:info"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        if not isinstance(doc_or_path, str):
            os.unlink(path)
    if r.returncode != 0:
        for line in (r.stdout + r.stderr).splitlines():
            if "[error]" in line or "[critical]" in line or "wasm log" in line:
                print("  " + line)
    print(f"{label}: " + ("OK" if r.returncode == 0 else "REFUSED"))
    return r.returncode == 0


def istio_configs(docs, wasm):
    """(label, bootstrap) for each WasmPlugin and Wasm-carrying EnvoyFilter patch."""
    out = []
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name", "?")
        if kind == "WasmPlugin":
            plugin = doc.get("spec", {}).get("pluginConfig")
            if plugin is None:
                raise SystemExit(f"WasmPlugin {name}: no pluginConfig")
            out.append((f"WasmPlugin {name} pluginConfig", with_plugin_config(json.dumps(plugin), wasm)))
        elif kind == "EnvoyFilter":
            for i, patch in enumerate(doc.get("spec", {}).get("configPatches", [])):
                typed = patch.get("patch", {}).get("value", {}).get("typed_config", {})
                if typed.get("@type") == WASM_TYPE:
                    out.append((f"EnvoyFilter {name} configPatches[{i}]",
                                with_filter_config(typed["config"], wasm)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--envoy", required=True)
    ap.add_argument("--wasm", required=True)
    ap.add_argument("config")
    args = ap.parse_args()
    wasm = os.path.abspath(args.wasm)
    if not os.path.exists(wasm):
        sys.exit(f"{args.wasm} is missing: run `make build`")
    with open(args.config) as f:
        text = f.read()
    try:
        docs = [json.loads(text)]
        is_json = True
    except ValueError:
        is_json = False
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as e:
            sys.exit(f"{args.config}: neither JSON nor YAML: {e}")
    if not docs or not all(isinstance(d, dict) for d in docs):
        sys.exit(f"{args.config}: expected an object (an Envoy bootstrap, a plugin configuration or Istio resources)")

    if len(docs) == 1 and "routes" in docs[0]:
        # A plugin configuration. JSON goes in as written (duplicate names and
        # positions as in the file); YAML as the JSON istiod would make of it.
        body = text if is_json else json.dumps(docs[0], indent=2)
        ok = envoy_validate(args.envoy, with_plugin_config(body, wasm), f"{args.config} (plugin configuration)")
    elif any("kind" in d and "apiVersion" in d for d in docs):
        configs = istio_configs(docs, wasm)
        if not configs:
            sys.exit(f"{args.config}: no WasmPlugin or Wasm EnvoyFilter patch to validate")
        ok = all([envoy_validate(args.envoy, doc, f"{args.config}: {label}") for label, doc in configs])
    else:
        ok = envoy_validate(args.envoy, os.path.abspath(args.config), args.config)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
