//! The importer binary on real public documents (`specs/oas-examples`, each of a
//! different shape: see its README): every import succeeds, prints only the
//! configuration on standard output, a route per operation, and the filter
//! compiles the result. Envoy itself loads them in `tests/e2e/test_openapi.py`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_api-guard-openapi");
const SPECS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/specs");

/// (document, overlay, operations in the document)
const CASES: &[(&str, Option<&str>, usize)] = &[
    ("petstore.json", Some("petstore.yaml"), 20),
    ("petstore-expanded.yaml", None, 4),
    ("polymorphism.json", None, 13),
    ("schema-circular.json", None, 3),
    ("security.json", Some("security.yaml"), 15),
    ("star-trek.json", None, 120),
    ("train-travel.json", Some("train-travel.yaml"), 7),
    ("webhooks.yaml", None, 0),
];

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn every_real_document_imports_into_a_configuration_the_filter_loads() {
    for (spec, overlay, operations) in CASES {
        let path = format!("{SPECS}/oas-examples/{spec}");
        let mut args = vec![path.as_str()];
        let overlay_path = overlay.map(|o| format!("{SPECS}/overlays/{o}"));
        if let Some(o) = &overlay_path {
            args.extend(["--overlay", o.as_str()]);
        }
        let (code, stdout, stderr) = run(&args);
        assert_eq!(code, 0, "{spec}: {stderr}");
        assert!(
            stderr.lines().all(|l| l.starts_with("warning: ")),
            "{spec}: {stderr}"
        );
        let config: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(config["unmatched"], "deny", "{spec}");
        let own = config["routes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["name"] != "health")
            .count();
        assert_eq!(own, *operations, "{spec}");
        assert_eq!(
            api_guard::api::check_config(stdout.as_bytes()),
            Ok(*operations),
            "{spec}"
        );
        // Quiet: nothing but the configuration.
        args.push("--quiet");
        let (code, quiet, stderr) = run(&args);
        assert_eq!((code, stderr.as_str()), (0, ""), "{spec}");
        assert_eq!(quiet, stdout, "{spec}: the output is deterministic");
    }
}

#[test]
fn errors_exit_non_zero_with_the_place() {
    let dir = std::env::temp_dir().join(format!("api-guard-openapi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    post:\n      requestBody:\n        content:\n          application/json:\n            schema: {$ref: 'other.yaml#/Pet'}\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(&[bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(stdout, "");
    assert!(
        stderr.contains("#/paths/~1a/post/requestBody/content/application~1json/schema/$ref: \"other.yaml#/Pet\" refers outside this document"),
        "{stderr}"
    );
    // A document with security but no provider for it.
    let (code, _, stderr) = run(&[&format!("{SPECS}/oas-examples/petstore.json")]);
    assert_eq!(code, 1);
    assert!(stderr.contains("#/components/securitySchemes/"), "{stderr}");
    let (code, _, stderr) = run(&["/nonexistent/spec.yaml"]);
    assert_eq!(code, 1, "{stderr}");
    let (code, _, stderr) = run(&[]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = run(&["a.yaml", "--additional-query", "sometimes"]);
    assert_eq!(code, 2, "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
