//! The HTTP context: one per request. Callbacks are short and delegate to the
//! pure modules; an explicit [`Phase`] says where the request is.
//!
//! Request headers: normalise the path -> match the route. Response headers:
//! security headers. Every rejection goes through [`Filter::reject`], which renders
//! it with [`crate::reply`] and counts it.

use crate::authz::Claims;
use crate::config::Unmatched;
use crate::host::{self, HostStore};
use crate::metrics;
use crate::policy::{Policy, Route, RouteMatch};
use crate::quota::{self, KeyInputs};
use crate::reply::{Rejection, PROBLEM_CONTENT_TYPE};
use crate::route::{self, Params};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

/// Distinct undeclared-endpoint patterns logged per worker (then only counted).
const MAX_SHADOW_PATTERNS_LOGGED: usize = 256;

thread_local! {
    static SHADOW_SEEN: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}

/// Where the request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Request headers not yet seen.
    Start,
    /// Request passed every check; upstream may see it.
    Forwarded,
    /// No route matched and `unmatched: allow`: the filter stays out of the way.
    Passthrough,
    /// The filter answered locally.
    Rejected,
}

/// Per-request state.
pub struct Filter {
    policy: Option<Rc<Policy>>,
    phase: Phase,
    route: Option<usize>,
    params: Params,
    /// Verified claims of the caller, once authenticated.
    claims: Option<Rc<Claims>>,
    /// `RateLimit-*` headers for the response of an admitted request.
    quota_headers: Option<[(&'static str, String); 3]>,
}

impl Filter {
    /// A filter for one request; `policy` is `None` only if configuration failed.
    pub fn new(policy: Option<Rc<Policy>>) -> Self {
        Filter {
            policy,
            phase: Phase::Start,
            route: None,
            params: Params::new(),
            claims: None,
            quota_headers: None,
        }
    }

    fn route(&self) -> Option<&Route> {
        let p = self.policy.as_ref()?;
        p.routes.get(self.route?)
    }

    /// Answers the request with the problem document for `rejection`.
    fn reject(&mut self, rejection: Rejection) -> Action {
        let reply = rejection.render();
        let route_name = self.route().map(|r| r.name.clone());
        match &route_name {
            Some(name) => metrics::route_decision(name, rejection.reason()),
            None => metrics::inc(&format!("apiguard.unmatched.{}", rejection.reason())),
        }
        log::debug!(
            "api-guard: route={} rejected status={} reason={}",
            route_name.as_deref().unwrap_or("-"),
            reply.status,
            rejection.reason()
        );
        let mut headers = reply.headers;
        headers.push(("content-type".into(), PROBLEM_CONTENT_TYPE.into()));
        if let Some(p) = &self.policy {
            for (k, v) in &p.security_headers.add {
                headers.push((k.clone(), v.clone()));
            }
            // A rejection is never cacheable: it depends on who asked.
            headers.push(("cache-control".into(), "no-store".into()));
        }
        self.phase = Phase::Rejected;
        host::send_reply(reply.status, &headers, &reply.body);
        Action::Pause
    }

    fn on_request_headers(&mut self) -> Result<Action, Rejection> {
        let Some(policy) = self.policy.clone() else {
            return Err(Rejection::NotConfigured);
        };
        let method = host::request_header(":method").unwrap_or_default();
        let raw_path = host::request_header(":path").unwrap_or_default();
        let path = route::normalize(&raw_path).map_err(|detail| Rejection::BadPath { detail })?;
        match policy.match_request(&method, &path) {
            RouteMatch::Matched(i, params) => {
                self.route = Some(i);
                self.params = params;
            }
            RouteMatch::MethodNotAllowed(first, allow) => {
                self.route = Some(first);
                return Err(Rejection::MethodNotAllowed { allow });
            }
            RouteMatch::Unmatched => match policy.unmatched {
                Unmatched::Deny => return Err(Rejection::NotFound),
                Unmatched::Allow => {
                    self.phase = Phase::Passthrough;
                    note_shadow_endpoint(&method, &path);
                    return Ok(Action::Continue);
                }
            },
        }
        if path.changed {
            // The upstream must serve exactly what was matched and authorised.
            host::set_request_header(":path", Some(&path.request_target()));
        }
        // Quota runs after authentication (`claim:sub` counts the verified
        // caller) so requests rejected earlier consume nothing.
        self.apply_quota(&policy)?;
        self.phase = Phase::Forwarded;
        if let Some(r) = self.route() {
            metrics::route_decision(&r.name, "allowed");
        }
        Ok(Action::Continue)
    }
}

impl Filter {
    fn apply_quota(&mut self, policy: &Policy) -> Result<(), Rejection> {
        let Some(route) = self.route.and_then(|i| policy.routes.get(i)) else {
            return Ok(());
        };
        let Some(q) = &route.quota else {
            return Ok(());
        };
        let source = host::property(&["source", "address"]);
        let hops = policy.client_ip.xff_trusted_hops;
        let xff = if hops > 0 {
            host::request_header_all("x-forwarded-for")
        } else {
            None
        };
        let ip = quota::client_ip(source.as_deref(), xff.as_deref(), hops);
        let header = |name: &str| host::request_header(name);
        let key = q.caller_key(&KeyInputs {
            client_ip: ip.as_deref(),
            claims: self.claims.as_deref(),
            header: &header,
        });
        let check = q.check(&mut HostStore, &key, host::now_ms());
        metrics::route_counter(&route.name, "quota", check.decision.label(), 1);
        if check.cas_retries > 0 {
            metrics::route_counter(
                &route.name,
                "quota",
                "cas_retries",
                u64::from(check.cas_retries),
            );
        }
        if let Some(rejection) = q.rejection(&check.decision) {
            return Err(rejection);
        }
        self.quota_headers = q.success_headers(&check.decision);
        Ok(())
    }
}

/// Counts a request to an undeclared endpoint and logs its pattern once per worker.
fn note_shadow_endpoint(method: &str, path: &route::NormalizedPath) {
    metrics::inc("apiguard.unmatched.allowed");
    let pattern = shadow_pattern_key(method, path);
    SHADOW_SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        if seen.len() < MAX_SHADOW_PATTERNS_LOGGED && seen.insert(pattern.clone()) {
            log::info!("api-guard: undeclared endpoint {pattern} (unmatched: allow)");
        }
    });
}

fn shadow_pattern_key(method: &str, path: &route::NormalizedPath) -> String {
    let method: String = method
        .chars()
        .filter(|c| c.is_ascii_alphabetic())
        .take(16)
        .collect();
    format!("{method} {}", route::shadow_pattern(path))
}

impl Context for Filter {}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match self.on_request_headers() {
            Ok(action) => action,
            Err(rejection) => self.reject(rejection),
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.phase == Phase::Rejected || self.phase == Phase::Start {
            return Action::Continue;
        }
        let Some(policy) = self.policy.clone() else {
            return Action::Continue;
        };
        let sec = &policy.security_headers;
        for name in &sec.remove {
            host::set_response_header(name, None);
        }
        for (k, v) in &sec.add {
            host::set_response_header(k, Some(v));
        }
        if sec.no_store_on_auth && self.route().is_some_and(|r| r.authenticated) {
            host::set_response_header("cache-control", Some("no-store"));
        }
        if let Some(headers) = &self.quota_headers {
            for (k, v) in headers {
                host::set_response_header(k, Some(v));
            }
        }
        Action::Continue
    }
}
