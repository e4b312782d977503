//! The compiled policy: the runtime view of the configuration, built once in
//! `on_configure` and shared (behind an `Rc`) by every request of the worker.
//!
//! `Policy::compile` checks everything a config can get wrong and names the field;
//! after it succeeds, nothing is parsed or compiled on the request path.

use crate::audit::AuditPolicy;
use crate::blocking::{BlockingPolicy, RouteInfo};
use crate::cloak::{CloakKeys, RouteCloak};
use crate::config::check;
use crate::config::{
    self, ClientIpConfig, ConfigError, Mode, PluginConfig, SecurityHeadersConfig, Semicolons,
    SignatureBackend, Unmatched,
};
use crate::http;
use crate::jwt::{AuthPolicy, Providers};
use crate::mask::{Issuer, ResponsePolicy};
use crate::metrics::RouteMetrics;
use crate::quota::{RateLimitService, RouteQuotas};
use crate::request::{ParamPolicy, RequestPolicy, SchemaRegistry};
use crate::route::{self, NormalizedPath, Params, PathTemplate};
use std::rc::Rc;
use std::time::Duration;

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Name, as used in metrics and logs.
    pub name: String,
    /// Path template.
    pub template: PathTemplate,
    /// Allowed methods; `None` = any.
    pub methods: Option<Vec<String>>,
    /// Authentication and authorization.
    pub auth: Option<AuthPolicy>,
    /// Rate limits (one or several, local or global).
    pub quota: Option<RouteQuotas>,
    /// Path, query and header parameters.
    pub parameters: Option<ParamPolicy>,
    /// Request body validation.
    pub request: Option<RequestPolicy>,
    /// Response masking and sensitive-data detection.
    pub response: Option<ResponsePolicy>,
    /// Cloaked path parameters, turned into real ids before anything reads them.
    pub cloak: Option<RouteCloak>,
    /// The route's counters.
    pub metrics: RouteMetrics,
    /// Whether its refusals are acted on or only reported.
    pub mode: Mode,
    /// Its position in `routes` (how blocking rules name it).
    pub index: usize,
}

/// Result of matching a request against the routes.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteMatch {
    /// Route index and captured parameters.
    Matched(usize, Params),
    /// The path matched routes, none of them with this method: the first such
    /// route (for metrics) and the `Allow` value.
    MethodNotAllowed(usize, String),
    /// Nothing matched.
    Unmatched,
}

/// Headers added to and removed from responses.
#[derive(Debug, Clone, Default)]
pub struct SecurityHeaders {
    /// Headers set on every response.
    pub add: Vec<(String, String)>,
    /// `Cache-Control: no-store` on authenticated routes.
    pub no_store_on_auth: bool,
    /// Headers removed from every response.
    pub remove: Vec<String>,
}

/// The whole compiled policy.
#[derive(Debug)]
pub struct Policy {
    /// Routes in order (shared with the requests that matched them).
    pub routes: Vec<Rc<Route>>,
    /// What to do with unmatched requests.
    pub unmatched: Unmatched,
    /// What a `;` in a path segment means.
    pub semicolons: Semicolons,
    /// Security response headers.
    pub security_headers: SecurityHeaders,
    /// How the client address is found (`quota.by: ip`).
    pub client_ip: ClientIpConfig,
    /// JWT providers.
    pub providers: Providers,
    /// Every request header any provider sets (`claim_to_headers`,
    /// `forward_payload_header`): removed from every request first, in every
    /// spelling an upstream reads as the same header ([`Policy::is_output_header`]),
    /// so a client can never forge them.
    pub output_headers: Vec<String>,
    /// Period of the metrics flush (`metrics_flush_ms`); `None`: every count is
    /// added to Envoy's stats at once.
    pub metrics_flush: Option<Duration>,
    /// The top-level `mode`: refusals made before a route is known (bad paths,
    /// unmatched requests) follow it.
    pub mode: Mode,
    /// The audit log; `None` when records are off.
    pub audit: Option<AuditPolicy>,
    /// Automated blocking; `None` without rules.
    pub blocking: Option<BlockingPolicy>,
    /// Messages whose bodies are checked are held at their headers (Envoy's Wasm
    /// filter has `allow_on_headers_stop_iteration: true`); else their headers go
    /// on and only their bodies are held.
    pub hold_at_headers: bool,
    /// Some route reads request or response bodies.
    pub reads_bodies: bool,
    /// Where RS* and ES* signatures are verified; the root context decides with
    /// the host's check ([`crate::jwt::hostsig::choose`]).
    pub signature_backend: SignatureBackend,
    /// The rate-limit service of global quotas.
    pub rate_limit_service: Option<RateLimitService>,
}

impl Policy {
    /// Parses and compiles configuration bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Policy, ConfigError> {
        Policy::compile(config::parse(bytes)?)
    }

    /// Compiles a parsed configuration.
    pub fn compile(cfg: PluginConfig) -> Result<Policy, ConfigError> {
        let mode = Mode::parse(cfg.mode.as_deref(), "mode")?.unwrap_or_default();
        let providers = Providers::compile(&cfg.providers)?;
        let registry = SchemaRegistry::compile(&cfg.schemas)?;
        let cloak_keys = CloakKeys::compile(cfg.cloak_key.as_ref())?;
        let mut output_headers: Vec<String> = Vec::new();
        for p in providers.iter() {
            for h in p.output_headers() {
                if !output_headers.iter().any(|o| http::same_header_name(o, h)) {
                    output_headers.push(h.to_string());
                }
            }
        }
        let rate_limit_service = RateLimitService::compile(cfg.rate_limit_service.as_ref())?;
        let mut routes: Vec<Rc<Route>> = Vec::with_capacity(cfg.routes.len());
        for (i, r) in cfg.routes.iter().enumerate() {
            let base = format!("routes[{i}]");
            check::entry_name(
                &r.name,
                routes.iter().map(|o| o.name.as_str()),
                &base,
                "routes",
            )?;
            let template = PathTemplate::parse(&r.matcher.path, &format!("{base}.match.path"))?;
            let methods = match &r.matcher.methods {
                Some(m) => Some(route::parse_methods(m, &format!("{base}.match.methods"))?),
                None => None,
            };
            let auth = match &r.auth {
                Some(a) => Some(AuthPolicy::compile(
                    a,
                    &providers,
                    &template.param_names(),
                    &format!("{base}.auth"),
                )?),
                None => None,
            };
            let quota = match &r.quota {
                Some(q) => Some(RouteQuotas::compile(
                    q,
                    &cfg.quota_settings,
                    &r.name,
                    &format!("{base}.quota"),
                    rate_limit_service.as_ref(),
                )?),
                None => None,
            };
            let request = match &r.request {
                Some(rc) if rc.checks_body() => Some(RequestPolicy::compile(
                    rc,
                    &registry,
                    &format!("{base}.request"),
                )?),
                _ => None,
            };
            let parameters = match &r.request {
                Some(rc) => ParamPolicy::compile(
                    &rc.parameters,
                    rc.additional_query.as_deref(),
                    &template,
                    &registry,
                    rc.assert_formats,
                    &format!("{base}.request"),
                )?,
                None => None,
            };
            let cloak = match &r.cloak {
                Some(v) => Some(RouteCloak::compile(
                    v,
                    cloak_keys.as_ref(),
                    &template,
                    r.auth.as_ref().is_some_and(|a| !a.allow_missing),
                    &format!("{base}.cloak"),
                )?),
                None => None,
            };
            let issuer = cloak_keys.as_ref().map(|keys| Issuer {
                keys: keys.clone(),
                per_caller: cloak.as_ref().is_some_and(|c| c.per_caller),
            });
            let response = match &r.response {
                Some(rc) => Some(ResponsePolicy::compile(
                    rc,
                    cfg.mask_salt.as_deref(),
                    issuer,
                    &format!("{base}.response"),
                )?),
                None => None,
            };
            routes.push(Rc::new(Route {
                name: r.name.clone(),
                template,
                methods,
                auth,
                quota,
                parameters,
                request,
                response,
                cloak,
                metrics: RouteMetrics::new(&r.name),
                mode: Mode::parse(r.mode.as_deref(), &format!("{base}.mode"))?.unwrap_or(mode),
                index: i,
            }));
        }
        let infos: Vec<RouteInfo<'_>> = routes
            .iter()
            .map(|r| RouteInfo {
                name: &r.name,
                params: r.template.param_names(),
            })
            .collect();
        let blocking = BlockingPolicy::compile(&cfg.blocking, &cfg.quota_settings, &infos, mode)?;
        drop(infos);
        Ok(Policy {
            routes,
            unmatched: cfg.unmatched,
            semicolons: cfg.paths.semicolons,
            security_headers: compile_security_headers(&cfg.security_headers)?,
            client_ip: cfg.client_ip,
            providers,
            output_headers,
            metrics_flush: compile_metrics_flush(cfg.metrics_flush_ms)?,
            mode,
            audit: AuditPolicy::compile(&cfg.audit)?,
            blocking: (!blocking.is_empty()).then_some(blocking),
            hold_at_headers: cfg.allow_on_headers_stop_iteration,
            reads_bodies: cfg
                .routes
                .iter()
                .any(|r| r.request.is_some() || r.response.is_some()),
            signature_backend: SignatureBackend::from_name(cfg.signature_backend.as_deref())?,
            rate_limit_service,
        })
    }

    /// True if the filter sets request header `name`, in any spelling an upstream
    /// reads as the same header (`x_user-id` for `x-user-id`).
    pub fn is_output_header(&self, name: &str) -> bool {
        self.output_headers
            .iter()
            .any(|o| http::same_header_name(o, name))
    }

    /// First route whose template and methods fit; else 405 with the union of the
    /// methods of the routes on this path; else unmatched.
    ///
    /// Literal segments compare exactly first. A path that matches no route that
    /// way is compared again ignoring ASCII case: frameworks that route
    /// case-insensitively serve `/ADMIN/users` as `/admin/users`, so such an alias
    /// gets the protections of the route it aliases instead of passing under
    /// `unmatched: allow`.
    pub fn match_request(&self, method: &str, path: &NormalizedPath) -> RouteMatch {
        match self.match_with(method, path, false) {
            RouteMatch::Unmatched => self.match_with(method, path, true),
            found => found,
        }
    }

    fn match_with(&self, method: &str, path: &NormalizedPath, ignore_case: bool) -> RouteMatch {
        let mut allow: Vec<&str> = Vec::new();
        let mut first_on_path: Option<usize> = None;
        for (i, r) in self.routes.iter().enumerate() {
            let Some(params) = r.template.matches(path, ignore_case) else {
                continue;
            };
            match &r.methods {
                None => return RouteMatch::Matched(i, params),
                Some(ms) if ms.iter().any(|m| m == method) => {
                    return RouteMatch::Matched(i, params)
                }
                Some(ms) => {
                    first_on_path.get_or_insert(i);
                    for m in ms {
                        if !allow.contains(&m.as_str()) {
                            allow.push(m);
                        }
                    }
                }
            }
        }
        match first_on_path {
            Some(i) => RouteMatch::MethodNotAllowed(i, allow.join(", ")),
            None => RouteMatch::Unmatched,
        }
    }
}

/// Smallest non-zero `metrics_flush_ms`: a shorter tick costs CPU on every worker
/// for no benefit to a scraper.
const MIN_METRICS_FLUSH_MS: u64 = 10;

fn compile_metrics_flush(ms: u64) -> Result<Option<Duration>, ConfigError> {
    if ms == 0 {
        return Ok(None);
    }
    // 0 is a setting of its own, so the message names both forms.
    let ms = check::in_range(ms, MIN_METRICS_FLUSH_MS, config::MAX_METRICS_FLUSH_MS, "").map_err(
        |_| {
            ConfigError::new(
                "metrics_flush_ms",
                format!(
                    "must be 0 or between {MIN_METRICS_FLUSH_MS} and {}",
                    config::MAX_METRICS_FLUSH_MS
                ),
            )
        },
    )?;
    Ok(Some(Duration::from_millis(ms)))
}

fn compile_security_headers(c: &SecurityHeadersConfig) -> Result<SecurityHeaders, ConfigError> {
    if !c.enabled {
        return Ok(SecurityHeaders::default());
    }
    let value = |field: &str, v: &str| check::header_value(v, &format!("security_headers.{field}"));
    let mut add = Vec::new();
    if c.nosniff {
        add.push(("x-content-type-options".to_string(), "nosniff".to_string()));
    }
    if !c.frame_options.is_empty() {
        value("frame_options", &c.frame_options)?;
        add.push(("x-frame-options".to_string(), c.frame_options.clone()));
    }
    if !c.referrer_policy.is_empty() {
        value("referrer_policy", &c.referrer_policy)?;
        add.push(("referrer-policy".to_string(), c.referrer_policy.clone()));
    }
    if let Some(age) = c.hsts_max_age_seconds {
        let mut v = format!("max-age={age}");
        if c.hsts_include_subdomains {
            v.push_str("; includeSubDomains");
        }
        add.push(("strict-transport-security".to_string(), v));
    }
    let mut remove = Vec::new();
    for (i, h) in c.remove.iter().enumerate() {
        remove.push(check::header_name(
            h,
            &format!("security_headers.remove[{i}]"),
        )?);
    }
    Ok(SecurityHeaders {
        add,
        no_store_on_auth: c.no_store_on_auth,
        remove,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::normalize;

    fn policy(json: &str) -> Result<Policy, String> {
        Policy::from_bytes(json.as_bytes()).map_err(|e| e.to_string())
    }

    const ROUTES: &str = r#"{"routes":[
        {"name":"get-order","match":{"path":"/shops/{shop}/orders/{id}","methods":["GET"]}},
        {"name":"del-order","match":{"path":"/shops/{shop}/orders/{id}","methods":["DELETE","GET"]}},
        {"name":"create","match":{"path":"/shops/{shop}/orders","methods":["POST"]}},
        {"name":"health","match":{"path":"/healthz"}}
    ]}"#;

    fn matched(p: &Policy, method: &str, path: &str) -> RouteMatch {
        match normalize(path, Semicolons::Reject) {
            Ok(n) => p.match_request(method, &n),
            Err(e) => unreachable!("{e}"),
        }
    }

    #[test]
    fn first_match_wins_and_405_lists_the_union() {
        let p = policy(ROUTES);
        assert!(p.is_ok(), "{p:?}");
        let Ok(p) = p else { return };
        let two = vec![
            ("shop".into(), "s".to_string()),
            ("id".into(), "1".to_string()),
        ];
        assert_eq!(
            matched(&p, "GET", "/shops/s/orders/1"),
            RouteMatch::Matched(0, two.clone())
        );
        assert_eq!(
            matched(&p, "DELETE", "/shops/s/orders/1"),
            RouteMatch::Matched(1, two)
        );
        assert_eq!(
            matched(&p, "PUT", "/shops/s/orders/1"),
            RouteMatch::MethodNotAllowed(0, "GET, DELETE".into())
        );
        assert_eq!(
            matched(&p, "GET", "/shops/s/orders"),
            RouteMatch::MethodNotAllowed(2, "POST".into())
        );
        assert!(matches!(
            matched(&p, "BREW", "/healthz"),
            RouteMatch::Matched(3, _)
        ));
        assert_eq!(matched(&p, "GET", "/nope"), RouteMatch::Unmatched);
        assert_eq!(
            matched(&p, "GET", "/healthz?x=1"),
            RouteMatch::Matched(3, vec![])
        );
    }

    #[test]
    fn case_aliases_match_the_route_they_alias() {
        let p = policy(ROUTES);
        assert!(p.is_ok(), "{p:?}");
        let Ok(p) = p else { return };
        let two = vec![
            ("shop".into(), "S".to_string()),
            ("id".into(), "1".to_string()),
        ];
        assert_eq!(
            matched(&p, "GET", "/SHOPS/S/Orders/1"),
            RouteMatch::Matched(0, two)
        );
        assert!(matches!(
            matched(&p, "GET", "/HealthZ"),
            RouteMatch::Matched(3, _)
        ));
        assert_eq!(
            matched(&p, "PUT", "/Shops/s/ORDERS/1"),
            RouteMatch::MethodNotAllowed(0, "GET, DELETE".into())
        );
        assert_eq!(matched(&p, "GET", "/NOPE"), RouteMatch::Unmatched);
    }

    #[test]
    fn config_errors_name_the_field() {
        let cases = [
            (
                r#"{"routes":[{"name":"a b","match":{"path":"/a"}}]}"#,
                "routes[0].name: \"a b\" must be",
            ),
            (
                r#"{"routes":[{"name":"a","match":{"path":"/a"}},{"name":"a","match":{"path":"/b"}}]}"#,
                "routes[1].name: \"a\" is already the name of routes[0]",
            ),
            (
                r#"{"routes":[{"name":"a","match":{"path":"/a"}},{"name":"b","match":{"path":"b"}}]}"#,
                "routes[1].match.path: template \"b\" must start with '/'",
            ),
            (
                r#"{"routes":[{"name":"a","match":{"path":"/a","methods":[]}}]}"#,
                "routes[0].match.methods: must not be empty",
            ),
            (
                r#"{"routes":[],"security_headers":{"remove":["x y"]}}"#,
                "security_headers.remove[0]: \"x y\" is not a valid HTTP header name",
            ),
            (
                r#"{"routes":[],"security_headers":{"frame_options":"DENY\n"}}"#,
                "security_headers.frame_options: must be printable ASCII",
            ),
        ];
        for (json, want) in cases {
            let e = policy(json).err().unwrap_or_default();
            assert!(e.starts_with(want), "want {want:?}, got {e:?}");
        }
    }

    #[test]
    fn parameters_alone_leave_the_body_unchecked() {
        let p = policy(
            r#"{"routes":[
            {"name":"params","match":{"path":"/a/{id}"},
             "request":{"parameters":[{"in":"path","name":"id","schema":{"type":"integer"}}]}},
            {"name":"deny","match":{"path":"/b"},"request":{"additional_query":"deny"}},
            {"name":"both","match":{"path":"/c"},
             "request":{"max_body_bytes":10,"parameters":[{"in":"query","name":"q"}]}},
            {"name":"body","match":{"path":"/d"},"request":{}}
        ]}"#,
        );
        let Ok(p) = p else { unreachable!("{p:?}") };
        let parts: Vec<(bool, bool)> = p
            .routes
            .iter()
            .map(|r| (r.parameters.is_some(), r.request.is_some()))
            .collect();
        assert_eq!(
            parts,
            [(true, false), (true, false), (true, true), (false, true)]
        );
    }

    #[test]
    fn metrics_flush_period() {
        let period = |json: &str| policy(json).map(|p| p.metrics_flush);
        assert_eq!(
            period(r#"{"routes":[]}"#),
            Ok(Some(Duration::from_millis(1000)))
        );
        assert_eq!(period(r#"{"routes":[],"metrics_flush_ms":0}"#), Ok(None));
        assert_eq!(
            period(r#"{"routes":[],"metrics_flush_ms":250}"#),
            Ok(Some(Duration::from_millis(250)))
        );
        for bad in [5, 60_001] {
            let Err(e) = period(&format!(r#"{{"routes":[],"metrics_flush_ms":{bad}}}"#)) else {
                unreachable!("metrics_flush_ms {bad} accepted");
            };
            assert!(
                e.starts_with("metrics_flush_ms: must be 0 or between 10 and 60000"),
                "{e}"
            );
        }
    }

    #[test]
    fn signature_backend_is_compiled_into_the_policy() {
        let backend = |json: &str| policy(json).map(|p| p.signature_backend);
        assert_eq!(backend(r#"{"routes":[]}"#), Ok(SignatureBackend::Auto));
        assert_eq!(
            backend(r#"{"routes":[],"signature_backend":"module"}"#),
            Ok(SignatureBackend::Module)
        );
        assert_eq!(
            backend(r#"{"routes":[],"signature_backend":"Host"}"#),
            Err("signature_backend: unknown variant `Host`, expected one of `auto`, `module`, `host`".to_string())
        );
    }

    #[test]
    fn security_headers_defaults_and_hsts() {
        let Ok(p) = policy(
            r#"{"routes":[],"security_headers":{"hsts_max_age_seconds":31536000,"hsts_include_subdomains":true}}"#,
        ) else {
            unreachable!()
        };
        let add = &p.security_headers.add;
        assert!(add.contains(&("x-content-type-options".into(), "nosniff".into())));
        assert!(add.contains(&("x-frame-options".into(), "DENY".into())));
        assert!(add.contains(&("referrer-policy".into(), "no-referrer".into())));
        assert!(add.contains(&(
            "strict-transport-security".into(),
            "max-age=31536000; includeSubDomains".into()
        )));
        assert!(p
            .security_headers
            .remove
            .contains(&"x-powered-by".to_string()));
        let Ok(off) = policy(r#"{"routes":[],"security_headers":{"enabled":false}}"#) else {
            unreachable!()
        };
        assert!(off.security_headers.add.is_empty() && off.security_headers.remove.is_empty());
    }

    #[test]
    fn cloaking_compiles_per_route_and_needs_the_key() {
        let key = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";
        let providers =
            r#""providers":{"idp":{"issuer":"i","jwks":{"remote":{"cluster":"idp","path":"/k"}}}}"#;
        let ok = format!(
            r#"{{"cloak_key":"{key}",{providers},"routes":[
              {{"name":"list","match":{{"path":"/shops"}},"auth":{{"requires":"idp"}},
                "cloak":{{"per_caller":true}},
                "response":{{"mask":[{{"path":"$.shops[*].id","action":"cloak","kind":"shop"}}]}}}},
              {{"name":"one","match":{{"path":"/shops/{{shop}}"}},"auth":{{"requires":"idp"}},
                "cloak":{{"params":{{"shop":"shop"}},"per_caller":true}}}}]}}"#
        );
        let p = policy(&ok);
        assert!(p.is_ok(), "{p:?}");
        if let Ok(p) = p {
            assert!(p.routes[0]
                .cloak
                .as_ref()
                .is_some_and(|c| c.per_caller && !c.accepts()));
            assert!(p.routes[1].cloak.as_ref().is_some_and(|c| c.accepts()));
        }
        let without_key = ok.replace(&format!(r#""cloak_key":"{key}","#), "");
        assert_eq!(
            policy(&without_key).err().as_deref(),
            Some("routes[0].cloak: needs the top-level `cloak_key`")
        );
        let missing_allowed = ok.replace(
            r#""auth":{"requires":"idp"},
                "cloak":{"params""#,
            r#""auth":{"requires":"idp","allow_missing":true},
                "cloak":{"params""#,
        );
        assert_eq!(
            policy(&missing_allowed).err().as_deref(),
            Some("routes[1].cloak.per_caller: needs `auth` without `allow_missing`: tokens are bound to the caller's `sub`")
        );
        assert_eq!(
            policy(&format!(r#"{{"cloak_key":"{key}x","routes":[]}}"#))
                .err()
                .as_deref(),
            Some("cloak_key: must be base64 of 32 or 64 random bytes (openssl rand -base64 32)")
        );
    }
}
