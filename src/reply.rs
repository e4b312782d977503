//! Rejections and how they are answered: the only place an HTTP status is chosen.
//!
//! Every module reports *what* went wrong as a [`Rejection`]; this module turns it
//! into a status, headers and an RFC 9457 `application/problem+json` body. Details
//! are written by the filter's code, never copied from the request, so a token, a
//! key or a body value cannot be echoed back.

/// Base of the `type` URIs of our problem documents (RFC 9457 §3.1.1).
pub const PROBLEM_TYPE_BASE: &str = "urn:api-guard:problem:";

/// One failure of a JSON Schema check, reported in the 400 body's `errors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    /// JSON Pointer into the request body (`/items/0/qty`).
    pub instance_path: String,
    /// The schema keyword that failed (`minimum`, `required`, ...).
    pub keyword: String,
    /// Human-readable message (never contains the full body).
    pub message: String,
}

/// One failure of a request parameter, reported in the 400 body's `errors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    /// `path`, `query` or `header`.
    pub location: &'static str,
    /// The parameter's name as configured (for an undeclared query parameter, its
    /// name as sent, cut short).
    pub name: String,
    /// The failure: `instancePath` inside the value (an array item: `/1`; empty for
    /// the whole value), keyword, message. Never the value itself.
    pub error: SchemaError,
}

/// Why a request (or response) is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No route matched under `unmatched: deny`.
    NotFound,
    /// A cloaked parameter is not a valid token for the route and caller. Answered
    /// exactly as [`Rejection::NotFound`]: a token guesser learns no more than a
    /// path scanner.
    Cloak,
    /// A route matched the path but not the method. `allow` is the header value.
    MethodNotAllowed {
        /// Value of the `Allow` header, e.g. `GET, HEAD`.
        allow: String,
    },
    /// The request line itself is unusable (path does not normalise, bad encoding).
    BadPath {
        /// Which rule the path broke.
        detail: &'static str,
    },
    /// No token, and the route requires one (plain 401, RFC 6750 §3.1).
    MissingToken,
    /// A token was sent but is not valid.
    InvalidToken {
        /// Metric reason: `malformed`, `bad_signature`, `expired`, ...
        reason: &'static str,
        /// Safe description for `error_description` and the problem detail.
        description: String,
    },
    /// A valid token without permission (claims, bind, audience).
    Forbidden {
        /// Metric reason: `audience`, `claims`, `bind`.
        reason: &'static str,
        /// Safe description.
        description: String,
        /// The configuration rule that failed, for the log only: `audiences`,
        /// `claims.<claim>` or `bind.<parameter>` (names from the configuration,
        /// never a value from the request or the token).
        rule: String,
    },
    /// Keys for a remote provider have not arrived yet: fail closed.
    KeysUnavailable,
    /// Quota exhausted.
    TooManyRequests {
        /// Configured limit.
        limit: u64,
        /// Seconds until one more request would pass.
        retry_after: u64,
        /// Seconds until the quota is full again.
        reset: u64,
    },
    /// The quota store failed and the route fails closed.
    QuotaUnavailable,
    /// The caller is blocked by an automated blocking rule.
    Blocked {
        /// Seconds until the block ends.
        retry_after: u64,
    },
    /// Body larger than `max_body_bytes`.
    PayloadTooLarge {
        /// The configured cap.
        limit: u64,
    },
    /// `Content-Type` not accepted.
    UnsupportedMediaType {
        /// Accepted media types, comma separated.
        accepted: String,
    },
    /// Body is not JSON, not UTF-8, or breaks a JSON threat limit.
    BadBody {
        /// Metric reason: `not_json` or `limits`.
        reason: &'static str,
        /// Safe description.
        description: String,
    },
    /// Body fails the schema.
    SchemaViolation {
        /// The failures, already capped in number and size.
        errors: Vec<SchemaError>,
    },
    /// A path, query or header parameter is missing, undeclared or fails its schema.
    InvalidParameter {
        /// The failures, already capped in number and size.
        errors: Vec<ParamError>,
    },
    /// The plugin has no valid configuration (Envoy normally refuses it first).
    NotConfigured,
    /// Held at its headers, the message got no body callback in time (Envoy's
    /// Wasm filter lacks `allow_on_headers_stop_iteration: true`).
    HoldTimeout,
    /// A response body that may not leave unmasked was withheld.
    ResponseWithheld {
        /// Metric reason: `compressed`, `not_json`, `partial`, `too_large`,
        /// `sensitive_data`, `rewrite_failed`.
        reason: &'static str,
        /// Safe description.
        description: String,
        /// 502, or the upstream's own 502, 503 or 504 (see `mask::plan`).
        status: u32,
    },
}

/// A rendered local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u32,
    /// Headers besides `content-type`.
    pub headers: Vec<(String, String)>,
    /// `application/problem+json` body.
    pub body: Vec<u8>,
}

/// Media type of every rejection body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

impl Rejection {
    /// HTTP status of this rejection.
    pub(crate) fn status(&self) -> u32 {
        match self {
            Rejection::NotFound | Rejection::Cloak => 404,
            Rejection::MethodNotAllowed { .. } => 405,
            Rejection::BadPath { .. } => 400,
            Rejection::MissingToken | Rejection::InvalidToken { .. } => 401,
            Rejection::Forbidden { .. } => 403,
            Rejection::KeysUnavailable
            | Rejection::QuotaUnavailable
            | Rejection::NotConfigured
            | Rejection::HoldTimeout => 503,
            Rejection::TooManyRequests { .. } | Rejection::Blocked { .. } => 429,
            Rejection::PayloadTooLarge { .. } => 413,
            Rejection::UnsupportedMediaType { .. } => 415,
            Rejection::BadBody { .. }
            | Rejection::SchemaViolation { .. }
            | Rejection::InvalidParameter { .. } => 400,
            Rejection::ResponseWithheld { status, .. } => *status,
        }
    }

    /// The failed rule of a 403, for the debug log line of the rejection.
    pub(crate) fn rule(&self) -> Option<&str> {
        match self {
            Rejection::Forbidden { rule, .. } => Some(rule),
            _ => None,
        }
    }

    /// Short reason used as the metric label (`decision`).
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::NotFound => "not_found",
            Rejection::Cloak => "cloak",
            Rejection::MethodNotAllowed { .. } => "method",
            Rejection::BadPath { .. } => "bad_path",
            Rejection::MissingToken => "missing",
            Rejection::InvalidToken { reason, .. } | Rejection::Forbidden { reason, .. } => reason,
            Rejection::KeysUnavailable => "keys_unavailable",
            Rejection::TooManyRequests { .. } => "quota",
            Rejection::QuotaUnavailable => "quota_store",
            Rejection::Blocked { .. } => "blocked",
            Rejection::PayloadTooLarge { .. } => "too_large",
            Rejection::UnsupportedMediaType { .. } => "content_type",
            Rejection::BadBody { reason, .. } => reason,
            Rejection::SchemaViolation { .. } => "schema",
            Rejection::InvalidParameter { .. } => "invalid_parameter",
            Rejection::ResponseWithheld { reason, .. } => reason,
            Rejection::NotConfigured => "not_configured",
            Rejection::HoldTimeout => "hold_timeout",
        }
    }

    fn slug_and_title(&self) -> (&'static str, &'static str) {
        match self {
            Rejection::NotFound | Rejection::Cloak => ("not-found", "Not Found"),
            Rejection::MethodNotAllowed { .. } => ("method-not-allowed", "Method Not Allowed"),
            Rejection::BadPath { .. } => ("bad-path", "Bad Request Path"),
            Rejection::MissingToken => ("missing-token", "Authentication Required"),
            Rejection::InvalidToken { .. } => ("invalid-token", "Invalid Token"),
            Rejection::Forbidden { .. } => ("forbidden", "Forbidden"),
            Rejection::KeysUnavailable => ("keys-unavailable", "Verification Keys Unavailable"),
            Rejection::TooManyRequests { .. } => ("quota-exceeded", "Too Many Requests"),
            Rejection::QuotaUnavailable => ("quota-unavailable", "Quota Store Unavailable"),
            Rejection::Blocked { .. } => ("blocked", "Caller Blocked"),
            Rejection::PayloadTooLarge { .. } => ("payload-too-large", "Payload Too Large"),
            Rejection::UnsupportedMediaType { .. } => {
                ("unsupported-media-type", "Unsupported Media Type")
            }
            Rejection::BadBody { .. } => ("invalid-body", "Invalid Request Body"),
            Rejection::SchemaViolation { .. } => ("schema-violation", "Request Body Fails Schema"),
            Rejection::InvalidParameter { .. } => {
                ("invalid-parameter", "Invalid Request Parameter")
            }
            Rejection::ResponseWithheld { .. } => ("response-withheld", "Response Withheld"),
            Rejection::NotConfigured => ("not-configured", "Filter Not Configured"),
            Rejection::HoldTimeout => ("hold-timeout", "Held Without Body"),
        }
    }

    fn detail(&self) -> String {
        match self {
            Rejection::NotFound | Rejection::Cloak => "no API route matches this path".to_string(),
            Rejection::MethodNotAllowed { allow } => {
                format!("this route accepts only: {allow}")
            }
            Rejection::BadPath { detail } => (*detail).to_string(),
            Rejection::MissingToken => "a bearer token is required for this route".to_string(),
            Rejection::InvalidToken { description, .. }
            | Rejection::Forbidden { description, .. }
            | Rejection::BadBody { description, .. }
            | Rejection::ResponseWithheld { description, .. } => description.clone(),
            Rejection::KeysUnavailable => {
                "the keys needed to verify tokens have not been loaded yet; retry shortly"
                    .to_string()
            }
            Rejection::TooManyRequests {
                limit, retry_after, ..
            } => format!("quota of {limit} requests exhausted; retry in {retry_after} s"),
            Rejection::QuotaUnavailable => {
                "the quota store is unavailable; request refused".to_string()
            }
            Rejection::Blocked { retry_after } => {
                format!("this caller is blocked after repeated suspicious requests; retry in {retry_after} s")
            }
            Rejection::NotConfigured => {
                "the API filter has no valid configuration; request refused".to_string()
            }
            Rejection::HoldTimeout => {
                "the API filter held this message at its headers and never received its body"
                    .to_string()
            }
            Rejection::PayloadTooLarge { limit } => {
                format!("request body exceeds {limit} bytes")
            }
            Rejection::UnsupportedMediaType { accepted } => {
                format!("content type not accepted; use one of: {accepted}")
            }
            Rejection::SchemaViolation { errors } => {
                format!("request body fails the schema ({} error(s))", errors.len())
            }
            Rejection::InvalidParameter { errors } => {
                format!("request parameters are invalid ({} error(s))", errors.len())
            }
        }
    }

    /// Status, headers and problem+json body for this rejection.
    pub(crate) fn render(&self) -> Reply {
        let (slug, title) = self.slug_and_title();
        let status = self.status();
        let mut headers: Vec<(String, String)> = Vec::new();
        match self {
            Rejection::MethodNotAllowed { allow } => headers.push(("allow".into(), allow.clone())),
            Rejection::MissingToken => {
                // RFC 6750 §3.1: no error code when the request had no token.
                headers.push(("www-authenticate".into(), "Bearer".into()));
            }
            Rejection::InvalidToken { description, .. } => {
                headers.push((
                    "www-authenticate".into(),
                    format!(
                        "Bearer error=\"invalid_token\", error_description=\"{}\"",
                        quoted_string_safe(description)
                    ),
                ));
            }
            Rejection::Forbidden { .. } => {
                headers.push((
                    "www-authenticate".into(),
                    "Bearer error=\"insufficient_scope\"".into(),
                ));
            }
            Rejection::KeysUnavailable | Rejection::QuotaUnavailable => {
                headers.push(("retry-after".into(), "1".into()));
            }
            Rejection::TooManyRequests {
                limit,
                retry_after,
                reset,
            } => {
                headers.push(("retry-after".into(), retry_after.to_string()));
                headers.push(("ratelimit-limit".into(), limit.to_string()));
                headers.push(("ratelimit-remaining".into(), "0".into()));
                headers.push(("ratelimit-reset".into(), reset.to_string()));
            }
            Rejection::Blocked { retry_after } => {
                headers.push(("retry-after".into(), retry_after.to_string()));
            }
            Rejection::UnsupportedMediaType { accepted } => {
                // RFC 9110 §15.5.16: tell the client what is accepted.
                headers.push(("accept".into(), accepted.clone()));
            }
            _ => {}
        }
        Reply {
            status,
            headers,
            body: self.body(status, slug, title),
        }
    }

    /// The problem document, members in serde_json's order (`detail`, `errors` of
    /// a schema violation, `status`, `title`, `type`) and strings escaped as it
    /// escapes them: written out, as building a `Value` first costs more module.
    fn body(&self, status: u32, slug: &str, title: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(192);
        let member = |out: &mut Vec<u8>, name: &str, text: &str| {
            out.extend_from_slice(name.as_bytes());
            crate::json::push_string(out, text);
        };
        member(&mut out, "{\"detail\":", &self.detail());
        // Members of each error in serde_json's (sorted) order too; a parameter
        // error adds `in` before and `name` after the schema error's members.
        let errors: Vec<(Option<&ParamError>, &SchemaError)> = match self {
            Rejection::SchemaViolation { errors } => errors.iter().map(|e| (None, e)).collect(),
            Rejection::InvalidParameter { errors } => {
                errors.iter().map(|e| (Some(e), &e.error)).collect()
            }
            _ => Vec::new(),
        };
        if matches!(
            self,
            Rejection::SchemaViolation { .. } | Rejection::InvalidParameter { .. }
        ) {
            out.extend_from_slice(b",\"errors\":[");
            for (i, (param, e)) in errors.iter().enumerate() {
                out.extend_from_slice(if i == 0 { b"{" } else { b",{" });
                let comma = match param {
                    Some(p) => {
                        member(&mut out, "\"in\":", p.location);
                        ","
                    }
                    None => "",
                };
                member(
                    &mut out,
                    &format!("{comma}\"instancePath\":"),
                    &e.instance_path,
                );
                member(&mut out, ",\"keyword\":", &e.keyword);
                member(&mut out, ",\"message\":", &e.message);
                if let Some(p) = param {
                    member(&mut out, ",\"name\":", &p.name);
                }
                out.push(b'}');
            }
            out.push(b']');
        }
        out.extend_from_slice(format!(",\"status\":{status}").as_bytes());
        member(&mut out, ",\"title\":", title);
        member(
            &mut out,
            ",\"type\":",
            &format!("{PROBLEM_TYPE_BASE}{slug}"),
        );
        out.push(b'}');
        out
    }
}

/// Makes text safe inside an RFC 9110 quoted-string and RFC 6750's
/// `error_description` charset (%x20-21 / %x23-5B / %x5D-7E).
fn quoted_string_safe(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if (' '..='~').contains(&c) => c,
            _ => '?',
        })
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn body(r: &Reply) -> Value {
        serde_json::from_slice(&r.body).unwrap_or(Value::Null)
    }

    /// The document as serde_json renders it from a `Value`.
    fn reference(r: &Rejection) -> Vec<u8> {
        let (slug, title) = r.slug_and_title();
        let mut doc = json!({
            "type": format!("{PROBLEM_TYPE_BASE}{slug}"),
            "title": title,
            "status": r.status(),
            "detail": r.detail(),
        });
        if let (Rejection::SchemaViolation { errors }, Value::Object(map)) = (r, &mut doc) {
            let list = errors
                .iter()
                .map(|e| json!({"instancePath": e.instance_path, "keyword": e.keyword, "message": e.message}))
                .collect();
            map.insert("errors".into(), Value::Array(list));
        }
        if let (Rejection::InvalidParameter { errors }, Value::Object(map)) = (r, &mut doc) {
            let list = errors
                .iter()
                .map(|e| {
                    json!({"in": e.location, "name": e.name, "instancePath": e.error.instance_path,
                           "keyword": e.error.keyword, "message": e.error.message})
                })
                .collect();
            map.insert("errors".into(), Value::Array(list));
        }
        doc.to_string().into_bytes()
    }

    #[test]
    fn bodies_are_the_bytes_serde_json_writes() {
        let error = |p: &str, k: &str, m: &str| SchemaError {
            instance_path: p.into(),
            keyword: k.into(),
            message: m.into(),
        };
        let all = [
            Rejection::NotFound,
            Rejection::Cloak,
            Rejection::MethodNotAllowed {
                allow: "GET".into(),
            },
            Rejection::InvalidToken {
                reason: "malformed",
                description: "quote \" backslash \\ tab \t nul \u{0} del \u{7f} é 😀 \u{2028}"
                    .into(),
            },
            Rejection::SchemaViolation { errors: vec![] },
            Rejection::SchemaViolation {
                errors: vec![
                    error("/a/0", "type", "want \"string\""),
                    error("", "required", "missing \n"),
                ],
            },
            Rejection::TooManyRequests {
                limit: 5,
                retry_after: 2,
                reset: 3,
            },
            Rejection::InvalidParameter { errors: vec![] },
            Rejection::InvalidParameter {
                errors: vec![
                    ParamError {
                        location: "query",
                        name: "limit \"x\"".into(),
                        error: error("/1", "maximum", "over 100"),
                    },
                    ParamError {
                        location: "path",
                        name: "id".into(),
                        error: error("", "type", "want integer"),
                    },
                ],
            },
        ];
        for r in all {
            let got = r.render().body;
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&reference(&r)),
                "{r:?}"
            );
        }
    }

    #[test]
    fn a_refused_token_is_answered_as_an_undeclared_path() {
        assert_eq!(Rejection::Cloak.render(), Rejection::NotFound.render());
        assert_eq!(Rejection::Cloak.reason(), "cloak");
    }

    #[test]
    fn every_rejection_is_a_problem_document_with_its_status() {
        let all = vec![
            (Rejection::NotFound, 404),
            (
                Rejection::MethodNotAllowed {
                    allow: "GET".into(),
                },
                405,
            ),
            (Rejection::BadPath { detail: "x" }, 400),
            (Rejection::MissingToken, 401),
            (
                Rejection::InvalidToken {
                    reason: "expired",
                    description: "token expired".into(),
                },
                401,
            ),
            (
                Rejection::Forbidden {
                    reason: "claims",
                    description: "no".into(),
                    rule: "claims.roles".into(),
                },
                403,
            ),
            (Rejection::KeysUnavailable, 503),
            (
                Rejection::TooManyRequests {
                    limit: 5,
                    retry_after: 2,
                    reset: 3,
                },
                429,
            ),
            (Rejection::QuotaUnavailable, 503),
            (Rejection::PayloadTooLarge { limit: 10 }, 413),
            (
                Rejection::UnsupportedMediaType {
                    accepted: "application/json".into(),
                },
                415,
            ),
            (
                Rejection::BadBody {
                    reason: "not_json",
                    description: "x".into(),
                },
                400,
            ),
            (Rejection::SchemaViolation { errors: vec![] }, 400),
            (Rejection::InvalidParameter { errors: vec![] }, 400),
            (
                Rejection::ResponseWithheld {
                    reason: "compressed",
                    description: "x".into(),
                    status: 502,
                },
                502,
            ),
            (
                Rejection::ResponseWithheld {
                    reason: "not_json",
                    description: "x".into(),
                    status: 504,
                },
                504,
            ),
            (Rejection::NotConfigured, 503),
        ];
        for (rej, status) in all {
            let r = rej.render();
            assert_eq!(r.status, status, "{rej:?}");
            let b = body(&r);
            assert_eq!(b["status"], status, "{rej:?}");
            assert!(b["type"]
                .as_str()
                .unwrap_or("")
                .starts_with(PROBLEM_TYPE_BASE));
            assert!(b["title"].as_str().is_some_and(|t| !t.is_empty()));
            assert!(b["detail"].as_str().is_some_and(|t| !t.is_empty()));
        }
    }

    #[test]
    fn method_not_allowed_carries_allow() {
        let r = Rejection::MethodNotAllowed {
            allow: "GET, POST".into(),
        }
        .render();
        assert!(r.headers.contains(&("allow".into(), "GET, POST".into())));
    }

    #[test]
    fn invalid_token_header_is_rfc6750_and_sanitised() {
        let r = Rejection::InvalidToken {
            reason: "malformed",
            description: "bad \"quote\"\n".into(),
        }
        .render();
        let h = r
            .headers
            .iter()
            .find(|(k, _)| k == "www-authenticate")
            .map(|(_, v)| v.clone());
        assert_eq!(
            h.as_deref(),
            Some("Bearer error=\"invalid_token\", error_description=\"bad 'quote'?\"")
        );
        let plain = Rejection::MissingToken.render();
        assert!(plain
            .headers
            .contains(&("www-authenticate".into(), "Bearer".into())));
    }

    #[test]
    fn quota_rejection_has_ratelimit_headers() {
        let r = Rejection::TooManyRequests {
            limit: 10,
            retry_after: 4,
            reset: 6,
        }
        .render();
        for (k, v) in [
            ("retry-after", "4"),
            ("ratelimit-limit", "10"),
            ("ratelimit-remaining", "0"),
            ("ratelimit-reset", "6"),
        ] {
            assert!(r.headers.contains(&(k.to_string(), v.to_string())), "{k}");
        }
    }

    #[test]
    fn schema_errors_are_listed_with_pointers() {
        let r = Rejection::SchemaViolation {
            errors: vec![SchemaError {
                instance_path: "/qty".into(),
                keyword: "minimum".into(),
                message: "0 is less than 1".into(),
            }],
        }
        .render();
        let b = body(&r);
        assert_eq!(b["errors"][0]["instancePath"], "/qty");
        assert_eq!(b["errors"][0]["keyword"], "minimum");
    }
}
