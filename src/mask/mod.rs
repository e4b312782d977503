//! Response protection: field masking and sensitive-data detection over JSON
//! bodies. Pure code: no proxy-wasm calls, no logging (a masked value must never
//! reach a log line).
//!
//! [`ResponsePolicy::compile`] turns a route's `response` section into a
//! policy at configure time (paths parsed, detectors and patterns compiled, salt
//! checked); [`ResponsePolicy::apply`] masks one complete body.
//!
//! Decisions the contract leaves open:
//! - **`unmasked_for` lifts field masking only.** `cloak` rules and detectors
//!   run for every caller, admins included. A route that accepts tokens refuses
//!   raw ids, so every caller must be given tokens; detectors are a backstop
//!   against an upstream that leaks secrets no caller should receive (keys,
//!   tokens), whereas `mask` rules are field-level authorization. A route that must show e-mail addresses to admins
//!   should not enable the `email` detector.
//! - **Detectors read member names and numbers, not only string values.** A
//!   name is data the client receives (`{"users": {"ann@example.com": {}}}`) and
//!   a card number is no safer as a JSON number, so every name that stays in the
//!   output and every number's JSON text is scanned under each detector action
//!   (`block`, `report`, `redact`). `redact` replaces the matching text inside a
//!   name, which stays a string; two names of one object can then become equal
//!   (`{"[REDACTED:email]": 1, "[REDACTED:email]": 2}`), which JSON allows but
//!   which clients that keep one value per name will collapse. A number cannot
//!   hold the marker, so a hit replaces the whole number with the string
//!   `"[REDACTED:<kind>]"`. Booleans and `null` are not scanned.
//! - **Several rules on one value:** the most protective wins (`remove`, then
//!   `redact`, `cloak`, `hash`, `keep_last` with the smallest `n`); a value replaced whole
//!   is not looked into by rules below it nor by detectors. Its member name is
//!   still scanned, since it stays in the output, unless the member is removed.
//! - **Paths that match nothing** are a no-op. Array indexes are positions in
//!   the upstream's array. `remove` of `$` itself is a configuration error.
//! - **Non-string values:** `redact` turns any value into `"[REDACTED]"`;
//!   `keep_last` masks a number or boolean as its JSON text as written
//!   (`4111111111111111` → `"************1111"`), turns an object or array into
//!   `"[REDACTED]"` and leaves `null`; `hash` hashes any value but `null`.
//! - **Hash:** lowercase hex of `HMAC-SHA-256(key = mask_salt, message =
//!   canonical JSON of the value)`; canonical = RFC 8785 string escaping, object
//!   keys sorted, no whitespace, numbers exactly as written. `mask_salt` must be
//!   at least [`MIN_SALT_BYTES`] bytes. Details in `actions.rs`.
//! - Bytes no rule touched leave exactly as sent (see `walk.rs`); a body nothing
//!   matched is returned as `None` and not re-serialized.
//! - A body that is empty or only whitespace has nothing to leak and is passed
//!   unchanged; any other body that is not UTF-8 JSON, or nests deeper than
//!   [`walk::MAX_DEPTH`], is refused as `not_json` (the caller applies the fail mode).

mod actions;
mod detect;
mod path;
mod plan;
mod walk;

pub use plan::{ResponseHead, ResponsePlan};

pub use actions::MIN_SALT_BYTES;

use crate::authz::{ClaimRule, Claims};
use crate::cloak::{self, CloakKeys};
use crate::config::check::in_range;
use crate::config::{
    ConfigError, FailureMode, MaskAction, ResponseConfig, DEFAULT_MAX_RESPONSE_BYTES,
};
use crate::reply::Rejection;
use actions::{Action, KeyedHash};
use detect::Detectors;
use plan::withheld;
use std::rc::Rc;
use walk::{Fault, Rule, Walker};

/// Largest accepted `response.max_body_bytes` (64 MiB): the body is buffered
/// in the Wasm VM's memory, once per in-flight response.
pub const MAX_RESPONSE_BYTES_LIMIT: u64 = 64 * 1024 * 1024;

/// How a route issues tokens (`cloak` rules): the keys, and whether tokens are
/// bound to the caller (the route's `cloak.per_caller`).
#[derive(Debug, Clone)]
pub struct Issuer {
    /// `cloak_key` and the previous keys.
    pub keys: Rc<CloakKeys>,
    /// Tokens carry the caller's `sub`.
    pub per_caller: bool,
}

/// A route's compiled `response` section.
#[derive(Debug, Clone)]
pub struct ResponsePolicy {
    rules: Vec<Rule>,
    /// `cloak` rules are among them: they apply to every caller, `unmasked_for`
    /// included, since routes that accept tokens accept nothing else.
    issues_tokens: bool,
    /// Kinds of the `cloak` rules, indexed by `Action::Cloak`.
    kinds: Vec<Box<str>>,
    issuer: Option<Issuer>,
    unmasked_for: Option<ClaimRule>,
    detectors: Option<Detectors>,
    keyed: Option<KeyedHash>,
    max_body_bytes: u64,
    failure_mode: FailureMode,
    mask_errors: bool,
}

/// The result of masking one body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskOutcome {
    /// The new body, or `None` when it is unchanged (send the original bytes).
    pub body: Option<Vec<u8>>,
    /// Values selected by a mask rule (including ones whose text did not change,
    /// such as `null` under `hash`).
    pub fields_masked: u32,
    /// Detector hits by kind, in detector order; kinds without hits are left out.
    /// Counts only: never the matched text.
    pub detector_hits: Vec<(String, u32)>,
    /// Values replaced by `cloak` tokens.
    pub cloaked: u32,
}

impl ResponsePolicy {
    /// Compiles `cfg`. `salt` is the top-level `mask_salt`; `issuer` the cloak
    /// keys, when `cloak_key` is set; `path` is the config path of the section
    /// (`routes[0].response`) used in error messages.
    pub(crate) fn compile(
        cfg: &ResponseConfig,
        salt: Option<&str>,
        issuer: Option<Issuer>,
        path: &str,
    ) -> Result<Self, ConfigError> {
        let mut rules = Vec::with_capacity(cfg.mask.len());
        let mut kinds: Vec<Box<str>> = Vec::new();
        let mut first_hash: Option<usize> = None;
        for (i, rule) in cfg.mask.iter().enumerate() {
            let at = format!("{path}.mask[{i}]");
            let parsed = path::parse(&rule.path)
                .map_err(|e| ConfigError::new(format!("{at}.path"), e.to_string()))?;
            let cloaks = rule.action == MaskAction::Cloak;
            let kind = rule.kind.as_deref();
            if cloaks != kind.is_some_and(cloak::is_kind) || (cloaks && issuer.is_none()) {
                return Err(ConfigError::new(
                    at,
                    "`cloak` needs `kind` (1-64 letters, digits, '-' or '_') and the top-level `cloak_key`; `kind` goes only with `cloak`",
                ));
            }
            let action = match (rule.action, rule.n) {
                (MaskAction::KeepLast, Some(n)) => Action::KeepLast(n),
                (MaskAction::KeepLast, None) => {
                    return Err(ConfigError::new(
                        format!("{at}.n"),
                        "`keep_last` requires `n`, the number of characters to keep",
                    ))
                }
                (_, Some(_)) => {
                    return Err(ConfigError::new(
                        format!("{at}.n"),
                        "`n` applies only to `keep_last`",
                    ))
                }
                (MaskAction::Remove, None) if parsed.segments.is_empty() => {
                    return Err(ConfigError::new(
                        format!("{at}.path"),
                        "`remove` cannot delete `$`, the whole body; use `redact`",
                    ))
                }
                (MaskAction::Remove, None) => Action::Remove,
                (MaskAction::Redact, None) => Action::Redact,
                (MaskAction::Hash, None) => {
                    first_hash.get_or_insert(i);
                    Action::Hash
                }
                (MaskAction::Cloak, None) => {
                    kinds.push(rule.kind.as_deref().unwrap_or_default().into());
                    Action::Cloak(u16::try_from(kinds.len() - 1).unwrap_or(u16::MAX))
                }
            };
            rules.push(Rule {
                segments: parsed.segments,
                action,
            });
        }
        let keyed = match (first_hash, salt) {
            (None, _) => None,
            (Some(i), None) => {
                return Err(ConfigError::new(
                    format!("{path}.mask[{i}].action"),
                    format!(
                        "`hash` needs the top-level `mask_salt` (at least {MIN_SALT_BYTES} bytes)"
                    ),
                ))
            }
            (Some(_), Some(s)) if s.len() < MIN_SALT_BYTES => {
                return Err(ConfigError::new(
                    "mask_salt",
                    format!("must be at least {MIN_SALT_BYTES} bytes, is {}", s.len()),
                ))
            }
            (Some(_), Some(s)) => Some(KeyedHash::new(s.as_bytes())),
        };
        let unmasked_for = match &cfg.unmasked_for {
            None => None,
            Some(_) if rules.is_empty() => {
                return Err(ConfigError::new(
                    format!("{path}.unmasked_for"),
                    "has no effect without `mask` rules",
                ))
            }
            Some(rule) => Some(ClaimRule::compile_standalone(
                rule,
                &format!("{path}.unmasked_for"),
            )?),
        };
        let detectors = match &cfg.detect {
            None => None,
            Some(d) => Some(Detectors::compile(d, &format!("{path}.detect"))?),
        };
        let max_body_bytes = in_range(
            cfg.max_body_bytes.unwrap_or(DEFAULT_MAX_RESPONSE_BYTES),
            1,
            MAX_RESPONSE_BYTES_LIMIT,
            &format!("{path}.max_body_bytes"),
        )?;
        if cfg.failure_mode == FailureMode::Local {
            return Err(ConfigError::new(
                format!("{path}.failure_mode"),
                "expected `closed` or `open` (`local` is for global quotas)",
            ));
        }
        Ok(ResponsePolicy {
            rules,
            issues_tokens: !kinds.is_empty(),
            kinds,
            issuer,
            unmasked_for,
            detectors,
            keyed,
            max_body_bytes,
            failure_mode: cfg.failure_mode,
            mask_errors: cfg.mask_errors,
        })
    }

    /// True if `mask` rules apply to this caller: there are rules and the caller
    /// does not satisfy `unmasked_for`. No claims (no token) never satisfies it.
    pub(crate) fn masks_for(&self, claims: Option<&Claims>) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        match (&self.unmasked_for, claims) {
            (Some(rule), Some(claims)) => !rule.matches(claims),
            _ => true,
        }
    }

    /// True if the response body must be buffered and passed to [`Self::apply`]
    /// for this caller: mask rules apply to them, or detectors or `cloak` rules
    /// are configured (they apply to every caller, `unmasked_for` included).
    pub(crate) fn applies_to(&self, claims: Option<&Claims>) -> bool {
        self.detectors.is_some() || self.issues_tokens() || self.masks_for(claims)
    }

    /// True if the section has `cloak` rules.
    pub(crate) fn issues_tokens(&self) -> bool {
        self.issues_tokens
    }

    /// True if a response with this status is processed: 2xx always, any other
    /// status only with `mask_errors` (default true).
    pub(crate) fn applies_to_status(&self, status: u32) -> bool {
        (200..300).contains(&status) || self.mask_errors
    }

    /// Detector kinds (built-in names and pattern names) in the order they run
    /// and are reported: define one metric per kind at configure time.
    pub(crate) fn detector_kinds(&self) -> impl Iterator<Item = &str> {
        self.detectors.iter().flat_map(Detectors::kinds)
    }

    /// Masks one complete body for this caller.
    ///
    /// Errors (all [`Rejection::ResponseWithheld`]): `too_large` over
    /// [`Self::max_body_bytes`]; `not_json` for a body that is not UTF-8 JSON or
    /// nests deeper than [`walk::MAX_DEPTH`]; `sensitive_data` when a detector in
    /// `block` mode hits. Never panics, whatever the input.
    pub fn apply(&self, body: &[u8], claims: Option<&Claims>) -> Result<MaskOutcome, Rejection> {
        // A caller the rules do not apply to still gets tokens.
        let masks = self.masks_for(claims);
        let rules: &[Rule] = if masks || self.issues_tokens {
            &self.rules
        } else {
            &[]
        };
        if rules.is_empty() && self.detectors.is_none() {
            return Ok(MaskOutcome::default());
        }
        if u64::try_from(body.len()).unwrap_or(u64::MAX) > self.max_body_bytes {
            return Err(self.too_large());
        }
        if body
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            return Ok(MaskOutcome::default());
        }
        let not_json = || {
            withheld(
                "not_json",
                "the upstream response is not valid JSON and this route masks responses".into(),
            )
        };
        let text = std::str::from_utf8(body).map_err(|_| not_json())?;
        // Full syntax check first (numbers, escapes, trailing bytes); the walker
        // then only follows structure. IgnoredAny builds nothing.
        serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|_| not_json())?;
        let caller = match &self.issuer {
            Some(i) if i.per_caller => crate::authz::subject(claims),
            _ => None,
        };
        let tokens = self.issuer.as_ref().map(|i| walk::Tokens {
            keys: &i.keys,
            kinds: &self.kinds,
            caller: caller.as_deref(),
            per_caller: i.per_caller,
        });
        let mut walker = Walker::new(
            text,
            rules,
            self.detectors.as_ref(),
            self.keyed.as_ref(),
            tokens,
            !masks,
        );
        let body = walker.run().map_err(|fault| match fault {
            Fault::TooDeep => withheld(
                "not_json",
                "the upstream response nests deeper than 128 levels and cannot be masked".into(),
            ),
            Fault::Malformed => not_json(),
            Fault::Blocked(i) => {
                let kind = self.detector_kinds().nth(i).unwrap_or("pattern");
                withheld(
                    "sensitive_data",
                    format!(
                        "the upstream response contained sensitive data ({kind}) and was withheld"
                    ),
                )
            }
        })?;
        let detector_hits = self
            .detector_kinds()
            .zip(walker.hits.iter())
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (k.to_string(), *n))
            .collect();
        Ok(MaskOutcome {
            body,
            fields_masked: walker.fields_masked,
            detector_hits,
            cloaked: walker.cloaked,
        })
    }
}

#[cfg(test)]
mod tests;
