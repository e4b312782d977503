//! # api-guard
//!
//! An API-security proxy-wasm HTTP filter for Envoy and Istio sidecars. Per route it
//! authenticates JWTs, authorizes on claims (including path-parameter binding),
//! enforces quotas shared by all Envoy workers, validates JSON request bodies
//! against JSON Schemas, masks sensitive fields in JSON responses, and answers every
//! rejection with `application/problem+json`.
//!
//! Modules, in the order a request meets them:
//! - [`config`]: the raw JSON contract (JSON or, via [`pbstruct`], YAML); [`policy`]:
//!   its compiled runtime view.
//! - [`route`]: path templates, normalisation and method sets.
//! - [`jwt`]: token extraction, JWKS, verification; [`authz`]: claim rules and binding.
//! - [`quota`]: rate limiting over proxy-wasm shared data.
//! - [`schema`]: request body limits and JSON Schema validation; [`strict_json`]: the
//!   bounded request-body JSON parser it uses.
//! - [`mask`]: response masking and sensitive-data detection.
//! - [`reply`]: the only place statuses and problem documents are made.
//! - [`metrics`]: Envoy stats; [`host`]: the seam to the proxy-wasm host.
//! - [`root`] and [`filter`]: the proxy-wasm contexts that tie it together.

pub mod authz;
pub mod config;
pub mod jwt;
pub mod mask;
pub mod quota;
pub mod reply;
pub mod schema;
pub mod strict_json;

pub mod filter;
pub mod host;
pub mod metrics;
pub mod pbstruct;
pub mod policy;
pub mod root;
pub mod route;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::Root::default())
    });
}}
