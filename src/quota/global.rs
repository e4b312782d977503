//! A route's quotas as a whole: one or several limits (`quota` as an array), each
//! with optional tiers and a scope, `local` (shared data, this Envoy) or `global`
//! (a rate-limit service shared by the mesh, [`super::rls`]). Pure: the filter
//! glue passes the store, the clock and the service's reply in.
//!
//! Order of a request: every local limit is counted first, in the order written;
//! the first that refuses refuses the request and the ones already counted are
//! given back ([`QuotaPolicy::refund`]), so a refused request consumes nothing
//! locally and never reaches the service. Then, if the route has global limits,
//! one `ShouldRateLimit` call carries one descriptor per global limit; the
//! request waits for it. A refusal there gives the local counts back too.
//!
//! The caller leaves the proxy only as its pseudonym: the 64-bit keyed hash the
//! local quotas place it with (SipHash-2-4 under `quota_settings.key_salt` of the
//! route and the `by` value), as 16 hex digits. Every Envoy of the mesh must share
//! the salt for a caller to be one caller everywhere.

use super::rls::{DescriptorStatus, Reply};
use super::{CallerKey, KeyBy, KeyInputs, QuotaDecision, QuotaPolicy, SharedStore};
use crate::authz::{lookup_claim, scalar_text, Claims};
use crate::config::check::{self, in_range};
use crate::config::{quota_entries, ConfigError, FailureMode, QuotaSettings};
use crate::reply::Rejection;
use serde_json::Value;
use std::fmt::Write;

/// Default of `rate_limit_service.timeout_ms`.
pub const DEFAULT_RLS_TIMEOUT_MS: u64 = 50;
/// Largest accepted `rate_limit_service.timeout_ms`.
pub const MAX_RLS_TIMEOUT_MS: u64 = 60_000;
/// Descriptor value of callers without a listed tier.
pub const DEFAULT_TIER: &str = "default";

/// `rate_limit_service`: where global quotas are asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitService {
    /// Envoy cluster of the service (HTTP/2).
    pub cluster: String,
    /// `RateLimitRequest.domain`.
    pub domain: String,
    /// How long a request waits for the answer.
    pub timeout_ms: u64,
}

impl RateLimitService {
    /// Checks the top-level `rate_limit_service` object; errors name
    /// `rate_limit_service.<field>`.
    pub fn compile(value: Option<&Value>) -> Result<Option<RateLimitService>, ConfigError> {
        const BASE: &str = "rate_limit_service";
        let Some(value) = value else {
            return Ok(None);
        };
        let map = check::object(value, BASE, &["cluster", "domain", "timeout_ms"])?;
        let text = |name: &str| -> Result<String, ConfigError> {
            match map.get(name) {
                Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => Ok(s.clone()),
                Some(Value::String(_)) => Err(ConfigError::new(
                    format!("{BASE}.{name}"),
                    "must be 1 to 255 characters",
                )),
                Some(_) => Err(ConfigError::new(
                    format!("{BASE}.{name}"),
                    "expected a string",
                )),
                None => Err(ConfigError::new(BASE, format!("missing field `{name}`"))),
            }
        };
        let timeout_ms = match map.get("timeout_ms") {
            None => DEFAULT_RLS_TIMEOUT_MS,
            Some(v) => match v.as_u64() {
                Some(ms) => in_range(ms, 1, MAX_RLS_TIMEOUT_MS, "rate_limit_service.timeout_ms")?,
                None => {
                    return Err(ConfigError::new(
                        "rate_limit_service.timeout_ms",
                        "expected a whole number of milliseconds",
                    ))
                }
            },
        };
        Ok(Some(RateLimitService {
            cluster: text("cluster")?,
            domain: text("domain")?,
            timeout_ms,
        }))
    }
}

/// `quota.tiers`: the limit by a verified claim's value.
#[derive(Debug, Clone)]
struct Tiers {
    claim: String,
    limits: Vec<(String, QuotaPolicy)>,
}

/// One limit of a route (one object of `quota`).
#[derive(Debug, Clone)]
pub struct QuotaEntry {
    /// The `limit` policy; for a global limit, the local fallback's count.
    policy: QuotaPolicy,
    tiers: Option<Tiers>,
    global: bool,
    failure_mode: FailureMode,
    /// The `quota` descriptor entry that tells several global limits apart.
    tag: Option<String>,
}

impl QuotaEntry {
    /// This caller's tier: its index in `tiers.limits` (`None`: `limit`).
    fn tier_of(&self, claims: Option<&Claims>) -> Option<usize> {
        let tiers = self.tiers.as_ref()?;
        let value = claims
            .and_then(|c| lookup_claim(c, &tiers.claim))
            .and_then(scalar_text)?;
        tiers.limits.iter().position(|(name, _)| *name == value)
    }

    /// The policy of tier `tier` (see [`Self::tier_of`]).
    fn policy(&self, tier: Option<usize>) -> &QuotaPolicy {
        match (tier, &self.tiers) {
            (Some(t), Some(tiers)) => tiers.limits.get(t).map_or(&self.policy, |(_, p)| p),
            _ => &self.policy,
        }
    }

    /// The `tier` descriptor value of tier `tier` (`None` without tiers).
    fn tier_name(&self, tier: Option<usize>) -> Option<&str> {
        let tiers = self.tiers.as_ref()?;
        Some(match tier.and_then(|t| tiers.limits.get(t)) {
            Some((name, _)) => name,
            None => DEFAULT_TIER,
        })
    }
}

/// A count taken for a request: (entry index, tier, caller key).
pub type Taken = (usize, Option<usize>, CallerKey);

/// Every limit of a route, compiled from `routes[N].quota`.
#[derive(Debug, Clone)]
pub struct RouteQuotas {
    entries: Vec<QuotaEntry>,
    has_global: bool,
}

/// Result of [`RouteQuotas::check_local`].
#[derive(Debug)]
pub enum LocalOutcome {
    /// Every local limit admitted (or failed open); the counts to give back if a
    /// later limit refuses, and the admitted decision closest to exhaustion.
    Passed {
        /// each count taken.
        taken: Vec<Taken>,
        /// For `RateLimit-*`, with the entry's `headers_on_success`.
        closest: Option<(QuotaDecision, bool)>,
    },
    /// A local limit refused (nothing stays counted).
    Refused(Rejection),
}

/// A pending question to the rate-limit service.
#[derive(Debug, Clone)]
pub struct GlobalAsk {
    /// The encoded `RateLimitRequest`.
    pub message: Vec<u8>,
    /// The limit asked about by each descriptor, in order.
    asked: Vec<Taken>,
}

/// What the service's answer (or its absence) decided.
#[derive(Debug, Default)]
pub struct GlobalOutcome {
    /// The refusal, if any (the local counts must then be given back).
    pub rejection: Option<Rejection>,
    /// The admitted decision closest to exhaustion, with `headers_on_success`.
    pub closest: Option<(QuotaDecision, bool)>,
    /// `quota.<counter>` counts: `global_admitted`, `global_limited`,
    /// `global_fallback`, and the fallback count's own `admitted`/`limited`.
    pub counters: Vec<&'static str>,
    /// Local fallback counts taken (given back on refusal like the others).
    pub taken: Vec<Taken>,
}

impl RouteQuotas {
    /// Compiles `routes[N].quota` (`base` is its path) of route `route`.
    pub(crate) fn compile(
        value: &Value,
        settings: &QuotaSettings,
        route: &str,
        base: &str,
        service: Option<&RateLimitService>,
    ) -> Result<RouteQuotas, ConfigError> {
        let configs = quota_entries(value, base)?;
        let globals = configs
            .iter()
            .filter(|(c, _)| c.scope.as_deref() == Some("global"))
            .count();
        let mut entries = Vec::with_capacity(configs.len());
        for (i, (cfg, path)) in configs.iter().enumerate() {
            let global = match cfg.scope.as_deref() {
                None | Some("local") => false,
                Some("global") => true,
                Some(_) => {
                    return Err(ConfigError::new(
                        format!("{path}.scope"),
                        "expected `local` or `global`",
                    ))
                }
            };
            if global && service.is_none() {
                return Err(ConfigError::new(
                    format!("{path}.scope"),
                    "`global` needs the top-level `rate_limit_service` (cluster and domain)",
                ));
            }
            if !global && cfg.failure_mode == FailureMode::Local {
                return Err(ConfigError::new(
                    format!("{path}.failure_mode"),
                    "`local` is the fallback of `scope: global`: expected `closed` or `open`",
                ));
            }
            let mut policy = QuotaPolicy::compile(cfg, settings, route, path)?;
            // Entry 0 keeps the route's own table (`apiguard.q.<route>.`), as
            // before arrays existed; global limits count locally only on fallback.
            if global {
                policy = policy.with_table(&format!("{route}~g{i}"));
            } else if i > 0 {
                policy = policy.with_table(&format!("{route}~{i}"));
            }
            let tiers = match &cfg.tiers {
                Some(t) => Some(compile_tiers(t, &policy, &format!("{path}.tiers"))?),
                None => None,
            };
            entries.push(QuotaEntry {
                policy,
                tiers,
                global,
                failure_mode: cfg.failure_mode,
                tag: (global && globals > 1).then(|| i.to_string()),
            });
        }
        Ok(RouteQuotas {
            entries,
            has_global: globals > 0,
        })
    }

    /// True if any limit counts by the client address.
    pub fn needs_client_ip(&self) -> bool {
        self.entries.iter().any(|e| *e.policy.by() == KeyBy::Ip)
    }

    /// Counts the request against every local limit (see the module docs).
    /// `count` receives each decision's metric label.
    pub fn check_local(
        &self,
        store: &mut dyn SharedStore,
        inputs: &KeyInputs<'_>,
        now_ms: u64,
        count: &mut dyn FnMut(&'static str, u32),
    ) -> LocalOutcome {
        let mut taken: Vec<Taken> = Vec::new();
        let mut closest = None;
        for (i, entry) in self.entries.iter().enumerate() {
            if entry.global {
                continue;
            }
            let tier = entry.tier_of(inputs.claims);
            let policy = entry.policy(tier);
            let key = policy.caller_key(inputs);
            let check = policy.check(store, &key, now_ms);
            count(check.decision.label(), check.cas_retries);
            if let Some(rejection) = policy.rejection(&check.decision) {
                self.refund(store, &taken);
                return LocalOutcome::Refused(rejection);
            }
            if matches!(check.decision, QuotaDecision::Admitted { .. }) {
                taken.push((i, tier, key));
                closer(&mut closest, check.decision, policy.sends_headers());
            }
        }
        LocalOutcome::Passed { taken, closest }
    }

    /// Gives back the counts in `taken` (made by [`Self::check_local`] or a
    /// fallback of [`Self::resolve`]).
    pub fn refund(&self, store: &mut dyn SharedStore, taken: &[Taken]) {
        for (i, tier, key) in taken {
            if let Some(entry) = self.entries.get(*i) {
                entry.policy(*tier).refund(store, key);
            }
        }
    }

    /// The question for the service, if the route has global limits: one
    /// descriptor per global limit, `route`, then `caller` (unless `by: route`),
    /// `tier` (with tiers) and `quota` (with several global limits).
    pub fn global_ask(
        &self,
        domain: &str,
        route: &str,
        inputs: &KeyInputs<'_>,
    ) -> Option<GlobalAsk> {
        if !self.has_global {
            return None;
        }
        let mut asked = Vec::new();
        let mut owned: Vec<Vec<(&'static str, String)>> = Vec::new();
        for (i, entry) in self.entries.iter().enumerate() {
            if !entry.global {
                continue;
            }
            let tier_index = entry.tier_of(inputs.claims);
            let policy = entry.policy(tier_index);
            let key = policy.caller_key(inputs);
            let tier = entry.tier_name(tier_index);
            let mut d: Vec<(&'static str, String)> = vec![("route", route.to_string())];
            if *policy.by() != KeyBy::Route {
                let mut hex = String::with_capacity(16);
                let _ = write!(hex, "{:016x}", key.fingerprint());
                d.push(("caller", hex));
            }
            if let Some(tier) = tier {
                d.push(("tier", tier.to_string()));
            }
            if let Some(tag) = &entry.tag {
                d.push(("quota", tag.clone()));
            }
            asked.push((i, tier_index, key));
            owned.push(d);
        }
        let borrowed: Vec<Vec<(&str, &str)>> = owned
            .iter()
            .map(|d| d.iter().map(|(k, v)| (*k, v.as_str())).collect())
            .collect();
        Some(GlobalAsk {
            message: super::rls::encode_request(domain, &borrowed),
            asked,
        })
    }

    /// Decides on the service's `reply` (`None`: no usable answer, its kind
    /// counted by the caller), applying each global limit's `failure_mode` when
    /// there is none; `local` counts in `store` at `now_ms`.
    pub fn resolve(
        &self,
        ask: &GlobalAsk,
        reply: Option<&Reply>,
        store: &mut dyn SharedStore,
        now_ms: u64,
    ) -> GlobalOutcome {
        let mut out = GlobalOutcome::default();
        for (j, (i, tier, key)) in ask.asked.iter().enumerate() {
            let Some(entry) = self.entries.get(*i) else {
                continue;
            };
            let policy = entry.policy(*tier);
            // A bare `OK` says nothing of what is left: no `RateLimit-*` from it.
            let mut informative = true;
            let decision = match reply {
                Some(reply) => {
                    let status = reply.statuses.get(j).copied();
                    informative = status.is_some();
                    let over = match status {
                        Some(s) => s.over_limit || (reply.over_limit && !any_over(reply)),
                        None => reply.over_limit,
                    };
                    out.counters.push(if over {
                        "global_limited"
                    } else {
                        "global_admitted"
                    });
                    from_service(policy, status, reply.reset_header, over)
                }
                None => match entry.failure_mode {
                    FailureMode::Closed => {
                        QuotaDecision::StoreError(super::StoreError::Unavailable)
                    }
                    FailureMode::Open => continue,
                    FailureMode::Local => {
                        out.counters.push("global_fallback");
                        let check = policy.check(store, key, now_ms);
                        out.counters.push(check.decision.label());
                        if matches!(check.decision, QuotaDecision::Admitted { .. }) {
                            out.taken.push((*i, *tier, *key));
                        }
                        check.decision
                    }
                },
            };
            match decision {
                QuotaDecision::Admitted { .. } if informative => {
                    closer(&mut out.closest, decision, policy.sends_headers());
                }
                QuotaDecision::Admitted { .. } => {}
                QuotaDecision::Limited { .. } | QuotaDecision::StoreError(_) => {
                    if out.rejection.is_none() {
                        out.rejection = match decision {
                            QuotaDecision::StoreError(_) => Some(Rejection::QuotaUnavailable),
                            _ => policy.rejection(&decision),
                        };
                    }
                }
            }
        }
        if out.rejection.is_some() {
            self.refund(store, &out.taken);
            out.taken.clear();
        }
        out
    }
}

fn any_over(reply: &Reply) -> bool {
    reply.statuses.iter().any(|s| s.over_limit)
}

/// The decision the service's status stands for; what it leaves out comes from
/// the configured limit and window.
fn from_service(
    policy: &QuotaPolicy,
    status: Option<DescriptorStatus>,
    reset_header: Option<u64>,
    over: bool,
) -> QuotaDecision {
    let limit = status
        .and_then(|s| s.limit)
        .filter(|l| *l > 0)
        .unwrap_or(policy.limit_value());
    let reset = status
        .and_then(|s| s.reset_seconds)
        .filter(|s| *s > 0)
        .or(reset_header.filter(|s| *s > 0))
        .unwrap_or(policy.window())
        .max(1);
    if over {
        QuotaDecision::Limited {
            limit,
            retry_after_seconds: reset,
            reset_seconds: reset,
        }
    } else {
        QuotaDecision::Admitted {
            limit,
            remaining: status.map_or(0, |s| s.remaining),
            reset_seconds: reset,
        }
    }
}

/// The admitted decision closest to exhaustion of `a` and `b`.
pub fn closest_of(
    a: Option<(QuotaDecision, bool)>,
    b: Option<(QuotaDecision, bool)>,
) -> Option<(QuotaDecision, bool)> {
    let mut out = a;
    if let Some((d, h)) = b {
        closer(&mut out, d, h);
    }
    out
}

/// `RateLimit-*` headers of `closest`, if its limit sends them.
pub fn closest_headers(
    closest: Option<(QuotaDecision, bool)>,
) -> Option<[(&'static str, String); 3]> {
    closest
        .filter(|(_, headers)| *headers)
        .and_then(|(d, _)| d.rate_limit_headers())
}

/// Keeps in `closest` the admitted decision with the fewest requests left (on a
/// tie, the later reset).
fn closer(closest: &mut Option<(QuotaDecision, bool)>, decision: QuotaDecision, headers: bool) {
    let rank = |d: &QuotaDecision| match d {
        QuotaDecision::Admitted {
            remaining,
            reset_seconds,
            ..
        } => (*remaining, u64::MAX - *reset_seconds),
        _ => (u64::MAX, u64::MAX),
    };
    if closest
        .as_ref()
        .is_none_or(|(c, _)| rank(&decision) < rank(c))
    {
        *closest = Some((decision, headers));
    }
}

/// Compiles `quota.tiers`: `{ "claim": <name>, "limits": { <value>: <limit> } }`.
fn compile_tiers(value: &Value, base: &QuotaPolicy, path: &str) -> Result<Tiers, ConfigError> {
    let map = check::object(value, path, &["claim", "limits"])?;
    let claim = match map.get("claim") {
        Some(Value::String(c)) if !c.is_empty() && c.trim() == c => c.clone(),
        Some(_) => {
            return Err(ConfigError::new(
                format!("{path}.claim"),
                "expected a claim name",
            ))
        }
        None => return Err(ConfigError::new(path, "missing field `claim`")),
    };
    let limits = match map.get("limits") {
        Some(Value::Object(l)) if !l.is_empty() => l,
        Some(_) => {
            return Err(ConfigError::new(
                format!("{path}.limits"),
                "expected an object of claim values to limits, not empty",
            ))
        }
        None => return Err(ConfigError::new(path, "missing field `limits`")),
    };
    let mut out = Vec::with_capacity(limits.len());
    for (name, limit) in limits {
        let at = format!("{path}.limits.{name}");
        if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new(
                at,
                "a tier value is 1 to 64 printable ASCII characters (it is sent to the rate-limit service)",
            ));
        }
        if name == DEFAULT_TIER {
            return Err(ConfigError::new(
                at,
                "`default` names callers without a listed value; set `limit` for them",
            ));
        }
        let Some(limit) = limit.as_u64() else {
            return Err(ConfigError::new(at, "expected a whole number of requests"));
        };
        out.push((name.clone(), base.with_limit(limit, &at)?));
    }
    Ok(Tiers { claim, limits: out })
}

#[cfg(test)]
mod tests {
    use super::super::rls::{decode_reply, DescriptorStatus, Reply};
    use super::super::MemoryStore;
    use super::*;
    use serde_json::json;

    fn service() -> RateLimitService {
        RateLimitService {
            cluster: "ratelimit".into(),
            domain: "apiguard".into(),
            timeout_ms: 50,
        }
    }

    fn compile(quota: Value) -> Result<RouteQuotas, String> {
        let settings = QuotaSettings::default();
        RouteQuotas::compile(&quota, &settings, "r", "routes[0].quota", Some(&service()))
            .map_err(|e| e.to_string())
    }

    fn quotas(quota: Value) -> RouteQuotas {
        match compile(quota) {
            Ok(q) => q,
            Err(e) => panic!("{e}"),
        }
    }

    fn inputs<'a>(
        header: &'a dyn Fn(&str) -> Option<String>,
        claims: Option<&'a Claims>,
    ) -> KeyInputs<'a> {
        KeyInputs {
            client_ip: None,
            claims,
            header,
        }
    }

    fn local(q: &RouteQuotas, store: &mut MemoryStore, who: &str, now: u64) -> LocalOutcome {
        let h = |name: &str| (name == "x-caller").then(|| who.to_string());
        q.check_local(store, &inputs(&h, None), now, &mut |_, _| {})
    }

    fn passed(o: &LocalOutcome) -> bool {
        matches!(o, LocalOutcome::Passed { .. })
    }

    #[test]
    fn service_defaults_and_errors_name_the_field() {
        let ok = RateLimitService::compile(Some(&json!({"cluster": "c", "domain": "d"})));
        assert_eq!(ok.unwrap().unwrap().timeout_ms, DEFAULT_RLS_TIMEOUT_MS);
        assert_eq!(RateLimitService::compile(None).unwrap(), None);
        for (v, want) in [
            (json!("x"), "rate_limit_service: must be an object"),
            (
                json!({"cluster": "c"}),
                "rate_limit_service: missing field `domain`",
            ),
            (
                json!({"cluster": "", "domain": "d"}),
                "rate_limit_service.cluster: must be 1 to 255",
            ),
            (
                json!({"cluster": 1, "domain": "d"}),
                "rate_limit_service.cluster: expected a string",
            ),
            (
                json!({"cluster": "c", "domain": "d", "timeout_ms": 0}),
                "rate_limit_service.timeout_ms: must be > 0",
            ),
            (
                json!({"cluster": "c", "domain": "d", "timeout_ms": 60001}),
                "rate_limit_service.timeout_ms: must be <= 60000",
            ),
            (
                json!({"cluster": "c", "domain": "d", "timeout_ms": "5"}),
                "rate_limit_service.timeout_ms: expected a whole",
            ),
            (
                json!({"cluster": "c", "domain": "d", "extra": 1}),
                "rate_limit_service.extra: unknown field",
            ),
        ] {
            let e = RateLimitService::compile(Some(&v)).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}");
        }
    }

    #[test]
    fn configuration_errors_name_the_field() {
        let settings = QuotaSettings::default();
        let no_service = RouteQuotas::compile(
            &json!({"limit": 1, "window_seconds": 1, "scope": "global"}),
            &settings,
            "r",
            "routes[0].quota",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            no_service.starts_with(
                "routes[0].quota.scope: `global` needs the top-level `rate_limit_service`"
            ),
            "{no_service}"
        );
        for (v, want) in [
            (
                json!({"limit": 1, "window_seconds": 1, "scope": "mesh"}),
                "routes[0].quota.scope: expected `local` or `global`",
            ),
            (
                json!({"limit": 1, "window_seconds": 1, "failure_mode": "local"}),
                "routes[0].quota.failure_mode: `local` is the fallback",
            ),
            (json!([]), "routes[0].quota: must hold at least one quota"),
            (
                json!(3),
                "routes[0].quota: expected a quota object or an array",
            ),
            (
                json!([{"limit": 1, "window_seconds": 1}, {"limit": 1}]),
                "routes[0].quota[1]: missing field `window_seconds`",
            ),
            (
                json!([{"limit": 1, "window_seconds": 1}, {"limit": 1, "window_seconds": 0}]),
                "routes[0].quota[1].window_seconds: must be > 0",
            ),
            (
                json!({"limit": 1, "window_seconds": 1, "tiers": {"claim": "plan"}}),
                "routes[0].quota.tiers: missing field `limits`",
            ),
            (
                json!({"limit": 1, "window_seconds": 1, "tiers": {"limits": {"a": 1}}}),
                "routes[0].quota.tiers: missing field `claim`",
            ),
            (
                json!({"limit": 1, "window_seconds": 1, "tiers": {"claim": "plan", "limits": {}}}),
                "routes[0].quota.tiers.limits: expected an object",
            ),
            (
                json!({"limit": 1, "window_seconds": 1, "tiers": {"claim": "plan", "limits": {"gold": 0}}}),
                "routes[0].quota.tiers.limits.gold: must be > 0",
            ),
            (
                json!({"limit": 1, "window_seconds": 1, "tiers": {"claim": "plan", "limits": {"default": 5}}}),
                "routes[0].quota.tiers.limits.default: `default` names",
            ),
            (
                json!({"limit": 1, "window_seconds": 1, "tiers": {"claim": "plan", "limits": {"a b": 5}}}),
                "routes[0].quota.tiers.limits.a b: a tier value",
            ),
            (
                json!({"limit": 1, "window_seconds": 1, "tiers": {"claim": "plan", "limits": {"a": 5}, "x": 1}}),
                "routes[0].quota.tiers.x: unknown field",
            ),
        ] {
            let e = compile(v).err().unwrap_or_default();
            assert!(e.starts_with(want), "{e}");
        }
        let mask = crate::policy::Policy::from_bytes(
            br#"{"routes":[{"name":"a","match":{"path":"/a"},"response":{"failure_mode":"local"}}]}"#,
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(
            mask.starts_with("routes[0].response.failure_mode: expected `closed` or `open`"),
            "{mask}"
        );
    }

    #[test]
    fn a_refusal_by_a_later_limit_gives_the_earlier_counts_back() {
        let q = quotas(json!([
            {"limit": 2, "window_seconds": 600, "by": "header:x-caller"},
            {"limit": 1, "window_seconds": 600, "by": "route"}
        ]));
        let mut store = MemoryStore::new();
        assert!(passed(&local(&q, &mut store, "a", 1_000)));
        // The route-wide limit (1) refuses b: b's own count is given back...
        for _ in 0..5 {
            assert!(matches!(
                local(&q, &mut store, "b", 1_000),
                LocalOutcome::Refused(Rejection::TooManyRequests { limit: 1, .. })
            ));
        }
        // ...so b still has its 2 once the route-wide limit has room again.
        let later = 1_000 + 600_000;
        assert!(passed(&local(&q, &mut store, "b", later)));
        // Entry 0 keeps the route's own table; entry 1 has its own.
        let keys: Vec<&str> = store.keys().collect();
        assert!(
            keys.iter().any(|k| k.starts_with("apiguard.q.r.")),
            "{keys:?}"
        );
        assert!(
            keys.iter().any(|k| k.starts_with("apiguard.q.r~1.")),
            "{keys:?}"
        );
    }

    #[test]
    fn refund_restores_exactly_one_request() {
        let q = quotas(json!({"limit": 2, "window_seconds": 60, "by": "header:x-caller"}));
        let mut store = MemoryStore::new();
        let LocalOutcome::Passed { taken, .. } = local(&q, &mut store, "a", 0) else {
            panic!("refused");
        };
        assert!(passed(&local(&q, &mut store, "a", 0)));
        q.refund(&mut store, &taken);
        assert!(passed(&local(&q, &mut store, "a", 0)));
        assert!(!passed(&local(&q, &mut store, "a", 0)));
        // A refund of a missing slot does nothing.
        let mut empty = MemoryStore::new();
        q.refund(&mut empty, &taken);
        assert_eq!(empty.key_count(), 0);
    }

    #[test]
    fn closest_to_exhaustion_wins_the_headers() {
        let q = quotas(json!([
            {"limit": 10, "window_seconds": 60, "by": "route"},
            {"limit": 3, "window_seconds": 3600, "by": "route"}
        ]));
        let mut store = MemoryStore::new();
        let LocalOutcome::Passed { closest, .. } = local(&q, &mut store, "a", 0) else {
            panic!("refused");
        };
        let headers = closest_headers(closest).unwrap();
        assert_eq!(headers[0].1, "3");
        assert_eq!(headers[1].1, "2");
    }

    #[test]
    fn tiers_pick_the_limit_by_a_verified_claim() {
        let q = quotas(json!({"limit": 1, "window_seconds": 600, "by": "claim:sub",
            "tiers": {"claim": "plan", "limits": {"gold": 3}}}));
        let mut store = MemoryStore::new();
        let no_header = |_: &str| None;
        let run = |store: &mut MemoryStore, claims: &Value| {
            let Value::Object(c) = claims else { panic!() };
            (0..5)
                .filter(|_| {
                    passed(&q.check_local(store, &inputs(&no_header, Some(c)), 0, &mut |_, _| {}))
                })
                .count()
        };
        assert_eq!(run(&mut store, &json!({"sub": "g", "plan": "gold"})), 3);
        assert_eq!(run(&mut store, &json!({"sub": "f", "plan": "free"})), 1);
        assert_eq!(run(&mut store, &json!({"sub": "n"})), 1);
        // Arrays are not a tier (scalar values only).
        assert_eq!(run(&mut store, &json!({"sub": "a", "plan": ["gold"]})), 1);
    }

    fn entries_of(message: &[u8]) -> Vec<Vec<(String, String)>> {
        use crate::config::pbstruct::Reader;
        let mut out = Vec::new();
        let mut r = Reader::new(message);
        while !r.done() {
            match r.tag().unwrap() {
                (2, 2) => {
                    let mut d = Reader::new(r.len_delimited().unwrap());
                    let mut entries = Vec::new();
                    while !d.done() {
                        let _ = d.tag().unwrap();
                        let mut e = Reader::new(d.len_delimited().unwrap());
                        let mut kv = (String::new(), String::new());
                        while !e.done() {
                            let (n, _) = e.tag().unwrap();
                            let text =
                                String::from_utf8(e.len_delimited().unwrap().to_vec()).unwrap();
                            if n == 1 {
                                kv.0 = text
                            } else {
                                kv.1 = text
                            }
                        }
                        entries.push(kv);
                    }
                    out.push(entries);
                }
                (_, w) => r.skip(w).unwrap(),
            }
        }
        out
    }

    #[test]
    fn the_question_carries_a_pseudonym_never_the_raw_value() {
        let q = quotas(json!([
            {"limit": 5, "window_seconds": 60, "by": "header:x-caller", "scope": "global"},
            {"limit": 9, "window_seconds": 60, "by": "route", "scope": "global",
             "tiers": {"claim": "plan", "limits": {"gold": 20}}}
        ]));
        let h = |name: &str| (name == "x-caller").then(|| "secret-caller".to_string());
        let ask = q.global_ask("apiguard", "r", &inputs(&h, None)).unwrap();
        assert!(!ask.message.windows(13).any(|w| w == b"secret-caller"));
        let entries = entries_of(&ask.message);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0][0], ("route".into(), "r".into()));
        assert_eq!(entries[0][1].0, "caller");
        assert_eq!(entries[0][1].1.len(), 16);
        assert!(entries[0][1].1.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(entries[0][2], ("quota".into(), "0".into()));
        // `by: route`: no caller; tiers: `default` for an unlisted caller.
        assert_eq!(
            entries[1],
            vec![
                ("route".into(), "r".into()),
                ("tier".into(), "default".into()),
                ("quota".into(), "1".into())
            ]
        );
        // The same caller gets the same pseudonym.
        let again = q.global_ask("apiguard", "r", &inputs(&h, None)).unwrap();
        assert_eq!(entries_of(&again.message), entries);
        // A route with only local limits asks nothing.
        let local_only = quotas(json!({"limit": 5, "window_seconds": 60}));
        assert!(local_only
            .global_ask("apiguard", "r", &inputs(&h, None))
            .is_none());
    }

    fn ask(q: &RouteQuotas) -> GlobalAsk {
        let h = |name: &str| (name == "x-caller").then(|| "c".to_string());
        q.global_ask("apiguard", "r", &inputs(&h, None)).unwrap()
    }

    #[test]
    fn the_answer_decides() {
        let q = quotas(
            json!({"limit": 5, "window_seconds": 60, "by": "header:x-caller", "scope": "global"}),
        );
        let a = ask(&q);
        let mut store = MemoryStore::new();
        let over = Reply {
            over_limit: true,
            statuses: vec![DescriptorStatus {
                over_limit: true,
                limit: Some(7),
                remaining: 0,
                reset_seconds: Some(12),
            }],
            reset_header: None,
        };
        let out = q.resolve(&a, Some(&over), &mut store, 0);
        assert_eq!(
            out.rejection,
            Some(Rejection::TooManyRequests {
                limit: 7,
                retry_after: 12,
                reset: 12
            })
        );
        assert_eq!(out.counters, vec!["global_limited"]);
        // No duration: the reset header, else the window.
        let bare = Reply {
            over_limit: true,
            statuses: vec![],
            reset_header: Some(4),
        };
        let out = q.resolve(&a, Some(&bare), &mut store, 0);
        assert_eq!(
            out.rejection,
            Some(Rejection::TooManyRequests {
                limit: 5,
                retry_after: 4,
                reset: 4
            })
        );
        let bare = Reply {
            over_limit: true,
            statuses: vec![],
            reset_header: None,
        };
        let out = q.resolve(&a, Some(&bare), &mut store, 0);
        assert_eq!(
            out.rejection,
            Some(Rejection::TooManyRequests {
                limit: 5,
                retry_after: 60,
                reset: 60
            })
        );
        let ok = decode_reply(&[0x08, 1]).unwrap();
        let out = q.resolve(&a, Some(&ok), &mut store, 0);
        assert_eq!(out.rejection, None);
        assert_eq!(out.counters, vec!["global_admitted"]);
        // A bare OK gives no `RateLimit-*`; a status does.
        assert_eq!(out.closest, None);
        let told = Reply {
            over_limit: false,
            statuses: vec![DescriptorStatus {
                over_limit: false,
                limit: Some(7),
                remaining: 3,
                reset_seconds: Some(9),
            }],
            reset_header: None,
        };
        let out = q.resolve(&a, Some(&told), &mut store, 0);
        assert_eq!(
            out.closest,
            Some((
                QuotaDecision::Admitted {
                    limit: 7,
                    remaining: 3,
                    reset_seconds: 9
                },
                true
            ))
        );
        // Closed by default: no answer refuses.
        let out = q.resolve(&a, None, &mut store, 0);
        assert_eq!(out.rejection, Some(Rejection::QuotaUnavailable));
        assert_eq!(store.key_count(), 0);
    }

    #[test]
    fn failure_modes_open_and_local() {
        let open = quotas(
            json!({"limit": 5, "window_seconds": 60, "scope": "global", "failure_mode": "open"}),
        );
        let mut store = MemoryStore::new();
        let out = open.resolve(&ask(&open), None, &mut store, 0);
        assert_eq!(out.rejection, None);
        assert_eq!(store.key_count(), 0);
        let local = quotas(
            json!({"limit": 2, "window_seconds": 60, "by": "header:x-caller",
            "scope": "global", "failure_mode": "local"}),
        );
        let a = ask(&local);
        let got: Vec<bool> = (0..3)
            .map(|_| local.resolve(&a, None, &mut store, 0).rejection.is_none())
            .collect();
        assert_eq!(got, vec![true, true, false]);
        let keys: Vec<&str> = store.keys().collect();
        assert!(
            keys.iter()
                .all(|k| k.starts_with("apiguard.q.r~g0.") || k.starts_with("apiguard.anchor")),
            "{keys:?}"
        );
        let out = local.resolve(&a, None, &mut store, 0);
        assert_eq!(out.counters, vec!["global_fallback", "limited"]);
    }

    #[test]
    fn a_global_refusal_gives_back_a_fallback_count_of_the_same_request() {
        let q = quotas(json!([
            {"limit": 1, "window_seconds": 60, "by": "header:x-caller", "scope": "global", "failure_mode": "local"},
            {"limit": 1, "window_seconds": 60, "by": "header:x-caller", "scope": "global"}
        ]));
        let a = ask(&q);
        let mut store = MemoryStore::new();
        // No answer: the first falls back and admits, the second (closed) refuses.
        let out = q.resolve(&a, None, &mut store, 0);
        assert_eq!(out.rejection, Some(Rejection::QuotaUnavailable));
        assert!(out.taken.is_empty());
        // The fallback count was given back: the next fallback admits again.
        let open_second = Reply {
            over_limit: false,
            statuses: vec![DescriptorStatus::default(), DescriptorStatus::default()],
            reset_header: None,
        };
        assert_eq!(
            q.resolve(&a, Some(&open_second), &mut store, 0).rejection,
            None
        );
        let single = quotas(
            json!({"limit": 1, "window_seconds": 60, "by": "header:x-caller",
            "scope": "global", "failure_mode": "local"}),
        );
        let mut fresh = MemoryStore::new();
        assert_eq!(
            single.resolve(&ask(&single), None, &mut fresh, 0).rejection,
            None
        );
        assert!(single
            .resolve(&ask(&single), None, &mut fresh, 0)
            .rejection
            .is_some());
    }

    #[test]
    fn statuses_belong_to_their_descriptor() {
        let q = quotas(json!([
            {"limit": 5, "window_seconds": 60, "by": "route", "scope": "global"},
            {"limit": 9, "window_seconds": 60, "by": "route", "scope": "global"}
        ]));
        let a = ask(&q);
        let reply = Reply {
            over_limit: true,
            statuses: vec![
                DescriptorStatus {
                    over_limit: false,
                    limit: Some(5),
                    remaining: 3,
                    reset_seconds: Some(10),
                },
                DescriptorStatus {
                    over_limit: true,
                    limit: Some(9),
                    remaining: 0,
                    reset_seconds: Some(30),
                },
            ],
            reset_header: None,
        };
        let mut store = MemoryStore::new();
        let out = q.resolve(&a, Some(&reply), &mut store, 0);
        assert_eq!(
            out.rejection,
            Some(Rejection::TooManyRequests {
                limit: 9,
                retry_after: 30,
                reset: 30
            })
        );
        assert_eq!(out.counters, vec!["global_admitted", "global_limited"]);
    }
}
