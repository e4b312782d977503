//! The root context: owns the compiled policy and the JWT key store of one
//! worker's VM.
//!
//! `on_configure` parses and compiles the whole configuration and decides who
//! verifies RS* and ES* signatures (`signature_backend`, which may check Envoy's
//! `verify_signature` once, see [`crate::jwt::hostsig`]); any error is
//! logged with its field path and `false` is returned, so Envoy refuses the
//! plugin (and `envoy --mode validate` fails) instead of running unprotected.
//! Remote JWKS are fetched from here with `dispatch_http_call`: first at
//! configure time, then on a one-second tick that serves refreshes, retries with
//! back-off, and refetches requested by requests that named an unknown `kid`.
//! Each worker VM keeps its own key set (no cross-thread sharing of parsed keys).

use crate::filter::Filter;
use crate::host::{self, BufferType};
use crate::jwt::{hostsig, AuthState, Verifier};
use crate::metrics;
use crate::policy::Policy;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// Longest tick period while remote key sets are configured. The tick also
/// flushes batched metrics (`metrics_flush_ms`), so with remote key sets the
/// counts reach Envoy at least this often.
const TICK: Duration = Duration::from_secs(1);

/// Root context of the plugin.
#[derive(Default)]
pub struct Root {
    policy: Option<Rc<Policy>>,
    auth: Option<Rc<AuthState>>,
    /// Call token -> provider name, for JWKS fetches in flight.
    pending: HashMap<u32, String>,
}

fn now_s() -> u64 {
    host::now_ms() / 1000
}

impl Root {
    fn fetch_due_keys(&mut self) {
        let Some(auth) = self.auth.clone() else {
            return;
        };
        let now = now_s();
        let due = auth.keys.borrow_mut().due_fetches(now);
        for f in due {
            let headers = vec![
                (":method", "GET"),
                (":path", f.path.as_str()),
                (":authority", f.authority.as_str()),
                ("accept", "application/json"),
            ];
            match host::dispatch_http_call(&f.cluster, headers, Duration::from_millis(f.timeout_ms))
            {
                Ok(token) => {
                    self.pending.insert(token, f.provider);
                }
                Err(status) => {
                    log::warn!(
                        "key fetch for provider {} via cluster {} not dispatched: {status:?}",
                        f.provider,
                        f.cluster
                    );
                    let _ = auth
                        .keys
                        .borrow_mut()
                        .on_fetch_response(&f.provider, None, &[], now);
                    metrics::provider_counter(&f.provider, "jwks.fetch_failure");
                }
            }
        }
        let keys = auth.keys.borrow();
        for p in keys.remote_providers() {
            if let Some(age) = keys.key_set_age(p, now) {
                metrics::gauge(&format!("apiguard.provider.{p}.jwks.age_seconds"), age);
            }
        }
    }
}

impl Context for Root {
    fn on_done(&mut self) -> bool {
        // The plugin is going away (configuration change, shutdown): hand over
        // the counts of the last period.
        metrics::flush();
        true
    }

    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(provider) = self.pending.remove(&token_id) else {
            return;
        };
        let Some(auth) = self.auth.clone() else {
            return;
        };
        // No headers means the call failed (reset, timeout, no healthy host).
        let status = if num_headers == 0 {
            None
        } else {
            host::call_response_header(":status").and_then(|s| s.parse::<u32>().ok())
        };
        let body = if body_size > 0 {
            host::buffer(BufferType::HttpCallResponseBody, 0, body_size).unwrap_or_default()
        } else {
            Vec::new()
        };
        let result = auth
            .keys
            .borrow_mut()
            .on_fetch_response(&provider, status, &body, now_s());
        match result {
            Ok(n) => {
                metrics::provider_counter(&provider, "jwks.fetch_success");
                log::info!("JWKS for provider {provider} loaded: {n} key(s)");
            }
            Err(reason) => {
                metrics::provider_counter(&provider, "jwks.fetch_failure");
                log::warn!("key fetch for provider {provider} failed ({reason}); keeping the last good key set");
            }
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = host::buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        )
        .unwrap_or_default();
        let loaded = Policy::from_bytes(&bytes).and_then(|policy| {
            // Once per configuration: the host's check is a few signature checks.
            let choice = hostsig::choose(policy.signature_backend, || {
                hostsig::probe(&host::EnvoySignatures)
            })?;
            Ok((policy, choice))
        });
        match loaded {
            Ok((policy, choice)) => {
                log::info!(
                    "configuration loaded: {} route(s), {} provider(s)",
                    policy.routes.len(),
                    policy.providers.len()
                );
                log::info!("api-guard: {}", choice.summary);
                let verifier = Verifier::host(&host::EnvoySignatures, choice.families);
                let auth = AuthState::new(&policy.providers, now_s(), verifier);
                let remote = auth.keys.borrow().remote_providers().next().is_some();
                self.auth = Some(Rc::new(auth));
                self.pending.clear();
                metrics::set_batching(policy.metrics_flush.is_some());
                // Held messages are watched on the tick (see `filter::answer_stalled`).
                let every_second = remote || (policy.reads_bodies && policy.hold_at_headers);
                let tick = match (policy.metrics_flush, every_second) {
                    (Some(flush), true) => Some(flush.min(TICK)),
                    (Some(flush), false) => Some(flush),
                    (None, true) => Some(TICK),
                    (None, false) => None,
                };
                self.policy = Some(Rc::new(policy));
                if remote {
                    // Start fetching now, so the fail-closed window before the first
                    // key set is as short as the identity provider allows.
                    self.fetch_due_keys();
                }
                if let Some(period) = tick {
                    host::set_tick_period(period);
                }
                true
            }
            Err(e) => {
                log::error!("invalid plugin configuration: {e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        crate::filter::answer_stalled(host::now_ms());
        metrics::flush();
        self.fetch_due_keys();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter::new(
            self.policy.clone(),
            self.auth.clone(),
            context_id,
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
