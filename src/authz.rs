//! Claim rules and path-parameter binding: who may do what, once the caller is known.
//!
//! Used by `auth.claims`, `auth.bind` and `response.unmasked_for`. Rules are
//! compiled at configure time; evaluation is allocation-free for string claims.

use crate::config::{ClaimCondition, ClaimRuleConfig, ConfigError};
use serde_json::{Map, Value};

/// Verified claims of a caller (the JWT payload object).
pub type Claims = Map<String, Value>;

/// What a claim must hold.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// At least one of the values.
    AnyOf(Vec<Value>),
    /// Every one of the values.
    AllOf(Vec<Value>),
    /// Exactly this value.
    Equals(Value),
}

/// A compiled claim rule: claim name and condition.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRule {
    /// Claim name as written (dotted names reach nested objects).
    pub claim: String,
    /// The condition.
    pub condition: Condition,
}

impl ClaimRule {
    /// Compiles `auth.claims.<claim>`; `path` is the config field path for errors.
    pub fn compile(claim: &str, cond: &ClaimCondition, path: &str) -> Result<Self, ConfigError> {
        if claim.is_empty() {
            return Err(ConfigError::new(path, "claim name must not be empty"));
        }
        let condition = match cond {
            ClaimCondition::AnyOf(v) if v.is_empty() => {
                return Err(ConfigError::new(
                    format!("{path}.any_of"),
                    "must not be empty",
                ))
            }
            ClaimCondition::AllOf(v) if v.is_empty() => {
                return Err(ConfigError::new(
                    format!("{path}.all_of"),
                    "must not be empty",
                ))
            }
            ClaimCondition::AnyOf(v) => Condition::AnyOf(v.clone()),
            ClaimCondition::AllOf(v) => Condition::AllOf(v.clone()),
            ClaimCondition::Equals(v) => Condition::Equals(v.clone()),
        };
        Ok(ClaimRule {
            claim: claim.to_string(),
            condition,
        })
    }

    /// Compiles `response.unmasked_for` (`{claim, any_of | all_of | equals}`).
    pub fn compile_standalone(cfg: &ClaimRuleConfig, path: &str) -> Result<Self, ConfigError> {
        let given = [
            cfg.any_of.is_some(),
            cfg.all_of.is_some(),
            cfg.equals.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            return Err(ConfigError::new(
                path,
                "exactly one of `any_of`, `all_of`, `equals` is required",
            ));
        }
        let cond = if let Some(v) = &cfg.any_of {
            ClaimCondition::AnyOf(v.clone())
        } else if let Some(v) = &cfg.all_of {
            ClaimCondition::AllOf(v.clone())
        } else {
            ClaimCondition::Equals(cfg.equals.clone().unwrap_or(Value::Null))
        };
        Self::compile(&cfg.claim, &cond, path)
    }

    /// True if `claims` satisfy the rule. A missing claim never satisfies it.
    pub fn matches(&self, claims: &Claims) -> bool {
        let Some(actual) = lookup_claim(claims, &self.claim) else {
            return false;
        };
        match &self.condition {
            Condition::Equals(expected) => actual == expected,
            Condition::AnyOf(values) => values.iter().any(|v| claim_contains(actual, v)),
            Condition::AllOf(values) => values.iter().all(|v| claim_contains(actual, v)),
        }
    }
}

/// Finds a claim: the exact key first (namespaced claims such as
/// `https://example.com/roles` contain dots), then a dotted path into nested objects.
pub fn lookup_claim<'a>(claims: &'a Claims, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut cur = claims.get(parts.next()?)?;
    for part in parts {
        cur = cur.as_object()?.get(part)?;
    }
    Some(cur)
}

/// Does the claim hold `expected`? Arrays hold their elements; a string holds
/// itself and each of its space-delimited words (OAuth `scope`, RFC 8693 §4.2).
fn claim_contains(actual: &Value, expected: &Value) -> bool {
    match actual {
        Value::Array(items) => items.iter().any(|i| i == expected),
        Value::String(s) => match expected {
            Value::String(e) => s == e || s.split(' ').any(|w| w == e),
            _ => false,
        },
        other => other == expected,
    }
}

/// Renders a scalar claim the way a path parameter or header would carry it.
/// Strings as-is, integers and booleans in canonical form; others are not scalars.
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The primary identity's `sub` as text: whom audit records and per-caller
/// cloaked identifiers are about.
pub fn subject(claims: Option<&Claims>) -> Option<String> {
    claims
        .and_then(|c| lookup_claim(c, "sub"))
        .and_then(scalar_text)
}

/// Does the path parameter `value` belong to the caller per claim `claim`?
/// A scalar claim must equal it; an array claim (a caller owning several
/// objects) must contain it. A missing claim never binds.
pub fn binds(claims: &Claims, claim: &str, value: &str) -> bool {
    match lookup_claim(claims, claim) {
        Some(Value::Array(items)) => items
            .iter()
            .any(|i| scalar_text(i).is_some_and(|t| t == value)),
        Some(v) => scalar_text(v).is_some_and(|t| t == value),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Claims {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn rule(claim: &str, cond: ClaimCondition) -> ClaimRule {
        match ClaimRule::compile(claim, &cond, "t") {
            Ok(r) => r,
            Err(e) => unreachable!("{e}"),
        }
    }

    #[test]
    fn claim_rules_table() {
        let c = claims(json!({
            "roles": ["clerk", "viewer"],
            "scope": "orders:read orders:write",
            "realm": {"roles": ["admin"]},
            "https://example.com/tier": "gold",
            "level": 3,
            "email_verified": true
        }));
        let cases = vec![
            (
                rule(
                    "roles",
                    ClaimCondition::AnyOf(vec![json!("admin"), json!("clerk")]),
                ),
                true,
            ),
            (
                rule("roles", ClaimCondition::AnyOf(vec![json!("admin")])),
                false,
            ),
            (
                rule(
                    "roles",
                    ClaimCondition::AllOf(vec![json!("clerk"), json!("viewer")]),
                ),
                true,
            ),
            (
                rule(
                    "roles",
                    ClaimCondition::AllOf(vec![json!("clerk"), json!("admin")]),
                ),
                false,
            ),
            (
                rule("scope", ClaimCondition::AnyOf(vec![json!("orders:write")])),
                true,
            ),
            (
                rule(
                    "scope",
                    ClaimCondition::AllOf(vec![json!("orders:read"), json!("orders:write")]),
                ),
                true,
            ),
            (
                rule("scope", ClaimCondition::AnyOf(vec![json!("orders")])),
                false,
            ),
            (
                rule("realm.roles", ClaimCondition::AnyOf(vec![json!("admin")])),
                true,
            ),
            (
                rule(
                    "https://example.com/tier",
                    ClaimCondition::Equals(json!("gold")),
                ),
                true,
            ),
            (rule("level", ClaimCondition::Equals(json!(3))), true),
            (rule("level", ClaimCondition::Equals(json!("3"))), false),
            (
                rule("email_verified", ClaimCondition::Equals(json!(true))),
                true,
            ),
            (
                rule("missing", ClaimCondition::AnyOf(vec![json!("x")])),
                false,
            ),
            (
                rule("realm.missing", ClaimCondition::AnyOf(vec![json!("x")])),
                false,
            ),
        ];
        for (r, want) in cases {
            assert_eq!(r.matches(&c), want, "{r:?}");
        }
    }

    #[test]
    fn empty_lists_are_config_errors() {
        let e = ClaimRule::compile(
            "roles",
            &ClaimCondition::AnyOf(vec![]),
            "routes[0].auth.claims.roles",
        );
        assert_eq!(
            e.map_err(|e| e.to_string()).err().as_deref(),
            Some("routes[0].auth.claims.roles.any_of: must not be empty")
        );
    }

    #[test]
    fn standalone_rule_needs_exactly_one_condition() {
        let cfg = ClaimRuleConfig {
            claim: "roles".into(),
            any_of: None,
            all_of: None,
            equals: None,
        };
        let e = ClaimRule::compile_standalone(&cfg, "routes[0].response.unmasked_for");
        assert!(e.is_err_and(|e| e.to_string().contains("exactly one of")));
        let cfg = ClaimRuleConfig {
            claim: "roles".into(),
            any_of: Some(vec![json!("admin")]),
            all_of: None,
            equals: None,
        };
        let r = ClaimRule::compile_standalone(&cfg, "x");
        assert!(r.is_ok_and(|r| r.matches(&claims(json!({"roles": ["admin"]})))));
    }

    #[test]
    fn binding_table() {
        let c = claims(json!({"shop_id": "s1", "num": 42, "shops": ["a", "b"], "obj": {"x": 1}}));
        assert!(binds(&c, "shop_id", "s1"));
        assert!(!binds(&c, "shop_id", "s2"));
        assert!(!binds(&c, "shop_id", "S1"));
        assert!(binds(&c, "num", "42"));
        assert!(!binds(&c, "num", "042"));
        assert!(binds(&c, "shops", "b"));
        assert!(!binds(&c, "shops", "c"));
        assert!(!binds(&c, "obj", "{}"));
        assert!(!binds(&c, "nope", "s1"));
    }
}
