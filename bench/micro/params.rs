#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Cost of `ParamPolicy::check` at request headers: the `params` scenario of
//! `bench/run.py` (a path parameter, three query parameters one of which is an
//! array, a header, `additional_query: deny`), natively, with its parts.
//!
//! `cargo bench --bench params`
//!
//! In V8 (Node 20, as for `schema_validate`):
//! `cargo bench --bench params --target wasm32-wasip1 --no-run`, then
//! `node bench/micro/wasi_run.js target/wasm32-wasip1/release/deps/params-*.wasm`.
//!
//! A plain timing loop: five rounds per case, the best and the median round in µs
//! per call.

use api_guard::api::{param_policy, ParamInputs, ParamPolicy, SchemaRegistry};
use serde_json::json;
use std::hint::black_box;

#[path = "rounds.rs"]
mod rounds;
use rounds::time;

fn policy(parameters: serde_json::Value) -> ParamPolicy {
    let request = json!({ "additional_query": "deny", "parameters": parameters });
    param_policy(&request, "/api/items/{id}", &SchemaRegistry::default())
        .unwrap()
        .unwrap()
}

fn main() {
    let all = policy(json!([
        { "in": "path", "name": "id", "schema": { "type": "integer", "minimum": 1 } },
        { "in": "query", "name": "limit", "schema": { "type": "integer", "maximum": 100 } },
        { "in": "query", "name": "tag", "schema": { "type": "array", "maxItems": 5,
            "items": { "type": "string", "pattern": "^[a-z]{1,16}$" } } },
        { "in": "query", "name": "active", "schema": { "type": "boolean" } },
        { "in": "header", "name": "x-correlation-id", "required": true,
          "schema": { "type": "string", "pattern": "^[0-9a-f-]{36}$" } }
    ]));
    let one = policy(
        json!([{ "in": "query", "name": "limit", "schema": { "type": "integer", "maximum": 100 } }]),
    );
    let deny_only = policy(json!([]));
    let path = vec![("id".into(), "42".to_string())];
    let header = |name: &str| {
        (name == "x-correlation-id").then(|| "0b7e4a5c-1f2d-4c3b-9a8e-7d6c5b4a3f21".to_string())
    };
    let query = "limit=10&tag=a,b&active=true";
    let inputs = ParamInputs {
        path: &path,
        query,
        header: &header,
    };
    assert!(all.check(&inputs).is_ok());
    let bad = ParamInputs {
        path: &path,
        query: "limit=1000&debug=1",
        header: &header,
    };
    assert!(all.check(&bad).is_err());
    time(
        "scenario `params` (5 parameters, deny), valid",
        200_000,
        || {
            black_box(all.check(black_box(&inputs))).ok();
        },
    );
    time("scenario `params`, refused (2 errors)", 200_000, || {
        black_box(all.check(black_box(&bad))).ok();
    });
    time("one integer query parameter", 500_000, || {
        black_box(one.check(black_box(&ParamInputs {
            path: &path,
            query: "limit=10",
            header: &header,
        })))
        .ok();
    });
    time(
        "additional_query: deny alone, empty query",
        1_000_000,
        || {
            black_box(deny_only.check(black_box(&ParamInputs {
                path: &path,
                query: "",
                header: &header,
            })))
            .ok();
        },
    );
}
