use super::*;
use crate::config::ConfigError;
use serde_json::json;

const AT: &str = "routes[0].request";

fn compile_with(
    template: &str,
    params: Value,
    additional_query: Option<&str>,
    schemas: Value,
) -> Result<Option<ParamPolicy>, ConfigError> {
    let entries = schemas.as_array().cloned().unwrap_or_default();
    let registry = SchemaRegistry::compile(&entries)?;
    let params: Vec<Value> = params.as_array().cloned().unwrap_or_default();
    let template = match PathTemplate::parse(template, "t") {
        Ok(t) => t,
        Err(e) => unreachable!("{e}"),
    };
    ParamPolicy::compile(&params, additional_query, &template, &registry, false, AT)
}

fn policy(template: &str, params: Value, additional_query: Option<&str>) -> ParamPolicy {
    match compile_with(template, params, additional_query, json!([])) {
        Ok(Some(p)) => p,
        Ok(None) => unreachable!("nothing to check"),
        Err(e) => unreachable!("{e}"),
    }
}

fn config_error(template: &str, params: Value, additional_query: Option<&str>) -> String {
    match compile_with(template, params, additional_query, json!([])) {
        Ok(_) => "<ok>".to_string(),
        Err(e) => e.to_string(),
    }
}

/// `in name keyword` of each failure (with the instance path when there is one),
/// or `ok`.
fn check(p: &ParamPolicy, path: &[(&str, &str)], query: &str, headers: &[(&str, &str)]) -> String {
    let path: Params = path
        .iter()
        .map(|(n, v)| ((*n).into(), v.to_string()))
        .collect();
    let header = |name: &str| {
        let values: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    match p.check(&ParamInputs {
        path: &path,
        query,
        header: &header,
    }) {
        Ok(()) => "ok".to_string(),
        Err(Rejection::InvalidParameter { errors }) => errors
            .iter()
            .map(|e| {
                let at = if e.error.instance_path.is_empty() {
                    String::new()
                } else {
                    e.error.instance_path.clone()
                };
                format!("{} {}{at} {}", e.location, e.name, e.error.keyword)
            })
            .collect::<Vec<_>>()
            .join(", "),
        Err(other) => format!("unexpected {other:?}"),
    }
}

fn q(p: &ParamPolicy, query: &str) -> String {
    check(p, &[], query, &[])
}

#[test]
fn query_values_take_the_type_of_their_schema() {
    let p = policy(
        "/items",
        json!([
            { "in": "query", "name": "limit", "schema": { "type": "integer", "minimum": 1, "maximum": 100 } },
            { "in": "query", "name": "price", "schema": { "type": "number", "exclusiveMinimum": 0 } },
            { "in": "query", "name": "open", "schema": { "type": "boolean" } },
            { "in": "query", "name": "code", "schema": { "type": "string", "pattern": "^[0-9]{3}$" } },
            { "in": "query", "name": "any" }
        ]),
        None,
    );
    let cases = [
        ("", "ok"),
        ("limit=5", "ok"),
        ("limit=100&price=0.5&open=true&code=007", "ok"),
        ("limit=0", "query limit minimum"),
        ("limit=101", "query limit maximum"),
        ("limit=5.5", "query limit type"),
        ("limit=five", "query limit type"),
        ("limit=", "query limit type"),
        ("limit=1e1", "ok"),
        ("limit=%35", "ok"),
        // Not exactly a 64-bit float: a string, so the integer type fails.
        ("limit=9007199254740993", "query limit type"),
        ("price=0", "query price exclusiveMinimum"),
        ("price=-1", "query price exclusiveMinimum"),
        ("open=false", "ok"),
        ("open=True", "query open type"),
        ("open=1", "query open type"),
        // A string schema keeps the digits as text.
        ("code=12", "query code pattern"),
        ("code=123", "ok"),
        ("any=%FF", "query any encoding"),
        ("any=a+b", "ok"),
        ("limit=1&limit=2", "query limit repeated"),
        (
            "limit=0&price=0",
            "query limit minimum, query price exclusiveMinimum",
        ),
        ("unknown=1&limit=1", "ok"),
        ("&&limit=1&", "ok"),
    ];
    for (query, want) in cases {
        assert_eq!(q(&p, query), want, "?{query}");
    }
}

#[test]
fn arrays_are_comma_separated_or_repeated_keys() {
    let p = policy(
        "/items/{ids}",
        json!([
            { "in": "query", "name": "tag", "schema": { "type": "array", "items": { "type": "integer" }, "maxItems": 3 } },
            { "in": "header", "name": "x-flags", "schema": { "type": "array", "items": { "type": "boolean" } } },
            { "in": "path", "name": "ids", "schema": { "type": "array", "items": { "type": "integer", "minimum": 1 } } },
            { "in": "query", "name": "s", "schema": { "type": "array", "items": { "type": "string", "maxLength": 3 } } }
        ]),
        None,
    );
    let ok = [("ids", "1,2")];
    assert_eq!(check(&p, &ok, "tag=1,2&tag=3", &[]), "ok");
    assert_eq!(
        check(&p, &ok, "tag=1&tag=2&tag=3&tag=4", &[]),
        "query tag maxItems"
    );
    assert_eq!(check(&p, &ok, "tag=1,x", &[]), "query tag/1 type");
    assert_eq!(check(&p, &ok, "tag=", &[]), "ok");
    // `%2C` stays inside an item.
    assert_eq!(check(&p, &ok, "s=a%2Cb", &[]), "ok");
    assert_eq!(check(&p, &ok, "s=abcd,a", &[]), "query s/0 maxLength");
    assert_eq!(check(&p, &ok, "", &[("x-flags", "true, false")]), "ok");
    assert_eq!(
        check(&p, &ok, "", &[("x-flags", "true"), ("X-Flags", "no")]),
        "header x-flags/1 type"
    );
    assert_eq!(check(&p, &[("ids", "1,0")], "", &[]), "path ids/1 minimum");
    assert_eq!(check(&p, &[("ids", "7")], "", &[]), "ok");
}

#[test]
fn required_headers_and_path_parameters() {
    let p = policy(
        "/shops/{shop}/files/{name}.json",
        json!([
            { "in": "header", "name": "X-Correlation-Id", "required": true,
              "schema": { "type": "string", "pattern": "^[0-9a-f-]{36}$" } },
            { "in": "path", "name": "shop", "schema": { "type": "integer", "minimum": 1 } },
            { "in": "path", "name": "name", "schema": { "type": "string", "maxLength": 4 } },
            { "in": "query", "name": "q", "required": true }
        ]),
        None,
    );
    let id = ("x-correlation-id", "0b7e4a5c-1f2d-4c3b-9a8e-7d6c5b4a3f21");
    let path = [("shop", "12"), ("name", "abc")];
    assert_eq!(check(&p, &path, "q=", &[id]), "ok");
    assert_eq!(
        check(&p, &path, "", &[]),
        "header x-correlation-id required, query q required"
    );
    assert_eq!(
        check(&p, &path, "q=1", &[("x-correlation-id", "nope")]),
        "header x-correlation-id pattern"
    );
    assert_eq!(
        check(&p, &[("shop", "0"), ("name", "abcde")], "q", &[id]),
        "path shop minimum, path name maxLength"
    );
    assert_eq!(
        check(&p, &[("shop", "s1"), ("name", "a")], "q", &[id]),
        "path shop type"
    );
}

#[test]
fn undeclared_query_parameters_under_deny() {
    let p = policy(
        "/search",
        json!([{ "in": "query", "name": "q", "schema": { "type": "string" } }]),
        Some("deny"),
    );
    assert_eq!(q(&p, "q=x"), "ok");
    assert_eq!(q(&p, ""), "ok");
    assert_eq!(q(&p, "q=x&debug=1"), "query debug additional_query");
    // Names compare exactly: a case variant is another parameter.
    assert_eq!(q(&p, "Q=x"), "query Q additional_query");
    assert_eq!(q(&p, "a%20b=1"), "query a b additional_query");
    assert_eq!(
        q(&p, "%zz=1"),
        "query (not valid percent-encoded UTF-8) additional_query"
    );
    // Only deny, no parameters: still compiled.
    let bare = policy("/x", json!([]), Some("deny"));
    assert_eq!(q(&bare, "a=1"), "query a additional_query");
    assert_eq!(q(&bare, ""), "ok");
    let many: String = (0..50).map(|i| format!("k{i}=1&")).collect();
    let Err(Rejection::InvalidParameter { errors }) = bare.check(&ParamInputs {
        path: &Params::new(),
        query: &many,
        header: &|_: &str| None,
    }) else {
        unreachable!()
    };
    assert_eq!(errors.len(), MAX_SCHEMA_ERRORS);
}

#[test]
fn errors_never_quote_the_value() {
    let p = policy(
        "/x",
        json!([
            { "in": "query", "name": "a", "schema": { "type": "string", "enum": ["one", "two"] } },
            { "in": "header", "name": "x-b", "schema": { "const": "fixed" } },
            { "in": "query", "name": "c", "schema": { "type": "string", "maxLength": 2 } }
        ]),
        Some("deny"),
    );
    let secret = "s3cr3t-VALUE";
    let r = p.check(&ParamInputs {
        path: &Params::new(),
        query: &format!("a={secret}&c={secret}&other={secret}"),
        header: &|_: &str| Some(secret.to_string()),
    });
    let Err(rejection) = r else { unreachable!() };
    let body = String::from_utf8(rejection.render().body).unwrap_or_default();
    assert!(!body.contains(secret), "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(doc["status"], 400);
    assert_eq!(doc["type"], "urn:api-guard:problem:invalid-parameter");
    let named: Vec<(&str, &str)> = doc["errors"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    (
                        e["in"].as_str().unwrap_or(""),
                        e["name"].as_str().unwrap_or(""),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        named,
        [
            ("query", "other"),
            ("query", "a"),
            ("header", "x-b"),
            ("query", "c")
        ]
    );
}

#[test]
fn types_are_found_through_refs_and_combinators() {
    let schemas = json!([{
        "$id": "https://schemas.example.com/common.json",
        "$defs": {
            "Limit": { "type": "integer", "maximum": 10 },
            "Ids": { "type": "array", "items": { "$ref": "#/$defs/Id" } },
            "Id": { "type": "integer" }
        }
    }]);
    let p = match compile_with(
        "/x",
        json!([
            { "in": "query", "name": "limit", "schema": { "$ref": "https://schemas.example.com/common.json#/$defs/Limit" } },
            { "in": "query", "name": "ids", "schema": { "$ref": "https://schemas.example.com/common.json#/$defs/Ids" } },
            { "in": "query", "name": "either", "schema": { "anyOf": [{ "type": "integer" }, { "type": "boolean" }] } },
            { "in": "query", "name": "local", "schema": { "$ref": "#/$defs/n", "$defs": { "n": { "type": "number" } } } },
            { "in": "query", "name": "level", "schema": { "enum": [1, 2, 3] } }
        ]),
        None,
        schemas,
    ) {
        Ok(Some(p)) => p,
        other => unreachable!("{other:?}"),
    };
    assert_eq!(q(&p, "limit=3&ids=1,2&either=true&local=1.5&level=2"), "ok");
    assert_eq!(q(&p, "limit=11"), "query limit maximum");
    assert_eq!(q(&p, "ids=1,a"), "query ids/1 type");
    assert_eq!(q(&p, "either=7"), "ok");
    assert_eq!(q(&p, "either=x"), "query either anyOf");
    assert_eq!(q(&p, "level=4"), "query level enum");
}

#[test]
fn configuration_errors_name_the_field() {
    let cases = [
        (
            json!([{ "in": "cookie", "name": "s" }]),
            "routes[0].request.parameters[0].in: cookie parameters are not supported",
        ),
        (
            json!([{ "in": "body", "name": "s" }]),
            "routes[0].request.parameters[0].in: unknown variant `body`",
        ),
        (
            json!([{ "in": "path", "name": "nope" }]),
            "routes[0].request.parameters[0].name: \"nope\" is not a parameter of the route's template",
        ),
        (
            json!([{ "in": "header", "name": "bad header" }]),
            "routes[0].request.parameters[0].name: ",
        ),
        (
            json!([{ "in": "query", "name": "" }]),
            "routes[0].request.parameters[0].name: must be a non-empty name",
        ),
        (
            json!([{ "in": "header", "name": "X-A" }, { "in": "header", "name": "x-a" }]),
            "routes[0].request.parameters[1].name: the same parameter as parameters[0]",
        ),
        (
            json!([{ "in": "query", "name": "f", "schema": { "type": "object" } }]),
            "routes[0].request.parameters[0].schema: an object parameter cannot be read",
        ),
        (
            json!([{ "in": "query", "name": "f", "schema": { "type": "nonsense" } }]),
            "routes[0].request.parameters[0].schema: not a valid JSON Schema",
        ),
        (
            json!([{ "in": "query", "name": "f", "schema": { "$ref": "https://nowhere.example/x" } }]),
            "routes[0].request.parameters[0].schema: cannot resolve",
        ),
    ];
    let cases = cases.into_iter().chain([
        (
            json!([{ "in": "query", "name": "q", "style": "form" }]),
            "routes[0].request.parameters[0].style: unknown field `style`",
        ),
        (
            json!([{ "in": "query" }]),
            "routes[0].request.parameters[0]: missing field `name`",
        ),
        (
            json!([{ "in": "query", "name": 7 }]),
            "routes[0].request.parameters[0].name: invalid type",
        ),
        (
            json!([{ "in": "query", "name": "q", "required": "yes" }]),
            "routes[0].request.parameters[0].required: invalid type",
        ),
        (
            json!(["q"]),
            "routes[0].request.parameters[0]: invalid type",
        ),
    ]);
    for (params, want) in cases {
        let got = config_error("/a/{id}", params.clone(), None);
        assert!(got.starts_with(want), "{params}: {got}");
    }
    assert!(config_error("/a", json!([]), Some("maybe"))
        .starts_with("routes[0].request.additional_query: unknown variant `maybe`"));
    assert!(matches!(
        compile_with("/a", json!([]), Some("allow"), json!([])),
        Ok(None)
    ));
    let p = policy("/a/{id}", json!([{ "in": "path", "name": "id" }]), None);
    assert!(p.declares("path", "id"));
}
