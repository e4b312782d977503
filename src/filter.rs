//! The HTTP context: one per request. Callbacks are short and delegate to the
//! pure modules; an explicit [`Phase`] says where the request is.
//!
//! Request headers: normalise the path -> match the route. Response headers:
//! security headers. Every rejection goes through [`Filter::reject`], which renders
//! it with [`crate::reply`] and counts it.

use crate::config::Unmatched;
use crate::host;
use crate::metrics;
use crate::policy::{Policy, Route, RouteMatch};
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
}

impl Filter {
    /// A filter for one request; `policy` is `None` only if configuration failed.
    pub fn new(policy: Option<Rc<Policy>>) -> Self {
        Filter {
            policy,
            phase: Phase::Start,
            route: None,
            params: Params::new(),
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
        self.phase = Phase::Forwarded;
        if let Some(r) = self.route() {
            metrics::route_decision(&r.name, "allowed");
        }
        Ok(Action::Continue)
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
        Action::Continue
    }
}
