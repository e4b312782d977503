//! The importer on hand-written documents: what each part of a document becomes,
//! and the errors, each naming its place.

use super::*;
use serde_json::json;

const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","kid":"demo-1","x":"uJo1WyfYlDA41TCrm2z6P24C8u3zeUyoac-nS4CPLJI","y":"tWlhlPu5AKhHksW-Itl91H1zmrp9wr32-kClCpl8o1U"}]}"#;

fn provider() -> Value {
    json!({ "issuer": "https://idp.example.com/", "jwks": { "inline": serde_json::from_str::<Value>(JWKS).unwrap() } })
}

fn run(spec: Value) -> Output {
    run_with(spec, None, &Options::default())
}

fn run_with(spec: Value, overlay: Option<Value>, options: &Options) -> Output {
    match import(&spec, overlay.as_ref(), options) {
        Ok(out) => out,
        Err(e) => panic!("import failed: {e}"),
    }
}

fn error(spec: Value) -> String {
    error_with(spec, None, &Options::default())
}

fn error_with(spec: Value, overlay: Option<Value>, options: &Options) -> String {
    match import(&spec, overlay.as_ref(), options) {
        Ok(out) => panic!("import succeeded: {}", pretty(&out.config)),
        Err(e) => e.to_string(),
    }
}

fn doc(v: &str, paths: Value) -> Value {
    json!({ "openapi": v, "info": { "title": "Test API", "version": "1" }, "paths": paths })
}

fn route<'a>(out: &'a Output, name: &str) -> &'a Value {
    out.config["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("no route {name}: {}", pretty(&out.config)))
}

fn names(out: &Output) -> Vec<String> {
    out.config["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

fn ok() -> Value {
    json!({ "200": { "description": "ok" } })
}

#[test]
fn one_route_per_operation_named_safely_and_uniquely() {
    let mut spec = doc(
        "3.0.3",
        json!({
            "/pets": {
                "get": { "operationId": "listPets", "responses": ok() },
                "post": { "operationId": "pets.create (v2)", "responses": ok() },
                "x-note": "ignored"
            },
            "/pets/{pet-id}/": {
                "get": { "operationId": "listPets", "responses": ok() },
                "delete": { "responses": ok() },
                "put": { "operationId": "x".repeat(100), "responses": ok() }
            }
        }),
    );
    spec["servers"] = json!([{ "url": "https://{host}/api/{v}/", "variables": {
        "host": { "default": "h.example.com" }, "v": { "default": "v1" } } }]);
    let out = run(spec.clone());
    assert_eq!(out.config["unmatched"], "deny");
    let list = names(&out);
    assert!(list.contains(&"listPets".to_string()), "{list:?}");
    assert!(list.contains(&"listPets-2".to_string()), "{list:?}");
    assert!(list.contains(&"pets-create-v2".to_string()), "{list:?}");
    assert!(
        list.contains(&"delete-api-v1-pets-pet_id".to_string()),
        "{list:?}"
    );
    assert!(list.iter().all(|n| n.len() <= 64));
    assert_eq!(list.len(), 5);
    let r = route(&out, "listPets-2");
    assert_eq!(
        r["match"],
        json!({ "path": "/api/v1/pets/{pet_id}", "methods": ["GET"] })
    );
    // A template parameter without a parameter object is matched, not checked.
    assert_eq!(r["request"], json!({ "additional_query": "deny" }));
    // Another base path, or none.
    let other = Options {
        base_path: Some("/".into()),
        ..Options::default()
    };
    let out = run_with(spec.clone(), None, &other);
    assert_eq!(route(&out, "listPets")["match"]["path"], "/pets");
    let other = Options {
        base_path: Some("/gw/pets-api/".into()),
        ..Options::default()
    };
    let out = run_with(spec, None, &other);
    assert_eq!(
        route(&out, "listPets")["match"]["path"],
        "/gw/pets-api/pets"
    );
}

#[test]
fn routes_put_literals_before_parameters() {
    let op = |id: &str| json!({ "get": { "operationId": id, "responses": ok() } });
    let out = run(doc(
        "3.1.0",
        json!({
            "/users/{id}": op("user"),
            "/users/me": op("me"),
            "/files/{rest}": op("file"),
            "/files/{name}.json": op("json-file"),
            "/files/{name}.tar.gz": op("tarball"),
            "/files/index": op("index"),
            "/{a}/b": op("a-b"),
            "/x/{y}": op("x-y")
        }),
    ));
    assert_eq!(
        names(&out),
        [
            "index",
            "tarball",
            "json-file",
            "file",
            "me",
            "user",
            "x-y",
            "a-b"
        ]
    );
}

#[test]
fn parameters_merge_path_level_and_keep_what_the_filter_reads() {
    let spec = json!({
        "openapi": "3.0.0",
        "info": { "title": "t", "version": "1" },
        "paths": { "/items/{id}": {
            "parameters": [
                { "$ref": "#/components/parameters/Id" },
                { "name": "limit", "in": "query", "schema": { "type": "integer" } },
                { "name": "trace", "in": "header", "schema": { "type": "string" } }
            ],
            "get": {
                "operationId": "get",
                "parameters": [
                    { "name": "limit", "in": "query", "required": true, "schema": { "type": "integer", "maximum": 10 } },
                    { "name": "session", "in": "cookie", "schema": { "type": "string" } },
                    { "name": "Authorization", "in": "header", "schema": { "type": "string" } },
                    { "name": "q", "in": "query", "content": { "application/json": { "schema": { "type": "object" } } } },
                    { "name": "ids", "in": "query", "style": "pipeDelimited", "schema": { "type": "array" } }
                ],
                "responses": ok()
            },
            "post": {
                "operationId": "filter",
                "parameters": [{ "name": "filter", "in": "query", "schema": { "type": "object", "properties": { "a": { "type": "string" } } } }],
                "responses": ok()
            },
            "put": {
                "operationId": "deep",
                "parameters": [{ "name": "f", "in": "query", "style": "deepObject", "schema": { "$ref": "#/components/schemas/F" } }],
                "responses": ok()
            }
        } },
        "components": {
            "parameters": { "Id": { "name": "id", "in": "path", "required": true, "schema": { "$ref": "#/components/schemas/Id" } } },
            "schemas": { "Id": { "type": "integer", "minimum": 1 }, "F": { "type": "object" } }
        }
    });
    let out = run(spec);
    let get = route(&out, "get");
    assert_eq!(
        get["request"]["parameters"],
        json!([
            { "in": "path", "name": "id", "required": true,
              "schema": { "$ref": "https://openapi.invalid/t/components/schemas/Id" } },
            { "in": "header", "name": "trace", "schema": { "type": "string" } },
            { "in": "query", "name": "limit", "required": true, "schema": { "type": "integer", "maximum": 10 } },
            { "in": "query", "name": "q" },
            { "in": "query", "name": "ids" }
        ])
    );
    assert_eq!(get["request"]["additional_query"], "deny");
    // An exploded object's fields are query keys of their own; so are deepObject's.
    assert!(route(&out, "filter")["request"]
        .get("additional_query")
        .is_none());
    assert!(route(&out, "deep")["request"]
        .get("additional_query")
        .is_none());
    let warnings = out.warnings.join("\n");
    for what in [
        "cookie parameter `session`",
        "`q`: values described by `content`",
        "style `pipeDelimited`",
        "exploded object",
        "deepObject",
    ] {
        assert!(warnings.contains(what), "{what}: {warnings}");
    }
    assert_eq!(
        out.config["schemas"],
        json!([{ "$id": "https://openapi.invalid/t/components/schemas/Id", "type": "integer", "minimum": 1 }])
    );
    let allow = Options {
        deny_additional_query: false,
        ..Options::default()
    };
    let spec = doc(
        "3.0.0",
        json!({ "/a": { "get": { "operationId": "a", "responses": ok() } } }),
    );
    assert!(route(&run_with(spec.clone(), None, &allow), "a")
        .get("request")
        .is_none());
    assert_eq!(
        route(&run(spec), "a")["request"],
        json!({ "additional_query": "deny" })
    );
}

#[test]
fn schemas_30_are_translated_to_2020_12() {
    let spec = json!({
        "openapi": "3.0.3",
        "info": { "title": "t", "version": "1" },
        "paths": { "/a": { "post": {
            "operationId": "a",
            "requestBody": { "content": { "application/json": { "schema": {
                "type": "object",
                "required": ["id", "name", "age", "tag"],
                "x-internal": true,
                "example": { "name": "x" },
                "properties": {
                    "id": { "type": "integer", "readOnly": true },
                    "name": { "type": "string", "nullable": true, "x-order": 1 },
                    "age": { "type": "integer", "minimum": 0, "exclusiveMinimum": true, "maximum": 150, "exclusiveMaximum": false },
                    "tag": { "$ref": "#/components/schemas/Tag", "description": "ignored in 3.0" },
                    "kind": { "enum": ["a", "b"], "nullable": true },
                    "owner": { "allOf": [{ "$ref": "#/components/schemas/Tag" }], "nullable": true },
                    "x-literal": { "type": "string" }
                }
            } } } },
            "responses": ok()
        } } },
        "components": { "schemas": { "Tag": { "type": "string", "readOnly": false } } }
    });
    let out = run(spec);
    let tag = "https://openapi.invalid/t/components/schemas/Tag";
    assert_eq!(
        route(&out, "a")["request"]["schema"],
        json!({
            "type": "object",
            "required": ["name", "age", "tag"],
            "properties": {
                "id": { "type": "integer", "readOnly": true },
                "name": { "type": ["string", "null"] },
                "age": { "type": "integer", "exclusiveMinimum": 0, "maximum": 150 },
                "tag": { "$ref": tag },
                "kind": { "enum": ["a", "b", null] },
                "owner": { "anyOf": [{ "allOf": [{ "$ref": tag }] }, { "type": "null" }] },
                "x-literal": { "type": "string" }
            }
        })
    );
    assert_eq!(
        route(&out, "a")["request"]["content_types"],
        json!(["application/json"])
    );
}

#[test]
fn refs_31_keep_their_siblings_and_components_recurse_by_id() {
    let spec = json!({
        "openapi": "3.1.0",
        "info": { "title": "Tree API!", "version": "1" },
        "paths": { "/nodes": { "post": {
            "operationId": "add",
            "requestBody": { "content": { "application/json": { "schema": {
                "$ref": "#/components/schemas/Node", "required": ["children"]
            } } } },
            "responses": ok()
        } }, "/leaf": { "put": {
            "operationId": "leaf",
            "requestBody": { "content": { "application/merge-patch+json": { "schema": {
                "$ref": "#/components/schemas/Node/properties/value"
            } } } },
            "responses": ok()
        } } },
        "components": { "schemas": {
            "Node": { "type": "object", "properties": {
                "value": { "type": "integer" },
                "children": { "type": "array", "items": { "$ref": "#/components/schemas/Node" } },
                "meta": { "$ref": "#/components/schemas/Meta" }
            } },
            "Meta": { "type": ["object", "null"] },
            "Unused": { "type": "string" }
        } }
    });
    let out = run(spec);
    let id = "https://openapi.invalid/tree-api/components/schemas/Node";
    assert_eq!(
        route(&out, "add")["request"]["schema"],
        json!({ "$ref": id, "required": ["children"] })
    );
    assert_eq!(
        route(&out, "leaf")["request"]["schema"],
        json!({ "$ref": format!("{id}#/properties/value") })
    );
    assert_eq!(
        route(&out, "leaf")["request"]["content_types"],
        json!(["application/merge-patch+json"])
    );
    let ids: Vec<&str> = out.config["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["$id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "https://openapi.invalid/tree-api/components/schemas/Meta",
            id
        ]
    );
}

#[test]
fn references_that_cannot_be_followed_name_their_place() {
    let body = |schema: Value| {
        json!({
            "openapi": "3.0.0",
            "info": { "title": "t", "version": "1" },
            "paths": { "/a": { "post": {
                "operationId": "a",
                "requestBody": { "content": { "application/json": { "schema": schema } } },
                "responses": ok()
            } } },
            "components": {
                "schemas": { "A": { "type": "string" } },
                "parameters": { "Loop": { "name": "l", "in": "query", "schema": { "$ref": "#/components/parameters/Loop/schema" } } }
            }
        })
    };
    let at = "#/paths/~1a/post/requestBody/content/application~1json/schema";
    assert_eq!(
        error(body(json!({ "$ref": "common.yaml#/Pet" }))),
        format!("{at}/$ref: \"common.yaml#/Pet\" refers outside this document; bundle the document into one file first (for example `redocly bundle`)")
    );
    assert_eq!(
        error(body(json!({ "$ref": "#/components/schemas/B" }))),
        format!("{at}/$ref: \"#/components/schemas/B\": no such schema")
    );
    assert_eq!(
        error(body(json!({ "$ref": "#/nowhere" }))),
        format!("{at}/$ref: \"#/nowhere\": nothing at this place")
    );
    assert!(error(body(json!({ "$ref": "#/components/parameters/Loop/schema" })))
        .starts_with("#/components/parameters/Loop/schema/$ref: \"#/components/parameters/Loop/schema\" leads back to itself"));
    let e = error(body(
        json!({ "type": "object", "properties": { "n": { "type": "integre" } } }),
    ));
    assert!(
        e.starts_with("#/paths/~1a/post: the filter refuses the generated configuration: routes[0].request.schema: not a valid JSON Schema"),
        "{e}"
    );
    let e = error(body(json!({ "allOf": 5 })));
    assert_eq!(e, format!("{at}/allOf: must be an array of schemas"));
}

#[test]
fn security_becomes_auth_with_providers_of_the_same_name() {
    let spec = json!({
        "openapi": "3.0.3",
        "info": { "title": "t", "version": "1" },
        "security": [{ "oauth": ["read", "write"] }],
        "x-api-guard": { "providers": { "oauth": provider(), "key": provider() }, "metrics_flush_ms": 250 },
        "paths": {
            "/a": { "get": { "operationId": "default", "responses": ok() } },
            "/b": { "get": { "operationId": "public", "security": [], "responses": ok() } },
            "/c": { "get": { "operationId": "either", "security": [{ "oauth": [] }, { "key": [] }], "responses": ok() } },
            "/d": { "get": { "operationId": "both", "security": [{ "oauth": ["admin"], "key": [] }], "responses": ok() } },
            "/e": { "get": { "operationId": "optional", "security": [{ "key": [] }, {}], "responses": ok() } }
        },
        "components": { "securitySchemes": {
            "oauth": { "type": "oauth2", "flows": {} },
            "key": { "type": "apiKey", "in": "query", "name": "api_key" }
        } }
    });
    let out = run(spec.clone());
    assert_eq!(out.config["metrics_flush_ms"], 250);
    assert_eq!(
        route(&out, "default")["auth"],
        json!({ "requires": "oauth", "claims": { "scope": { "all_of": ["read", "write"] } } })
    );
    assert!(route(&out, "public").get("auth").is_none());
    assert_eq!(
        route(&out, "either")["auth"],
        json!({ "requires": { "any": ["oauth", "key"] } })
    );
    assert_eq!(
        route(&out, "either")["request"]["parameters"],
        json!([{ "in": "query", "name": "api_key" }])
    );
    assert_eq!(
        route(&out, "both")["auth"],
        json!({ "requires": { "all": ["key", "oauth"] }, "claims": { "scope": { "all_of": ["admin"] } } })
    );
    assert_eq!(
        route(&out, "optional")["auth"],
        json!({ "requires": "key", "allow_missing": true })
    );

    let mut no_provider = spec.clone();
    no_provider["x-api-guard"]["providers"] = json!({ "oauth": provider() });
    assert!(error(no_provider).starts_with(
        "#/components/securitySchemes/key: no provider named `key` verifies this scheme"
    ));
    // The overlay supplies what the document lacks.
    let mut bare = spec.clone();
    bare.as_object_mut().unwrap().remove("x-api-guard");
    let out = run_with(
        bare.clone(),
        Some(json!({ "providers": { "oauth": provider(), "key": provider() } })),
        &Options::default(),
    );
    assert_eq!(route(&out, "default")["auth"]["requires"], "oauth");
    let mut mixed = spec.clone();
    mixed["paths"]["/f"] = json!({ "get": { "operationId": "f", "security": [{ "oauth": ["a"] }, { "key": [] }], "responses": ok() } });
    assert!(error(mixed)
        .starts_with("#/paths/~1f/get/security: the alternatives require different scopes"));
    let mut unknown = spec;
    unknown["paths"]["/g"] =
        json!({ "get": { "operationId": "g", "security": [{ "nope": [] }], "responses": ok() } });
    assert_eq!(
        error(unknown),
        "#/paths/~1g/get/security/0/nope: no security scheme named `nope` in components/securitySchemes"
    );
}

#[test]
fn bodies_json_only_and_combined_schemas() {
    let spec = json!({
        "openapi": "3.0.3",
        "info": { "title": "t", "version": "1" },
        "paths": {
            "/form": { "post": { "operationId": "form", "requestBody": { "content": {
                "application/json": { "schema": { "type": "object" } },
                "application/x-www-form-urlencoded": { "schema": { "type": "object" } } } }, "responses": ok() } },
            "/two": { "post": { "operationId": "two", "requestBody": { "content": {
                "application/json": { "schema": { "type": "object" } },
                "application/vnd.api+json; charset=utf-8": { "schema": { "type": "array" } } } }, "responses": ok() } },
            "/any": { "post": { "operationId": "any", "requestBody": { "content": {
                "application/json": {} } }, "responses": ok() } }
        }
    });
    let out = run(spec.clone());
    assert_eq!(
        route(&out, "form")["request"],
        json!({ "additional_query": "deny" })
    );
    assert!(out
        .warnings
        .iter()
        .any(|w| w.contains("application/x-www-form-urlencoded cannot be checked")));
    assert_eq!(
        route(&out, "two")["request"],
        json!({
            "additional_query": "deny",
            "content_types": ["application/json", "application/vnd.api+json"],
            "schema": { "anyOf": [{ "type": "object" }, { "type": "array" }] }
        })
    );
    assert_eq!(
        route(&out, "any")["request"],
        json!({ "additional_query": "deny", "content_types": ["application/json"] })
    );
    let json_only = Options {
        json_only: true,
        ..Options::default()
    };
    let out = run_with(spec, None, &json_only);
    assert_eq!(
        route(&out, "form")["request"]["content_types"],
        json!(["application/json"])
    );
}

#[test]
fn extensions_and_the_overlay_merge_into_the_configuration() {
    let spec = json!({
        "openapi": "3.1.0",
        "info": { "title": "t", "version": "1" },
        "x-api-guard": {
            "mode": "report",
            "security_headers": { "frame_options": "SAMEORIGIN" },
            "routes": [{ "name": "health", "match": { "path": "/healthz" } }]
        },
        "paths": { "/a/{id}": {
            "x-api-guard": { "quota": { "limit": 5, "window_seconds": 60 } },
            "get": {
                "operationId": "getA",
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "x-api-guard": { "mode": "enforce", "request": { "additional_query": null } },
                "responses": ok()
            },
            "delete": { "operationId": "delA", "responses": ok() }
        } }
    });
    let overlay = json!({
        "security_headers": { "referrer_policy": "same-origin" },
        "audit": { "records": "all", "pseudonym_key": "0123456789abcdef0123" },
        "operations": { "delA": { "quota": { "limit": 1 } } }
    });
    let out = run_with(spec.clone(), Some(overlay), &Options::default());
    let c = &out.config;
    assert_eq!(c["mode"], "report");
    assert_eq!(
        c["security_headers"],
        json!({ "frame_options": "SAMEORIGIN", "referrer_policy": "same-origin" })
    );
    assert_eq!(c["audit"]["records"], "all");
    assert_eq!(names(&out), ["health", "getA", "delA"]);
    let get = route(&out, "getA");
    assert_eq!(get["mode"], "enforce");
    assert_eq!(get["quota"], json!({ "limit": 5, "window_seconds": 60 }));
    assert!(get["request"].get("additional_query").is_none());
    assert_eq!(
        route(&out, "delA")["quota"],
        json!({ "limit": 1, "window_seconds": 60 })
    );
    assert_eq!(
        error_with(
            spec.clone(),
            Some(json!({ "operations": { "nope": {} } })),
            &Options::default()
        ),
        "#/x-api-guard/operations/nope: no operation has this operationId or route name"
    );
    assert_eq!(
        error_with(spec.clone(), Some(json!({ "mode": "sometimes" })), &Options::default()),
        "#/x-api-guard: the filter refuses the generated configuration: mode: unknown variant `sometimes`, expected `enforce` or `report`"
    );
    let mut bad = spec;
    bad["paths"]["/a/{id}"]["get"]["x-api-guard"] =
        json!({ "quota": { "limit": 0, "window_seconds": 1 } });
    assert!(error(bad).starts_with("#/paths/~1a~1{id}/get: the filter refuses the generated configuration: routes[1].quota.limit:"));
}

#[test]
fn documents_that_are_not_openapi_3_are_refused() {
    assert_eq!(
        error(json!({ "swagger": "2.0" })),
        "#/swagger: Swagger 2.0 is not supported; convert the document to OpenAPI 3 first"
    );
    assert_eq!(
        error(json!({ "openapi": "4.0.0" })),
        "#/openapi: version 4.0.0 is not supported; expected 3.0.x or 3.1.x"
    );
    assert_eq!(
        error(json!([1])),
        "#: not an OpenAPI document: no `openapi` version string"
    );
    assert_eq!(
        error(json!({ "openapi": "3.0.0", "paths": [] })),
        "#/paths: must be an array".replace("an array", "an object")
    );
    assert_eq!(
        error(doc("3.0.0", json!({ "pets": { "get": {} } }))),
        "#/paths/pets: a path must start with '/'"
    );
    assert_eq!(
        error(doc(
            "3.0.0",
            json!({ "/a": { "get": { "parameters": [{ "in": "query" }] } } })
        )),
        "#/paths/~1a/get/parameters/0: a parameter needs a `name` string"
    );
    assert!(error(doc("3.0.0", json!({ "/a;b": { "get": {} } })))
        .starts_with("#/paths/~1a;b/get: the filter refuses the generated configuration: routes[0].match.path:"));
    let out = run(doc("3.1.0", Value::Null));
    assert_eq!(out.config["routes"], json!([]));
}

/// Every place of a real document replaced by values of the wrong kind: the import
/// answers (a configuration or an error with a place), and never panics.
#[test]
fn malformed_documents_never_panic() {
    let text = include_str!("../specs/oas-examples/petstore.json");
    let spec = load::parse(text).unwrap();
    let overlay = load::parse(include_str!("../specs/overlays/petstore.yaml")).unwrap();
    let mut pointers = Vec::new();
    collect(&spec, String::new(), &mut pointers);
    let wrong = [
        json!(null),
        json!(7),
        json!("x"),
        json!([]),
        json!({}),
        json!({ "$ref": "#" }),
    ];
    let mut errors = 0;
    for p in &pointers {
        for w in &wrong {
            let mut changed = spec.clone();
            if let Some(slot) = changed.pointer_mut(p) {
                *slot = w.clone();
            }
            if let Err(e) = import(&changed, Some(&overlay), &Options::default()) {
                assert!(e.pointer.starts_with('#'), "{p}: {e}");
                errors += 1;
            }
        }
    }
    assert!(
        pointers.len() > 500 && errors > 100,
        "{} places, {errors} errors",
        pointers.len()
    );
}

fn collect(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                let here = format!("{at}/{}", escape(k));
                out.push(here.clone());
                collect(v, here, out);
            }
        }
        Value::Array(list) => {
            for (i, v) in list.iter().enumerate() {
                let here = format!("{at}/{i}");
                out.push(here.clone());
                collect(v, here, out);
            }
        }
        _ => {}
    }
}
