"""`make image`: the OCI image layout in build/oci (IMAGE_DIR) holds the module in
the two forms Istio's fetcher accepts, with correct digests, sizes and media types."""
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.request

import pytest

import wasm_image
from conftest import ROOT

IMAGE_DIR = os.environ.get("IMAGE_DIR", os.path.join(ROOT, "build", "oci"))
WASM = os.environ.get("WASM", os.path.join(ROOT, "build", "api_guard.wasm"))


def blob(layout, desc):
    algo, hexdigest = desc["digest"].split(":")
    assert algo == "sha256"
    with open(os.path.join(layout, "blobs", "sha256", hexdigest), "rb") as f:
        data = f.read()
    assert hashlib.sha256(data).hexdigest() == hexdigest, desc
    assert len(data) == desc["size"], desc
    return data


def manifests(layout):
    with open(os.path.join(layout, "oci-layout")) as f:
        assert json.load(f) == {"imageLayoutVersion": "1.0.0"}
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == wasm_image.OCI_INDEX
    out = {}
    for desc in index["manifests"]:
        assert desc["mediaType"] == wasm_image.OCI_MANIFEST
        out[desc["annotations"][wasm_image.REF_NAME]] = json.loads(blob(layout, desc))
    return out


def test_layout_holds_the_wasm_artifact_and_the_compat_image():
    with open(WASM, "rb") as f:
        wasm = f.read()
    found = manifests(IMAGE_DIR)
    tags = sorted(found)
    assert len(tags) == 2 and tags[1] == tags[0] + "-compat", tags

    artifact = found[tags[0]]
    assert artifact["schemaVersion"] == 2 and artifact["mediaType"] == wasm_image.OCI_MANIFEST
    assert artifact["config"]["mediaType"] == "application/vnd.module.wasm.config.v1+json"
    json.loads(blob(IMAGE_DIR, artifact["config"]))
    (layer,) = artifact["layers"]
    assert layer["mediaType"] == "application/vnd.module.wasm.content.layer.v1+wasm"
    assert blob(IMAGE_DIR, layer) == wasm

    compat = found[tags[1]]
    assert compat["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    config = json.loads(blob(IMAGE_DIR, compat["config"]))
    (layer,) = compat["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    tar = gzip.decompress(blob(IMAGE_DIR, layer))
    assert config["rootfs"] == {"type": "layers",
                                "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]}
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        assert t.getnames() == ["plugin.wasm"]
        assert t.extractfile("plugin.wasm").read() == wasm


def test_same_module_same_digests(tmp_path):
    module = tmp_path / "m.wasm"
    module.write_bytes(b"\0asm\x01\0\0\0")
    for out in ("a", "b"):
        wasm_image.build(str(module), str(tmp_path / out), "1.2.3")
    assert (tmp_path / "a" / "index.json").read_text() == (tmp_path / "b" / "index.json").read_text()
    assert sorted(manifests(str(tmp_path / "a"))) == ["1.2.3", "1.2.3-compat"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not (shutil.which("skopeo") and shutil.which("docker-registry")),
                    reason="push round trip needs Debian's skopeo and docker-registry")
def test_skopeo_pushes_both_manifests_unchanged(tmp_path):
    port = free_port()
    cfg = tmp_path / "registry.yml"
    cfg.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path}/data\n"
                   f"http:\n  addr: 127.0.0.1:{port}\n")
    with open(tmp_path / "registry.log", "w") as log:
        registry = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=log,
                                    stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        with open(os.path.join(IMAGE_DIR, "index.json")) as f:
            index = json.load(f)
        for desc in index["manifests"]:
            tag = desc["annotations"][wasm_image.REF_NAME]
            subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                            f"oci:{IMAGE_DIR}:{tag}",
                            f"docker://127.0.0.1:{port}/platform/api-guard:{tag}"],
                           check=True, timeout=120)
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/v2/platform/api-guard/manifests/{tag}",
                headers={"Accept": wasm_image.OCI_MANIFEST})
            with urllib.request.urlopen(req, timeout=5) as r:
                body = r.read()
                assert r.headers["Docker-Content-Digest"] == desc["digest"]
            assert "sha256:" + hashlib.sha256(body).hexdigest() == desc["digest"]
    finally:
        registry.terminate()
        registry.wait(timeout=10)
