#!/usr/bin/env python3
"""Writes build/api_guard.wasm as an OCI image layout that Istio's WasmPlugin pulls.

    tools/wasm_image.py --wasm build/api_guard.wasm --out build/oci --tag 0.1.0

The layout (https://github.com/opencontainers/image-spec/blob/main/image-layout.md)
holds two manifests, both of which istio-agent's fetcher accepts:

- `<tag>`: the Wasm artifact. Config media type
  `application/vnd.module.wasm.config.v1+json`, one layer
  `application/vnd.module.wasm.content.layer.v1+wasm` that is the module itself.
  Istio's fetcher recognises it by the config media type. A plain `oras push` of the .wasm file
  produces other media types (`application/vnd.oci.image.layer.v1.tar`), which
  Istio refuses.
- `<tag>-compat`: a plain OCI image with one gzipped tar layer holding
  `plugin.wasm` (what `FROM scratch` + `COPY api_guard.wasm plugin.wasm` builds),
  for registries and copy tools that only handle image media types.

Debian's `skopeo` pushes either one with its media types and digests unchanged
(`skopeo copy oci:build/oci:<tag> docker://REGISTRY/api-guard:<tag>`). Everything is
deterministic (no timestamps, fixed tar and gzip headers): the same module always
gives the same digests. Only the Python standard library is used.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
IMAGE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
TITLE = "org.opencontainers.image.title"


def canonical(doc):
    """Compact, key-sorted JSON bytes: a stable digest for a given document."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class Layout:
    def __init__(self, root):
        self.root = root
        os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)

    def blob(self, data, media_type, annotations=None):
        """Stores `data`; returns its OCI descriptor."""
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.root, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        desc = {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}
        if annotations:
            desc["annotations"] = annotations
        return desc


def plugin_tar(wasm):
    """A tar holding `plugin.wasm` (the file name Istio looks for), fixed metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size = len(wasm)
        info.mode = 0o644
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(wasm))
    return buf.getvalue()


def build(wasm_path, out, tag):
    with open(wasm_path, "rb") as f:
        wasm = f.read()
    if wasm[:4] != b"\0asm":
        sys.exit(f"{wasm_path}: not a WebAssembly module")
    if os.path.isdir(out):
        shutil.rmtree(out)
    layout = Layout(out)
    manifests = []

    # The Wasm artifact. Istio reads neither the config's content nor the
    # annotations; the config names the proxy-wasm ABI the module exports.
    config = layout.blob(canonical({"type": "envoy_proxy", "abiVersions": ["v0.2.1"]}), WASM_CONFIG)
    layer = layout.blob(wasm, WASM_LAYER, {TITLE: "plugin.wasm"})
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}
    manifests.append(layout.blob(canonical(manifest), OCI_MANIFEST, {REF_NAME: tag}))

    # The compat image: one layer, plugin.wasm at the root.
    tar = plugin_tar(wasm)
    gz = gzip.compress(tar, compresslevel=9, mtime=0)
    image_config = {
        # A Wasm module has no CPU architecture; registries and copy tools want one.
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
    }
    config = layout.blob(canonical(image_config), IMAGE_CONFIG)
    layer = layout.blob(gz, IMAGE_LAYER_GZIP)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}
    manifests.append(layout.blob(canonical(manifest), OCI_MANIFEST, {REF_NAME: f"{tag}-compat"}))

    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}, f, indent=2)

    wasm_sha = hashlib.sha256(wasm).hexdigest()
    print(f"{out}: OCI image layout (nothing is pushed)")
    print(f"  {tag:<16} Wasm artifact   manifest {manifests[0]['digest']}")
    print(f"  {tag + '-compat':<16} compat image    manifest {manifests[1]['digest']}")
    print(f"  module sha256 {wasm_sha} ({len(wasm)} bytes): WasmPlugin `sha256`, EnvoyFilter `remote.sha256`")
    print(f"push: skopeo copy oci:{out}:{tag} docker://REGISTRY/api-guard:{tag}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wasm", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tag", required=True)
    args = ap.parse_args()
    build(args.wasm, args.out, args.tag)


if __name__ == "__main__":
    main()
