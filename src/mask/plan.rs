//! The response side's decisions before the body is masked, the counterpart of the
//! request side's `BodyPlan`: at response headers, from the status, encoding, type
//! and length the upstream declared, whether the response is held for masking,
//! passed, or withheld; then, as the body grows, whether it still fits.
//!
//! A body that cannot be masked (compressed, not JSON, partial, too large,
//! malformed) meets one decision, [`ResponsePolicy::unmaskable`]: withheld, or under
//! `failure_mode: open` passed unmasked and counted. Detected secrets under a
//! `block` detector are withheld whatever the failure mode. A withheld response is a
//! 502, except that an upstream's own 502, 503 or 504 keeps its status: when the
//! upstream is down or timed out, Envoy answers with a text body that cannot be
//! masked, and the client should still read "unavailable", not "bad gateway".

use super::ResponsePolicy;
use crate::config::FailureMode;
use crate::http::MediaType;
use crate::reply::Rejection;

/// What the response headers say, as far as masking cares.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResponseHead<'a> {
    /// `:status`; 0 if absent or unreadable.
    pub status: u32,
    /// `content-encoding`, if any.
    pub content_encoding: Option<&'a str>,
    /// `content-type`, if any.
    pub content_type: Option<&'a str>,
    /// A valid `content-length`, if any.
    pub content_length: Option<u64>,
    /// The headers ended the stream: there is no body.
    pub end_of_stream: bool,
    /// The request went upstream as the client sent it (`mode: report`): the filter
    /// did not ask for the whole document in identity encoding, so a partial or
    /// compressed body is one it cannot judge, not one it would refuse.
    pub as_sent: bool,
}

/// What to do with a response on a route that masks for this caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponsePlan {
    /// Nothing to mask (no body, or a status the route does not mask): pass.
    Pass,
    /// The body cannot be masked and the route fails open: pass it as sent,
    /// counted as `unmasked.<reason>`.
    PassUnmasked(&'static str),
    /// Hold the headers (dropping `content-length`), buffer the body, mask it at
    /// the end of the stream.
    Hold,
    /// The body may not leave: send this problem in its place once the body starts
    /// (headers are held as for [`ResponsePlan::Hold`]).
    Withhold(Rejection),
}

/// No `content-encoding`, or `identity`.
fn is_identity(encoding: Option<&str>) -> bool {
    let encoding = encoding.unwrap_or("").trim();
    encoding.is_empty() || encoding.eq_ignore_ascii_case("identity")
}

impl ResponsePolicy {
    /// Decides at response headers.
    pub(crate) fn plan(&self, head: &ResponseHead<'_>) -> ResponsePlan {
        if head.end_of_stream || !self.applies_to_status(head.status) {
            return ResponsePlan::Pass;
        }
        if head.as_sent && (head.status == 206 || !is_identity(head.content_encoding)) {
            return ResponsePlan::PassUnmasked(if head.status == 206 {
                "partial"
            } else {
                "compressed"
            });
        }
        if head.status == 206 {
            // A slice of the document: valid JSON, perhaps, but its root is not `$`.
            return self.unmaskable(
                head.status,
                withheld(
                    "partial",
                    "the upstream sent part of the response (206), which cannot be masked".into(),
                ),
            );
        }
        if !is_identity(head.content_encoding) {
            return self.unmaskable(
                head.status,
                withheld(
                    "compressed",
                    "the upstream response is compressed and cannot be masked".into(),
                ),
            );
        }
        let json = head
            .content_type
            .and_then(MediaType::parse)
            .is_some_and(|m| m.is_json());
        if !json {
            return self.unmaskable(
                head.status,
                withheld(
                    "not_json",
                    "the upstream response is not JSON and cannot be masked".into(),
                ),
            );
        }
        if let Some(plan) = head
            .content_length
            .and_then(|n| self.check_size(n, head.status))
        {
            return plan;
        }
        ResponsePlan::Hold
    }

    /// Called with the body bytes buffered so far of a response with `status`:
    /// `None` while they fit, else the plan for a body too large to mask.
    pub(crate) fn check_size(&self, total: u64, status: u32) -> Option<ResponsePlan> {
        (total > self.max_body_bytes).then(|| self.unmaskable(status, self.too_large()))
    }

    /// The one fail-open/closed decision for a body that cannot be masked, of a
    /// response with `status`.
    pub(crate) fn unmaskable(&self, status: u32, mut rejection: Rejection) -> ResponsePlan {
        let detected = rejection.reason() == "sensitive_data";
        if self.failure_mode == FailureMode::Open && !detected {
            return ResponsePlan::PassUnmasked(rejection.reason());
        }
        if let Rejection::ResponseWithheld { status: sent, .. } = &mut rejection {
            if matches!(status, 502..=504) {
                *sent = status;
            }
        }
        ResponsePlan::Withhold(rejection)
    }

    /// The rejection for a body over `max_body_bytes`.
    pub(super) fn too_large(&self) -> Rejection {
        withheld(
            "too_large",
            format!(
                "the upstream response exceeds {} bytes and cannot be masked",
                self.max_body_bytes
            ),
        )
    }
}

/// A `502 response-withheld` with a metric reason and a fixed description.
pub(super) fn withheld(reason: &'static str, description: String) -> Rejection {
    Rejection::ResponseWithheld {
        reason,
        description,
        status: 502,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ResponseConfig;
    use serde_json::json;

    fn policy(extra: serde_json::Value) -> ResponsePolicy {
        let mut cfg =
            json!({"mask": [{"path": "$.ssn", "action": "remove"}], "max_body_bytes": 100});
        if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        let cfg: Result<ResponseConfig, _> = serde_json::from_value(cfg);
        match cfg
            .map_err(|e| e.to_string())
            .and_then(|c| ResponsePolicy::compile(&c, None, None, "r").map_err(|e| e.to_string()))
        {
            Ok(p) => p,
            Err(e) => unreachable!("{e}"),
        }
    }

    fn head(status: u32, ct: &'static str) -> ResponseHead<'static> {
        ResponseHead {
            status,
            content_type: Some(ct),
            ..ResponseHead::default()
        }
    }

    fn reason(plan: &ResponsePlan) -> &'static str {
        match plan {
            ResponsePlan::Withhold(r) => r.reason(),
            ResponsePlan::PassUnmasked(r) => r,
            ResponsePlan::Pass => "pass",
            ResponsePlan::Hold => "hold",
        }
    }

    #[test]
    fn json_is_held_and_the_rest_is_withheld_when_closed() {
        let p = policy(json!({}));
        assert_eq!(p.plan(&head(200, "application/json")), ResponsePlan::Hold);
        assert_eq!(
            p.plan(&head(200, "application/problem+json; charset=utf-8")),
            ResponsePlan::Hold
        );
        let cases = [
            (head(200, "text/html"), "not_json"),
            (
                ResponseHead {
                    content_type: None,
                    ..head(200, "")
                },
                "not_json",
            ),
            (
                ResponseHead {
                    content_encoding: Some("gzip"),
                    ..head(200, "application/json")
                },
                "compressed",
            ),
            (
                ResponseHead {
                    content_length: Some(101),
                    ..head(200, "application/json")
                },
                "too_large",
            ),
        ];
        for (h, want) in cases {
            let plan = p.plan(&h);
            assert!(matches!(plan, ResponsePlan::Withhold(_)), "{h:?}: {plan:?}");
            assert_eq!(reason(&plan), want, "{h:?}");
        }
        let partial = p.plan(&head(206, "application/json"));
        assert_eq!(reason(&partial), "partial");
        assert!(matches!(partial, ResponsePlan::Withhold(_)));
        let identity = ResponseHead {
            content_encoding: Some(" Identity "),
            ..head(200, "application/json")
        };
        assert_eq!(p.plan(&identity), ResponsePlan::Hold);
        // Under `report` the filter asked for neither the whole document nor
        // identity: such bodies pass unmasked, whatever the failure mode.
        let as_sent = |h: ResponseHead<'static>| ResponseHead { as_sent: true, ..h };
        assert_eq!(
            p.plan(&as_sent(head(206, "application/json"))),
            ResponsePlan::PassUnmasked("partial")
        );
        let gzip = ResponseHead {
            content_encoding: Some("gzip"),
            ..head(200, "application/json")
        };
        assert_eq!(
            p.plan(&as_sent(gzip)),
            ResponsePlan::PassUnmasked("compressed")
        );
        assert_eq!(p.plan(&as_sent(identity)), ResponsePlan::Hold);
    }

    #[test]
    fn open_routes_pass_unmaskable_bodies_but_never_detected_secrets() {
        let p = policy(json!({"failure_mode": "open"}));
        assert_eq!(
            p.plan(&head(200, "text/plain")),
            ResponsePlan::PassUnmasked("not_json")
        );
        assert_eq!(
            p.check_size(101, 200),
            Some(ResponsePlan::PassUnmasked("too_large"))
        );
        assert_eq!(p.check_size(100, 200), None);
        let secret = withheld("sensitive_data", String::new());
        assert!(matches!(
            p.unmaskable(200, secret),
            ResponsePlan::Withhold(_)
        ));
    }

    #[test]
    fn gateway_errors_keep_their_status_when_withheld() {
        let p = policy(json!({}));
        let status = |plan: ResponsePlan| match plan {
            ResponsePlan::Withhold(r) => r.status(),
            other => unreachable!("{other:?}"),
        };
        for (upstream, sent) in [
            (502, 502),
            (503, 503),
            (504, 504),
            (500, 502),
            (200, 502),
            (429, 502),
        ] {
            assert_eq!(
                status(p.plan(&head(upstream, "text/plain"))),
                sent,
                "{upstream}"
            );
            let too_large = p.check_size(101, upstream).unwrap_or(ResponsePlan::Pass);
            assert_eq!(status(too_large), sent, "{upstream}");
        }
        let secret = withheld("sensitive_data", String::new());
        assert_eq!(status(p.unmaskable(503, secret)), 503);
    }

    #[test]
    fn no_body_and_unmasked_statuses_pass() {
        let p = policy(json!({"mask_errors": false}));
        assert_eq!(
            p.plan(&ResponseHead {
                end_of_stream: true,
                ..head(200, "text/plain")
            }),
            ResponsePlan::Pass
        );
        assert_eq!(p.plan(&head(404, "text/plain")), ResponsePlan::Pass);
        assert_eq!(p.plan(&head(204, "application/json")), ResponsePlan::Hold);
    }
}
