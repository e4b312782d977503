//! The HTTP context: one per request. It routes proxy-wasm callbacks to the
//! modules that decide, applies their decisions through [`crate::host`], and keeps
//! where the request is in one [`State`].
//!
//! Request headers: normalise the path, match the route, authenticate and
//! authorize ([`crate::jwt`]), count the quota ([`crate::quota`]), decide whether the
//! body must be held ([`crate::request`]) and whether the response will be masked
//! ([`crate::mask`]). Response headers: security headers, then the response plan.
//! Every rejection goes through [`Filter::reject_for`], which renders it with
//! [`crate::reply`] and counts it.

use crate::audit::{self, CallerKind, Record};
use crate::authz::{self, Claims};
use crate::blocking::{Count, Event, Rule};
use crate::config::{Mode, Unmatched};
use crate::host::{self, BufferType, Headers, HostStore};
use crate::http;
use crate::jwt::{self, AuthState, RequestTokens};
use crate::mask::{ResponseHead, ResponsePlan};
use crate::metrics;
use crate::policy::{Policy, Route, RouteMatch};
use crate::quota::{
    self, rls, CallerKey, GlobalAsk, KeyInputs, LocalOutcome, QuotaDecision, Taken,
};
use crate::reply::{Rejection, PROBLEM_CONTENT_TYPE};
use crate::request::{self, BodyCheck, BodyPlan, ParamInputs};
use crate::route::{self, NormalizedPath, Params};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

/// Distinct undeclared-endpoint patterns logged per worker (then only counted).
const MAX_SHADOW_PATTERNS_LOGGED: usize = 256;

/// How long a message may sit held at its headers without a body callback
/// before the filter answers it (see [`answer_stalled`]).
pub const HOLD_WATCHDOG_MS: u64 = 10_000;

thread_local! {
    static SHADOW_SEEN: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    /// Streams held at their headers that have had no body callback yet:
    /// (context id, since ms).
    static HELD_AT_HEADERS: RefCell<Vec<(u32, u64)>> = const { RefCell::new(Vec::new()) };
    /// Streams the watchdog answered: their later callbacks do nothing.
    static GAVE_UP: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Answers every stream held at its headers for [`HOLD_WATCHDOG_MS`] without a
/// body callback (called on the root context's tick). Envoy delivers no body
/// callbacks to a filter that stopped at its headers unless the Wasm filter has
/// `allow_on_headers_stop_iteration: true`; without this watchdog such a request
/// would hang until the route's timeout with nothing in the log.
pub fn answer_stalled(now_ms: u64) {
    let stalled: Vec<u32> = HELD_AT_HEADERS.with(|held| {
        let mut held = held.borrow_mut();
        let (old, young): (Vec<_>, Vec<_>) = held
            .iter()
            .partition(|(_, since)| since.saturating_add(HOLD_WATCHDOG_MS) <= now_ms);
        *held = young;
        old.into_iter().map(|(id, _)| id).collect()
    });
    for id in stalled {
        metrics::unmatched("hold_timeout");
        log::error!(
            "a message held at its headers got no body in {} s: give the Wasm filter \
             `allow_on_headers_stop_iteration: true`, or set api-guard's \
             `allow_on_headers_stop_iteration: false` to match it; answered 503",
            HOLD_WATCHDOG_MS / 1000
        );
        GAVE_UP.with(|g| g.borrow_mut().push(id));
        if host::set_effective_context(id) {
            let reply = Rejection::HoldTimeout.render();
            let mut headers = reply.headers;
            headers.push(("content-type".into(), PROBLEM_CONTENT_TYPE.into()));
            host::send_reply(reply.status, &headers, &reply.body);
        }
    }
}

/// Where the request is in its life.
enum State {
    /// Request headers not yet seen.
    Start,
    /// No route matched and `unmatched: allow`: the filter stays out of the way.
    Passthrough,
    /// The filter answered locally; its own reply passes the response callbacks.
    Rejected,
    /// A route matched and the request passed its checks so far.
    Routed(Box<Routed>),
}

/// A request on a route.
struct Routed {
    route: Rc<Route>,
    params: Params,
    /// Verified claims of the caller, once authenticated.
    claims: Option<Rc<Claims>>,
    /// Request headers the filter set from the claims (the upstream's values).
    set_headers: Vec<(String, String)>,
    /// `RateLimit-*` headers for the response of an admitted request.
    quota_headers: Option<[(&'static str, String); 3]>,
    /// The question to the rate-limit service, while the request waits for it.
    global: Option<Box<GlobalWait>>,
    request: RequestStage,
    response: ResponseStage,
}

/// A request held at its headers for the rate-limit service's answer.
struct GlobalWait {
    ask: GlobalAsk,
    /// Local counts taken, given back if the service refuses.
    taken: Vec<Taken>,
    /// The local decision closest to exhaustion (for `RateLimit-*`).
    closest: Option<(QuotaDecision, bool)>,
    /// The call's token (0 until dispatched).
    token: u32,
    /// When the call was dispatched (ms), for the latency histogram.
    started_ms: u64,
    /// The request body ended while waiting: its check is due once admitted.
    body_done: bool,
}

/// The request body's part.
enum RequestStage {
    /// Held at request headers until the body has arrived and passed.
    Holding { bytes: usize, check: BodyCheck },
    /// Passed every check; the upstream may see it.
    Forwarded,
}

/// The response's part.
enum ResponseStage {
    /// The response passes as sent (security headers aside).
    Untouched,
    /// The route masks this caller's response; the plan comes at response headers.
    Masked,
    /// Headers held while the body is buffered. `withhold`: refuse as soon as the
    /// body starts (decided at headers). `status`: the upstream's.
    Holding {
        bytes: usize,
        withhold: Option<Rejection>,
        status: u32,
    },
}

/// What the request's audit record needs, gathered as the request goes; kept
/// only when `audit.records` is on.
#[derive(Default)]
struct Trail {
    method: String,
    route: Option<Rc<Route>>,
    /// The first refusal, enforced or reported.
    refusal: Option<Refusal>,
    /// The primary identity, once verified.
    claims: Option<Rc<Claims>>,
    provider: Option<String>,
    /// Kinds of sensitive data found in the response.
    detectors: Vec<String>,
    request_id: Option<String>,
    /// Refused because its caller is blocked: the block has its own record.
    blocked: bool,
}

#[derive(Clone, Copy)]
struct Refusal {
    reason: &'static str,
    status: u32,
    enforced: bool,
}

/// Per-request state.
pub struct Filter {
    policy: Option<Rc<Policy>>,
    auth: Option<Rc<AuthState>>,
    state: State,
    trail: Option<Box<Trail>>,
    /// The request headers, read once at request headers.
    headers: Headers,
    /// Wall-clock time of the request in milliseconds, read at most once.
    now_ms: Option<u64>,
    /// The client address (`client_ip` settings), read at most once.
    client_ip: Option<Option<String>>,
    /// Whether a block may be running (the blocking horizon), read at most once.
    blocks_may_run: Option<bool>,
    /// Envoy's id of this stream.
    id: u32,
    /// Held at its headers and watched (see [`answer_stalled`]).
    watched: bool,
}

impl Filter {
    /// A filter for one request; `policy` is `None` only if configuration failed.
    pub fn new(policy: Option<Rc<Policy>>, auth: Option<Rc<AuthState>>, id: u32) -> Self {
        Filter {
            policy,
            auth,
            state: State::Start,
            trail: None,
            headers: Headers::default(),
            now_ms: None,
            client_ip: None,
            blocks_may_run: None,
            id,
            watched: false,
        }
    }

    /// Holds the message at its headers: `Pause` when Envoy lets the filter stop
    /// there and still get the body (watched until the first body callback);
    /// otherwise the headers go on and the body is held in the body callbacks.
    fn hold_headers(&mut self, policy: &Policy) -> Action {
        if !policy.hold_at_headers {
            return Action::Continue;
        }
        let since = self.now_ms();
        HELD_AT_HEADERS.with(|h| h.borrow_mut().push((self.id, since)));
        self.watched = true;
        Action::Pause
    }

    /// A body callback arrived: the stream is no longer waiting at its headers.
    /// True if the watchdog already answered it (the callback must do nothing).
    fn body_arrived(&mut self) -> bool {
        if self.watched {
            self.watched = false;
            let id = self.id;
            HELD_AT_HEADERS.with(|h| h.borrow_mut().retain(|(i, _)| *i != id));
        }
        self.gave_up()
    }

    /// True if the watchdog answered this stream.
    fn gave_up(&mut self) -> bool {
        let id = self.id;
        let gone = GAVE_UP.with(|g| {
            let g = g.borrow();
            !g.is_empty() && g.contains(&id)
        });
        if gone {
            self.state = State::Rejected;
        }
        gone
    }

    /// The request's wall-clock time in milliseconds (one host call per request).
    fn now_ms(&mut self) -> u64 {
        *self.now_ms.get_or_insert_with(host::now_ms)
    }

    fn routed(&mut self) -> Option<&mut Routed> {
        match &mut self.state {
            State::Routed(r) => Some(r),
            _ => None,
        }
    }

    /// The mode `route`'s refusals follow (the top-level one without a route).
    fn mode_of(&self, route: Option<&Route>) -> Mode {
        match (route, &self.policy) {
            (Some(r), _) => r.mode,
            (None, Some(p)) => p.mode,
            (None, None) => Mode::Enforce,
        }
    }

    /// Notes a refusal for the audit record; true if it is to be acted on. Under
    /// `mode: report` it is counted as `report.<reason>` instead, and the caller
    /// lets the request or response go on unchanged.
    fn refusal(&mut self, route: Option<&Rc<Route>>, rejection: &Rejection) -> bool {
        let enforced = self.mode_of(route.map(Rc::as_ref)) == Mode::Enforce;
        let reason = rejection.reason();
        if let Some(trail) = &mut self.trail {
            if trail.refusal.is_none() {
                trail.refusal = Some(Refusal {
                    reason,
                    status: rejection.status(),
                    enforced,
                });
            }
        }
        if !enforced {
            match route {
                Some(r) => r.metrics.count("report", reason, 1),
                None => metrics::unmatched(&format!("report.{reason}")),
            }
            log::debug!(
                "api-guard: route={} would reject status={} reason={reason} (mode: report)",
                route.map_or("-", |r| r.name.as_str()),
                rejection.status(),
            );
        }
        enforced
    }

    /// A refusal at request time: answered under `enforce`; `None` under `report`,
    /// where the caller lets the request go on.
    fn refuse(&mut self, route: Option<&Rc<Route>>, rejection: Rejection) -> Option<Action> {
        if self.refusal(route, &rejection) {
            Some(self.reject_for(route.map(Rc::as_ref), rejection))
        } else {
            None
        }
    }

    /// Lets a request through that the filter refused under `mode: report`.
    fn pass_reported(&mut self, route: Option<&Route>) -> Action {
        match route {
            Some(r) => r.metrics.decision("allowed"),
            None => metrics::unmatched("allowed"),
        }
        self.state = State::Passthrough;
        Action::Continue
    }

    /// Answers with the problem document for `rejection`, counted as `route`'s
    /// decision (or as an unmatched request).
    fn reject_for(&mut self, route: Option<&Route>, rejection: Rejection) -> Action {
        match route {
            Some(r) => r.metrics.decision(rejection.reason()),
            None => metrics::unmatched(rejection.reason()),
        }
        self.send_problem(route, &rejection)
    }

    /// Sends the problem document for `rejection` as a local reply.
    fn send_problem(&mut self, route: Option<&Route>, rejection: &Rejection) -> Action {
        let reply = rejection.render();
        log::debug!(
            "rejected route={} status={} reason={}{}{}",
            route.map_or("-", |r| r.name.as_str()),
            reply.status,
            rejection.reason(),
            rejection.rule().map_or("", |_| " rule="),
            rejection.rule().unwrap_or("")
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
        self.state = State::Rejected;
        host::send_reply(reply.status, &headers, &reply.body);
        Action::Pause
    }
}

/// Request side.
impl Filter {
    fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
        let Some(policy) = self.policy.clone() else {
            return self.reject_for(None, Rejection::NotConfigured);
        };
        self.headers = Headers::request();
        let method = http::method_name(self.headers.first(":method").unwrap_or_default());
        if policy.audit.is_some() {
            self.trail = Some(Box::new(Trail {
                method: method.to_string(),
                request_id: self.headers.first("x-request-id").map(str::to_string),
                ..Trail::default()
            }));
        }
        // Headers the filter sets are never taken from the client, in any spelling
        // and in every mode.
        if !policy.output_headers.is_empty() {
            let forged: Vec<String> = self
                .headers
                .names()
                .filter(|name| policy.is_output_header(name))
                .map(str::to_string)
                .collect();
            for name in &forged {
                host::set_request_header(name, None);
            }
        }
        let raw_path = self.headers.first(":path").unwrap_or_default();
        let mut path = match route::normalize(raw_path, policy.semicolons) {
            Ok(path) => path,
            Err(detail) => {
                return match self.refuse(None, Rejection::BadPath { detail }) {
                    Some(action) => action,
                    None => self.pass_reported(None),
                }
            }
        };
        let found = policy.match_request(&method, &path);
        if policy.blocking.is_some() {
            // Callers known before authentication: refused before any is spent.
            let route = match &found {
                RouteMatch::Matched(i, _) | RouteMatch::MethodNotAllowed(i, _) => {
                    policy.routes.get(*i).cloned()
                }
                RouteMatch::Unmatched => None,
            };
            if let Some(secs) = self.block_check(&policy, None, &[], true) {
                return self.refuse_blocked(route.as_ref(), secs);
            }
        }
        let (route, params) = match found {
            RouteMatch::Matched(i, params) => match policy.routes.get(i) {
                Some(route) => (route.clone(), params),
                None => return self.reject_for(None, Rejection::NotFound),
            },
            RouteMatch::MethodNotAllowed(i, allow) => {
                let route = policy.routes.get(i);
                if let (Some(trail), Some(r)) = (&mut self.trail, route) {
                    trail.route = Some(r.clone());
                }
                return match self.refuse(route, Rejection::MethodNotAllowed { allow }) {
                    Some(action) => action,
                    None => self.pass_reported(route.map(Rc::as_ref)),
                };
            }
            RouteMatch::Unmatched => {
                if policy.unmatched == Unmatched::Deny {
                    let not_found = |c: &Count| matches!(c, Count::NotFound);
                    if let Some(secs) = self.count_events(&policy, None, None, &[], not_found, None)
                    {
                        return self.refuse_blocked(None, secs);
                    }
                    if let Some(action) = self.refuse(None, Rejection::NotFound) {
                        return action;
                    }
                }
                self.state = State::Passthrough;
                note_shadow_endpoint(&method, &path);
                return Action::Continue;
            }
        };
        if let Some(trail) = &mut self.trail {
            trail.route = Some(route.clone());
        }
        if path.changed {
            // The upstream must serve exactly what was matched and authorised.
            host::set_request_header(":path", Some(&path.request_target()));
        }
        let mut routed = Routed {
            route,
            params,
            claims: None,
            set_headers: Vec::new(),
            quota_headers: None,
            global: None,
            request: RequestStage::Forwarded,
            response: ResponseStage::Untouched,
        };
        match self.check_request(&policy, &mut routed, &method, &mut path, end_of_stream) {
            Ok(()) => {
                let hold = matches!(routed.request, RequestStage::Holding { .. });
                let global = routed.global.is_some();
                if !hold && !global {
                    routed.route.metrics.decision("allowed");
                }
                self.state = State::Routed(Box::new(routed));
                if global {
                    return self.ask_global(&policy, hold);
                }
                if hold {
                    // Nothing of the body reaches the upstream before all of it has
                    // passed (nor, when Envoy allows it, the headers).
                    self.hold_headers(&policy)
                } else {
                    Action::Continue
                }
            }
            Err(Rejection::Blocked { retry_after }) => {
                // The rule decided, whatever the route's own mode.
                self.refuse_blocked(Some(&routed.route), retry_after)
            }
            Err(rejection) => {
                let route = routed.route;
                match self.refuse(Some(&route), rejection) {
                    Some(action) => action,
                    None => self.pass_reported(Some(&route)),
                }
            }
        }
    }

    /// Every check at request headers, in order: authentication, cloaked
    /// parameters and authorization, the quota (after them, so `claim:` keys are
    /// verified and refused requests consume nothing), the response's masking, the
    /// parameters, the body plan.
    fn check_request(
        &mut self,
        policy: &Policy,
        routed: &mut Routed,
        method: &str,
        path: &mut NormalizedPath,
        end_of_stream: bool,
    ) -> Result<(), Rejection> {
        if let Err(rejection) = self.authenticate(routed, path) {
            // A cloaked parameter that is not a valid token is the 404 of an
            // undeclared path, and counted as one: guessing ids is scanning.
            let counted: Option<fn(&Count) -> bool> = match rejection.status() {
                401 | 403 => Some(|c| matches!(c, Count::AuthFailures)),
                404 => Some(|c| matches!(c, Count::NotFound)),
                _ => None,
            };
            if let Some(what) = counted {
                let (route, claims) = (Some(&routed.route), routed.claims.as_deref());
                let set = &routed.set_headers;
                if let Some(secs) = self.count_events(policy, route, claims, set, what, None) {
                    return Err(Rejection::Blocked { retry_after: secs });
                }
            }
            return Err(rejection);
        }
        if policy.blocking.is_some() {
            let (claims, set) = (routed.claims.as_deref(), &routed.set_headers);
            // Callers known by their claims: refused once the token is verified.
            if let Some(secs) = self.block_check(policy, claims, set, false) {
                return Err(Rejection::Blocked { retry_after: secs });
            }
            let walks = |c: &Count| matches!(c, Count::DistinctParam(_));
            let route = Some(&routed.route);
            let params = Some(&routed.params);
            if let Some(secs) = self.count_events(policy, route, claims, set, walks, params) {
                return Err(Rejection::Blocked { retry_after: secs });
            }
        }
        self.apply_quota(policy, routed)?;
        if let Some(rp) = &routed.route.response {
            if rp.applies_to(routed.claims.as_deref()) {
                routed.response = ResponseStage::Masked;
            }
            // Under `report` the request goes on unchanged: the response is
            // judged as it comes (a compressed one is counted as unmasked).
            if matches!(routed.response, ResponseStage::Masked)
                && routed.route.mode == Mode::Enforce
            {
                // A compressed body cannot be masked: ask for identity, and
                // withhold whatever comes back compressed anyway.
                host::set_request_header("accept-encoding", Some("identity"));
                // A byte range of the document is valid JSON whose root is not `$`,
                // so no mask path would match it: ask for the whole document (and
                // withhold a 206 that comes back anyway).
                for name in ["range", "if-range"] {
                    if self.headers.contains(name) {
                        host::set_request_header(name, None);
                    }
                }
            }
        }
        if let Some(pp) = &routed.route.parameters {
            let headers = &self.headers;
            let header = |name: &str| headers.joined(name, ",");
            pp.check(&ParamInputs {
                path: &routed.params,
                query: &path.query,
                header: &header,
            })
            .inspect_err(|r| routed.route.metrics.count("request", r.reason(), 1))?;
        }
        if let Some(rp) = &routed.route.request {
            // `Some(0)`: the headers ended the stream; `None`: a body of unknown
            // size may follow (chunked, HTTP/2 without content-length).
            let content_length = if end_of_stream {
                Some(0)
            } else {
                self.headers
                    .get("content-length")
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            let content_type = self.headers.get("content-type");
            let plan = rp
                .check_headers(method, content_type.as_deref(), content_length)
                .inspect_err(|r| routed.route.metrics.count("request", r.reason(), 1))?;
            if let BodyPlan::Buffer(check) = plan {
                routed.request = RequestStage::Holding { bytes: 0, check };
            }
        }
        Ok(())
    }

    fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.body_arrived() {
            return Action::Continue;
        }
        let Some(routed) = self.routed() else {
            return Action::Continue;
        };
        if let Some(wait) = &mut routed.global {
            // Nothing goes on before the service has answered.
            wait.body_done = end_of_stream;
            if let RequestStage::Holding { bytes, .. } = &mut routed.request {
                *bytes = body_size;
            }
            return Action::Pause;
        }
        let RequestStage::Holding { bytes, check } = &mut routed.request else {
            return Action::Continue;
        };
        *bytes = body_size;
        let route = routed.route.clone();
        let Some(rp) = &route.request else {
            return Action::Continue;
        };
        // `body_size` is everything buffered so far: a cumulative cap.
        if let Err(rejection) = rp.check_chunk(check, body_size as u64) {
            route.metrics.count("request", rejection.reason(), 1);
            return self.refuse_body(&route, rejection);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.finish_request_body()
    }

    fn finish_request_body(&mut self) -> Action {
        if self.body_arrived() {
            return Action::Continue;
        }
        let Some(routed) = self.routed() else {
            return Action::Continue;
        };
        if let Some(wait) = &mut routed.global {
            wait.body_done = true;
            return Action::Pause;
        }
        let RequestStage::Holding { bytes, check } = &routed.request else {
            return Action::Continue;
        };
        let (bytes, check) = (*bytes, check.clone());
        let route = routed.route.clone();
        let Some(rp) = &route.request else {
            return Action::Continue;
        };
        let body = if bytes == 0 {
            Vec::new()
        } else {
            host::buffer(BufferType::HttpRequestBody, 0, bytes).unwrap_or_default()
        };
        let outcome = rp.finish(&check, &body);
        route
            .metrics
            .count("request", request::metric_reason(&outcome), 1);
        match outcome {
            Ok(()) => {
                routed.request = RequestStage::Forwarded;
                route.metrics.decision("allowed");
                // Returning Continue from the body (or trailers) callback releases the
                // held headers with the buffered body. Calling resume_http_request()
                // here as well made Envoy forward an HTTP/2 request without its
                // body (seen in the e2e test for HTTP/2 without trailers).
                Action::Continue
            }
            Err(rejection) => self.refuse_body(&route, rejection),
        }
    }

    /// A refusal of the held request body: answered, or under `report` the held
    /// request is released as it came.
    fn refuse_body(&mut self, route: &Rc<Route>, rejection: Rejection) -> Action {
        if let Some(action) = self.refuse(Some(route), rejection) {
            return action;
        }
        if let Some(routed) = self.routed() {
            routed.request = RequestStage::Forwarded;
        }
        route.metrics.decision("allowed");
        Action::Continue
    }

    /// `auth`: verify tokens, decloak the route's parameters (with the caller they
    /// may be bound to), apply claim rules and bindings to the real values, forward
    /// or strip.
    fn authenticate(
        &mut self,
        routed: &mut Routed,
        path: &mut NormalizedPath,
    ) -> Result<(), Rejection> {
        let route = routed.route.clone();
        let (Some(auth), Some(state)) = (&route.auth, self.auth.clone()) else {
            return decloak(routed, path);
        };
        let now = self.now_ms() / 1000;
        let tokens = HostTokens {
            headers: &self.headers,
            query: &path.query,
        };
        let result = {
            let keys = state.keys.borrow();
            let mut cache = state.cache.borrow_mut();
            auth.authenticate(&tokens, &keys, &mut cache, &state.verifier, now)
        };
        let outcome = match result {
            Ok(o) => o,
            Err(f) => {
                count_signatures(&f.signatures);
                let provider = f.provider.as_deref().unwrap_or("none");
                if f.refetch_keys
                    && state
                        .keys
                        .borrow_mut()
                        .request_refetch_unknown_kid(provider, now)
                {
                    log::info!("unknown kid for provider {provider}: key refetch scheduled");
                }
                metrics::provider_counter(provider, f.reason);
                return Err(*f.rejection);
            }
        };
        // The identity is verified even if it is not authorised: records and
        // blocking rules name it.
        if let Some(trail) = &mut self.trail {
            trail.claims = outcome.claims.clone();
            trail.provider = outcome.provider.clone();
        }
        routed.claims = outcome.claims.clone();
        decloak(routed, path)?;
        if let Some(claims) = &outcome.claims {
            if let Err(f) = auth.authorize(claims, &routed.params) {
                metrics::provider_counter(outcome.provider.as_deref().unwrap_or("none"), f.reason);
                return Err(*f.rejection);
            }
        }
        count_signatures(&outcome.signatures);
        for id in &outcome.identities {
            let counter = if id.from_cache {
                "verified_cached"
            } else {
                "verified"
            };
            metrics::provider_counter(&id.provider, counter);
        }
        for (k, v) in &outcome.set_headers {
            host::set_request_header(k, Some(v));
        }
        let strip = &outcome.strip;
        for h in &strip.headers {
            host::set_request_header(h, None);
        }
        if !strip.query_params.is_empty() {
            let target = jwt::remove_query_params(&path.request_target(), &strip.query_params);
            host::set_request_header(":path", Some(&target));
        }
        if !strip.cookies.is_empty() {
            if let Some(cookie) = self.headers.joined("cookie", "; ") {
                let rest = jwt::remove_cookies(&cookie, &strip.cookies);
                host::set_request_header("cookie", rest.as_deref());
            }
        }
        routed.set_headers = outcome.set_headers;
        Ok(())
    }

    /// Counts the route's local limits; with global limits, prepares the
    /// question to the rate-limit service (asked once every header check passed).
    fn apply_quota(&mut self, policy: &Policy, routed: &mut Routed) -> Result<(), Rejection> {
        let route = routed.route.clone();
        let Some(q) = &route.quota else {
            return Ok(());
        };
        // Host calls cost about a microsecond each in V8: only `by: ip` needs these.
        let ip = if q.needs_client_ip() {
            self.client_ip(policy)
        } else {
            None
        };
        let now = self.now_ms();
        let metrics = &route.metrics;
        let mut count = |label: &'static str, retries: u32| {
            metrics.count("quota", label, 1);
            if retries > 0 {
                metrics.count("quota", "cas_retries", u64::from(retries));
            }
        };
        let service = policy.rate_limit_service.as_ref();
        let (outcome, ask) = self.key_inputs(
            policy,
            ip.as_deref(),
            routed.claims.as_deref(),
            &routed.set_headers,
            |inputs| {
                let outcome = q.check_local(&mut HostStore, inputs, now, &mut count);
                let ask = match (&outcome, service) {
                    (LocalOutcome::Passed { .. }, Some(s)) => {
                        q.global_ask(&s.domain, &route.name, inputs)
                    }
                    _ => None,
                };
                (outcome, ask)
            },
        );
        let (taken, closest) = match outcome {
            LocalOutcome::Refused(rejection) => return Err(rejection),
            LocalOutcome::Passed { taken, closest } => (taken, closest),
        };
        match ask {
            Some(ask) => {
                routed.global = Some(Box::new(GlobalWait {
                    ask,
                    taken,
                    closest,
                    token: 0,
                    started_ms: 0,
                    body_done: false,
                }));
            }
            // Under `report` the response goes to the client as sent.
            None if route.mode == Mode::Enforce => {
                routed.quota_headers = quota::closest_headers(closest);
            }
            None => {}
        }
        Ok(())
    }

    /// Asks the rate-limit service and holds the request until it answers (or
    /// Envoy ends the call at `timeout_ms`).
    fn ask_global(&mut self, policy: &Policy, hold: bool) -> Action {
        let Some(service) = &policy.rate_limit_service else {
            return self.global_answer(0, None);
        };
        let now = host::now_ms();
        let Some(wait) = self.routed().and_then(|r| r.global.as_mut()) else {
            return Action::Continue;
        };
        wait.started_ms = now;
        let sent = host::dispatch_grpc_call(
            &service.cluster,
            rls::SERVICE,
            rls::METHOD,
            &wait.ask.message,
            std::time::Duration::from_millis(service.timeout_ms),
        );
        match sent {
            Ok(token) => {
                wait.token = token;
                if hold {
                    // Watched for its body as any held request (the answer is
                    // bounded by `timeout_ms` anyway).
                    let _ = self.hold_headers(policy);
                }
                Action::Pause
            }
            Err(status) => {
                log::warn!(
                    "api-guard: the rate-limit service call could not start ({status:?}): \
                     is cluster {:?} defined?",
                    service.cluster
                );
                self.global_answer(0, None)
            }
        }
    }

    /// The service answered `token` (`None`: the call failed, with gRPC status
    /// `status`; 0 when it never started). Decides, then answers the request or
    /// lets it go on. Returns what the headers callback returns when the call
    /// never started; from the gRPC callback the action is applied here.
    fn global_answer(&mut self, status: u32, size: Option<usize>) -> Action {
        let Some(policy) = self.policy.clone() else {
            return Action::Continue;
        };
        let Some(routed) = self.routed() else {
            return Action::Continue;
        };
        let Some(wait) = routed.global.take() else {
            return Action::Continue;
        };
        let route = routed.route.clone();
        let Some(q) = &route.quota else {
            return Action::Continue;
        };
        let metrics = &route.metrics;
        let now = host::now_ms();
        let dispatched = wait.token != 0;
        if dispatched {
            metrics.record(
                "quota",
                "global_latency_ms",
                now.saturating_sub(wait.started_ms),
            );
        }
        let reply = match size {
            Some(size) => {
                let bytes = if size == 0 {
                    Some(Vec::new())
                } else if size > rls::MAX_REPLY_BYTES {
                    None
                } else {
                    host::buffer(BufferType::GrpcReceiveBuffer, 0, size)
                };
                match bytes.map(|b| rls::decode_reply(&b)) {
                    Some(Ok(reply)) => Some(reply),
                    Some(Err(e)) => {
                        metrics.count("quota", &format!("global_errors.{}", e.kind()), 1);
                        None
                    }
                    None => {
                        metrics.count("quota", "global_errors.malformed", 1);
                        None
                    }
                }
            }
            None => {
                let waited = now.saturating_sub(wait.started_ms);
                let timeout = policy
                    .rate_limit_service
                    .as_ref()
                    .map_or(0, |s| s.timeout_ms);
                let kind = match status {
                    _ if !dispatched => "global_errors.dispatch".to_string(),
                    // Envoy ends a call at its timeout as an upstream timeout,
                    // which reaches the module as UNAVAILABLE (14), not 4. Its
                    // timer counts from the event loop's cached time, which can be
                    // a few milliseconds older than the dispatch: hence the slack.
                    // A service that is down answers within a millisecond or two.
                    4 => "global_errors.timeout".to_string(),
                    14 if waited.saturating_add(timeout / 5 + 2) >= timeout => {
                        "global_errors.timeout".to_string()
                    }
                    14 => "global_errors.unavailable".to_string(),
                    n => format!("global_errors.grpc_{n}"),
                };
                metrics.count("quota", &kind, 1);
                None
            }
        };
        let outcome = q.resolve(&wait.ask, reply.as_ref(), &mut HostStore, now);
        for counter in &outcome.counters {
            metrics.count("quota", counter, 1);
        }
        let from_callback = dispatched;
        if let Some(rejection) = outcome.rejection {
            q.refund(&mut HostStore, &wait.taken);
            if let Some(action) = self.refuse(Some(&route), rejection) {
                return action;
            }
            let action = self.pass_reported(Some(&route));
            return self.release(from_callback, action);
        }
        let closest = quota::closest_of(wait.closest, outcome.closest);
        let Some(routed) = self.routed() else {
            return Action::Continue;
        };
        if route.mode == Mode::Enforce {
            routed.quota_headers = quota::closest_headers(closest);
        }
        let action = match routed.request {
            RequestStage::Holding { .. } if wait.body_done => self.finish_request_body(),
            // The body callbacks hold and check the body.
            RequestStage::Holding { .. } if policy.hold_at_headers => Action::Pause,
            RequestStage::Holding { .. } => Action::Continue,
            RequestStage::Forwarded => {
                route.metrics.decision("allowed");
                Action::Continue
            }
        };
        self.release(from_callback, action)
    }

    /// Applies `action` to a request held for the service: from the gRPC
    /// callback, `Continue` resumes it; from the headers callback it is returned.
    fn release(&mut self, from_callback: bool, action: Action) -> Action {
        if from_callback && action == Action::Continue {
            host::resume_request();
        }
        action
    }
}

/// Turns the route's cloaked parameters into real values, in `routed.params` and
/// in `:path`; a parameter that is not a valid token for the route and caller is
/// 404, as an undeclared path is (counted as `decision.cloak`).
fn decloak(routed: &mut Routed, path: &mut NormalizedPath) -> Result<(), Rejection> {
    let Some(rc) = routed.route.cloak.as_ref().filter(|c| c.accepts()) else {
        return Ok(());
    };
    let caller = authz::subject(routed.claims.as_deref());
    if !rc.decloak(caller.as_deref(), &mut routed.params, path) {
        return Err(Rejection::Cloak);
    }
    host::set_request_header(":path", Some(&path.request_target()));
    Ok(())
}

/// Token sources of the current request: the header snapshot and the query.
struct HostTokens<'a> {
    headers: &'a Headers,
    query: &'a str,
}

impl RequestTokens for HostTokens<'_> {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        // Repeated headers joined: cookies per RFC 6265 §5.4, others per RFC 9110 §5.3.
        let sep = if name.eq_ignore_ascii_case("cookie") {
            "; "
        } else {
            ","
        };
        self.headers.joined_borrowed(name, sep)
    }

    fn query(&self) -> Option<&str> {
        (!self.query.is_empty()).then_some(self.query)
    }

    fn peer_uri_san(&self) -> Option<Option<String>> {
        host::peer_uri_san()
    }

    fn peer_cert_sha256(&self) -> Option<String> {
        host::peer_cert_sha256()
    }
}

/// Response side. Found in Envoy 1.40 (docs/design.md, "Response masking"): response
/// headers held with `Action::Pause` can still be edited when the body ends, and a
/// local reply sent then replaces the whole response.
impl Filter {
    fn on_response_headers(&mut self, end_of_stream: bool) -> Action {
        let Some(policy) = self.policy.clone() else {
            return Action::Continue;
        };
        if policy.hold_at_headers && self.gave_up() {
            return Action::Continue;
        }
        if policy.blocking.is_some() {
            self.count_statuses(&policy);
        }
        let routed = match &mut self.state {
            State::Routed(routed) => Some(&mut **routed),
            // Undeclared endpoints get the security headers too.
            State::Passthrough => None,
            State::Start | State::Rejected => return Action::Continue,
        };
        let masked = routed
            .as_ref()
            .is_some_and(|r| matches!(r.response, ResponseStage::Masked));
        let sec = &policy.security_headers;
        // Measured in V8 (`make bench ARGS=--hostcalls`): reading a header map costs
        // about 1.4 µs (Envoy calls back into Wasm to allocate the copy), removing a
        // header under 0.1 µs when it is absent. So disclosure headers are removed
        // blindly, unless masking needs the response headers anyway.
        let headers = if masked {
            Headers::response()
        } else {
            Headers::default()
        };
        for name in &sec.remove {
            if !masked || headers.contains(name) {
                host::set_response_header(name, None);
            }
        }
        for (k, v) in &sec.add {
            host::set_response_header(k, Some(v));
        }
        let Some(routed) = routed else {
            return Action::Continue;
        };
        if sec.no_store_on_auth && routed.route.auth.is_some() {
            host::set_response_header("cache-control", Some("no-store"));
        }
        if let Some(headers) = &routed.quota_headers {
            for (k, v) in headers {
                host::set_response_header(k, Some(v));
            }
        }
        if !masked {
            return Action::Continue;
        }
        let Some(rp) = &routed.route.response else {
            return Action::Continue;
        };
        let content_encoding = headers.get("content-encoding");
        let content_type = headers.get("content-type");
        let head = ResponseHead {
            status: headers
                .first(":status")
                .and_then(|s| s.parse::<u32>().ok())
                .unwrap_or(0),
            content_encoding: content_encoding.as_deref(),
            content_type: content_type.as_deref(),
            content_length: headers
                .get("content-length")
                .and_then(|v| v.trim().parse::<u64>().ok()),
            end_of_stream,
            as_sent: routed.route.mode == Mode::Report,
        };
        let withhold = match rp.plan(&head) {
            ResponsePlan::Pass => return Action::Continue,
            ResponsePlan::PassUnmasked(reason) => {
                routed.response = ResponseStage::Untouched;
                routed
                    .route
                    .metrics
                    .count("response", &format!("unmasked.{reason}"), 1);
                return Action::Continue;
            }
            ResponsePlan::Hold => None,
            ResponsePlan::Withhold(rejection) => Some(rejection),
        };
        let report = routed.route.mode == Mode::Report;
        if report {
            if let Some(rejection) = withhold {
                // Nothing to hold: the verdict is known from the headers.
                routed.response = ResponseStage::Untouched;
                let route = routed.route.clone();
                self.refusal(Some(&route), &rejection);
                return Action::Continue;
            }
        }
        if !policy.hold_at_headers {
            if let Some(rejection) = withhold {
                // The headers would go on to the client: refuse now, while nothing
                // has reached it.
                return self.withhold_response(rejection);
            }
        }
        routed.response = ResponseStage::Holding {
            bytes: 0,
            withhold,
            status: head.status,
        };
        if !report {
            // The body will change length: Envoy sends it chunked (or recomputes).
            host::set_response_header("content-length", None);
        }
        self.hold_headers(&policy)
    }

    /// The held response's body bytes so far and upstream status, after recording
    /// `body_size` if given; `Err` with the rejection decided at its headers; `None`
    /// if the response is not held.
    fn held_response(
        &mut self,
        body_size: Option<usize>,
    ) -> Option<Result<(usize, u32), Rejection>> {
        let ResponseStage::Holding {
            bytes,
            withhold,
            status,
        } = &mut self.routed()?.response
        else {
            return None;
        };
        if let Some(n) = body_size {
            *bytes = n;
        }
        match withhold.take() {
            Some(rejection) => Some(Err(rejection)),
            None => Some(Ok((*bytes, *status))),
        }
    }

    fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.body_arrived() {
            return Action::Continue;
        }
        let status = match self.held_response(Some(body_size)) {
            None => return Action::Continue,
            Some(Err(rejection)) => return self.withhold_response(rejection),
            Some(Ok((_, status))) => status,
        };
        let Some(route) = self.routed().map(|r| r.route.clone()) else {
            return Action::Continue;
        };
        let Some(rp) = &route.response else {
            return Action::Continue;
        };
        match rp.check_size(body_size as u64, status) {
            None if end_of_stream => self.finish_masking(),
            None => Action::Pause,
            Some(plan) => self.unmaskable(plan),
        }
    }

    fn finish_masking(&mut self) -> Action {
        if self.body_arrived() {
            return Action::Continue;
        }
        let (size, status) = match self.held_response(None) {
            None => return Action::Continue,
            Some(Err(rejection)) => return self.withhold_response(rejection),
            Some(Ok(held)) => held,
        };
        let Some(routed) = self.routed() else {
            return Action::Continue;
        };
        routed.response = ResponseStage::Untouched;
        let route = routed.route.clone();
        let claims = routed.claims.clone();
        let Some(rp) = &route.response else {
            return Action::Continue;
        };
        let body = host::buffer(BufferType::HttpResponseBody, 0, size).unwrap_or_default();
        let outcome = match rp.apply(&body, claims.as_deref()) {
            Ok(outcome) => outcome,
            Err(rejection) => return self.unmaskable(rp.unmaskable(status, rejection)),
        };
        let metrics = &route.metrics;
        if let Some(trail) = &mut self.trail {
            trail.detectors = outcome
                .detector_hits
                .iter()
                .map(|(k, _)| k.clone())
                .collect();
        }
        for (kind, hits) in &outcome.detector_hits {
            metrics.count("response", &format!("detect.{kind}"), u64::from(*hits));
            log::info!(
                "route={} sensitive data in response: {kind} x{hits}",
                route.name
            );
        }
        if outcome.fields_masked > 0 {
            metrics.count(
                "response",
                "fields_masked",
                u64::from(outcome.fields_masked),
            );
        }
        if outcome.cloaked > 0 {
            metrics.count("cloak", "issued", u64::from(outcome.cloaked));
        }
        if outcome.body.is_some() && route.mode == Mode::Report {
            // Judged, not changed: the client gets the body as the upstream sent it.
            metrics.count("report", "masked", 1);
            return Action::Continue;
        }
        if let Some(new_body) = outcome.body {
            metrics.count("response", "masked", 1);
            if !host::replace_buffer(BufferType::HttpResponseBody, size, &new_body) {
                return self.withhold_response(Rejection::ResponseWithheld {
                    reason: "rewrite_failed",
                    description: "the response could not be masked".into(),
                    status: 502,
                });
            }
        }
        Action::Continue
    }

    /// Applies the plan for a body that cannot be masked: pass it (counted) or
    /// withhold it.
    fn unmaskable(&mut self, plan: ResponsePlan) -> Action {
        match plan {
            ResponsePlan::Withhold(rejection) => self.withhold_response(rejection),
            ResponsePlan::PassUnmasked(reason) => {
                if let Some(routed) = self.routed() {
                    routed.response = ResponseStage::Untouched;
                    let metrics = &routed.route.metrics;
                    metrics.count("response", &format!("unmasked.{reason}"), 1);
                }
                Action::Continue
            }
            ResponsePlan::Pass | ResponsePlan::Hold => Action::Continue,
        }
    }

    fn withhold_response(&mut self, rejection: Rejection) -> Action {
        let Some(routed) = self.routed() else {
            return Action::Continue;
        };
        let route = routed.route.clone();
        if !self.refusal(Some(&route), &rejection) {
            if let Some(routed) = self.routed() {
                routed.response = ResponseStage::Untouched;
            }
            return Action::Continue;
        }
        route
            .metrics
            .count("response", &format!("withheld.{}", rejection.reason()), 1);
        self.send_problem(Some(&route), &rejection)
    }
}

/// `apiguard.provider.<name>.signature.host` / `.module`: one per signature check.
fn count_signatures(checks: &[(String, jwt::hostsig::Backend)]) {
    for (provider, backend) in checks {
        metrics::provider_counter(provider, backend.counter());
    }
}

/// Counts a request to an undeclared endpoint and logs its pattern once per worker.
fn note_shadow_endpoint(method: &str, path: &NormalizedPath) {
    metrics::unmatched("allowed");
    let pattern = shadow_pattern_key(method, path);
    SHADOW_SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        if seen.len() < MAX_SHADOW_PATTERNS_LOGGED && seen.insert(pattern.clone()) {
            log::info!("undeclared endpoint {pattern} (unmatched: allow)");
        }
    });
}

fn shadow_pattern_key(method: &str, path: &NormalizedPath) -> String {
    let method: String = method
        .chars()
        .filter(|c| c.is_ascii_alphabetic())
        .take(16)
        .collect();
    format!("{method} {}", route::shadow_pattern(path))
}

impl Context for Filter {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let ours = self
            .routed()
            .and_then(|r| r.global.as_ref())
            .is_some_and(|w| w.token == token_id);
        if ours {
            let size = (status_code == 0).then_some(response_size);
            self.global_answer(status_code, size);
        }
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.on_request_headers(end_of_stream)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.on_request_body(body_size, end_of_stream)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // Trailers end the stream (HTTP/2, chunked): the body so far is all of it.
        self.finish_request_body()
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.on_response_headers(end_of_stream)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.on_response_body(body_size, end_of_stream)
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        // Trailers end the stream: the body seen so far is the whole body.
        self.finish_masking()
    }

    fn on_log(&mut self) {
        self.body_arrived();
        let id = self.id;
        GAVE_UP.with(|g| {
            let mut g = g.borrow_mut();
            if !g.is_empty() {
                g.retain(|i| *i != id);
            }
        });
        self.write_audit_record();
    }
}

/// The audit record.
impl Filter {
    /// Writes the request's audit record, if `audit.records` asks for it: to
    /// Envoy's log and to the filter state for the access log.
    fn write_audit_record(&mut self) {
        let Some(trail) = self.trail.take() else {
            return;
        };
        let Some(policy) = self.policy.clone() else {
            return;
        };
        let Some(audit) = &policy.audit else {
            return;
        };
        if trail.blocked {
            return;
        }
        let (decision, status, enforced) = match trail.refusal {
            Some(r) => (r.reason, r.status, r.enforced),
            None if audit.records_all() && trail.route.is_some() => {
                ("allowed", host::response_code().unwrap_or(0), true)
            }
            None => return,
        };
        let caller = self.caller_pseudonym(&policy, audit, trail.claims.as_deref());
        let route = trail.route.as_deref();
        let record = Record {
            route: route.map(|r| r.name.as_str()),
            method: &trail.method,
            path: route.map(|r| r.template.source()),
            status,
            decision,
            enforced,
            caller,
            provider: trail.provider.as_deref(),
            detectors: trail.detectors.iter().map(String::as_str).collect(),
            request_id: trail.request_id.as_deref(),
            rule: None,
        }
        .to_json();
        host::set_property(audit::PROPERTY, record.as_bytes());
        log::info!("api-guard audit: {record}");
    }

    /// The caller as records name it: a pseudonym of the primary identity's
    /// `sub`, else of the client address.
    fn caller_pseudonym(
        &mut self,
        policy: &Policy,
        audit: &audit::AuditPolicy,
        claims: Option<&Claims>,
    ) -> Option<(CallerKind, String)> {
        match authz::subject(claims) {
            Some(sub) => Some((CallerKind::Sub, audit.pseudonym(&sub))),
            None => self
                .client_ip(policy)
                .map(|ip| (CallerKind::Address, audit.pseudonym(&ip))),
        }
    }

    /// The client address, read once per request.
    fn client_ip(&mut self, policy: &Policy) -> Option<String> {
        if self.client_ip.is_none() {
            self.client_ip = Some(self.client_address(policy));
        }
        self.client_ip.clone().flatten()
    }

    /// Runs `f` with what caller keys (quotas, blocking rules) are made of.
    /// `header:` keys read what the upstream will see: the filter's own value of a
    /// header it sets (`set`), never the client's copy (which was removed).
    fn key_inputs<T>(
        &self,
        policy: &Policy,
        ip: Option<&str>,
        claims: Option<&Claims>,
        set: &[(String, String)],
        f: impl FnOnce(&KeyInputs<'_>) -> T,
    ) -> T {
        let headers = &self.headers;
        let header = |name: &str| {
            if let Some((_, v)) = set.iter().find(|(k, _)| http::same_header_name(k, name)) {
                return Some(v.clone());
            }
            if policy.is_output_header(name) {
                return None;
            }
            headers.get(name)
        };
        f(&KeyInputs {
            client_ip: ip,
            claims,
            header: &header,
        })
    }

    /// The client address as `quota.by: ip` reads it (`client_ip` settings).
    fn client_address(&self, policy: &Policy) -> Option<String> {
        let source = host::property(&["source", "address"]);
        let hops = policy.client_ip.xff_trusted_hops;
        let xff = if hops > 0 {
            self.headers.get("x-forwarded-for")
        } else {
            None
        };
        quota::client_ip(source.as_deref(), xff.as_deref(), hops)
    }
}

/// Automated blocking ([`crate::blocking`]).
impl Filter {
    /// The caller's key for `rule`; `None` without a value for its `by`.
    fn rule_caller(
        &mut self,
        policy: &Policy,
        rule: &Rule,
        claims: Option<&Claims>,
        set: &[(String, String)],
    ) -> Option<CallerKey> {
        let ip = if rule.needs_client_ip() {
            self.client_ip(policy)
        } else {
            None
        };
        self.key_inputs(policy, ip.as_deref(), claims, set, |inputs| {
            rule.caller(inputs)
        })
    }

    /// Seconds left of a block of this caller by an enforcing rule keyed before
    /// authentication (`ip`, `header:`) or after it (`claim:`). Blocks of rules
    /// under `report` are only counted.
    fn block_check(
        &mut self,
        policy: &Policy,
        claims: Option<&Claims>,
        set: &[(String, String)],
        before_auth: bool,
    ) -> Option<u64> {
        let blocking = policy.blocking.as_ref()?;
        let now = self.now_ms();
        let may_run = *self
            .blocks_may_run
            .get_or_insert_with(|| blocking.blocks_may_run(&HostStore, now));
        if !may_run {
            return None;
        }
        for rule in &blocking.rules {
            if rule.keyed_before_auth() != before_auth {
                continue;
            }
            let Some(key) = self.rule_caller(policy, rule, claims, set) else {
                continue;
            };
            let Some(ms) = rule.blocked_for(&HostStore, &key, now) else {
                continue;
            };
            if rule.mode == Mode::Report {
                metrics::blocking_counter(&rule.name, "report.blocked");
                continue;
            }
            metrics::blocking_counter(&rule.name, "blocked");
            return Some(ms.div_ceil(1000));
        }
        None
    }

    /// Answers 429 `blocked`, whatever the route's mode: the rule decided. The
    /// request has no audit record of its own (the block has one).
    fn refuse_blocked(&mut self, route: Option<&Rc<Route>>, retry_after: u64) -> Action {
        if let Some(trail) = &mut self.trail {
            trail.blocked = true;
        }
        self.reject_for(route.map(Rc::as_ref), Rejection::Blocked { retry_after })
    }

    /// Counts an event for every rule that counts `what` on `route`. Returns the
    /// length of a block an enforcing rule started with it: the event that passes
    /// `max` is refused too.
    fn count_events(
        &mut self,
        policy: &Policy,
        route: Option<&Rc<Route>>,
        claims: Option<&Claims>,
        set: &[(String, String)],
        what: impl Fn(&Count) -> bool,
        params: Option<&Params>,
    ) -> Option<u64> {
        let blocking = policy.blocking.as_ref()?;
        let now = self.now_ms();
        let mut block = None;
        for rule in &blocking.rules {
            if !what(&rule.count) || !rule.counts_on(route.map(|r| r.index)) {
                continue;
            }
            let Some(key) = self.rule_caller(policy, rule, claims, set) else {
                continue;
            };
            let event = match &rule.count {
                Count::DistinctParam(name) => {
                    match params.and_then(|ps| ps.iter().find(|(n, _)| **n == **name)) {
                        Some((_, value)) => rule.count_distinct(&mut HostStore, &key, value, now),
                        None => Event::Ignored,
                    }
                }
                _ => rule.count(&mut HostStore, &key, now),
            };
            if event != Event::Ignored {
                metrics::blocking_counter(&rule.name, "events");
            }
            if event == Event::BlockStarted {
                self.block_started(policy, rule, route, claims);
            }
            // An event past `max` is refused, also when a concurrent request of the
            // same caller started the block a moment before.
            let passed = matches!(event, Event::BlockStarted | Event::AlreadyBlocked);
            if passed && rule.mode == Mode::Enforce && block.is_none() {
                let left = rule.blocked_for(&HostStore, &key, now);
                block = Some(left.map_or(rule.block_seconds(), |ms| ms.div_ceil(1000)));
            }
        }
        block
    }

    /// Counts the upstream's status for the `status` rules of the route.
    fn count_statuses(&mut self, policy: &Policy) {
        let State::Routed(routed) = &self.state else {
            return;
        };
        let route = routed.route.clone();
        let Some(blocking) = &policy.blocking else {
            return;
        };
        let counted = blocking
            .rules
            .iter()
            .any(|r| matches!(r.count, Count::Status(_)) && r.counts_on(Some(route.index)));
        if !counted {
            return;
        }
        let Some(status) = host::response_header(":status").and_then(|s| s.parse::<u32>().ok())
        else {
            return;
        };
        let (claims, set) = (routed.claims.clone(), routed.set_headers.clone());
        let hit = |c: &Count| matches!(c, Count::Status(list) if list.contains(&status));
        // The response is on its way: a block applies from the caller's next request.
        self.count_events(policy, Some(&route), claims.as_deref(), &set, hit, None);
    }

    /// A block started: counted, and written once, as an audit record when the
    /// audit log is on (else as a line without the caller).
    fn block_started(
        &mut self,
        policy: &Policy,
        rule: &Rule,
        route: Option<&Rc<Route>>,
        claims: Option<&Claims>,
    ) {
        let enforced = rule.mode == Mode::Enforce;
        let counter = if enforced {
            "started"
        } else {
            "report.started"
        };
        metrics::blocking_counter(&rule.name, counter);
        let Some(audit) = &policy.audit else {
            log::info!(
                "blocking rule {} {} a caller for {} s",
                rule.name,
                if enforced {
                    "blocks"
                } else {
                    "would block (mode: report)"
                },
                rule.block_seconds()
            );
            return;
        };
        let caller = self.caller_pseudonym(policy, audit, claims);
        let (method, request_id) = match &self.trail {
            Some(t) => (t.method.as_str(), t.request_id.as_deref()),
            None => ("", None),
        };
        let record = Record {
            route: route.map(|r| r.name.as_str()),
            method,
            path: route.map(|r| r.template.source()),
            status: 429,
            decision: "blocked",
            enforced,
            caller,
            provider: None,
            detectors: Vec::new(),
            request_id,
            rule: Some(&rule.name),
        }
        .to_json();
        log::info!("api-guard audit: {record}");
    }
}
