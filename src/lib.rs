//! # api-guard
//!
//! An API-security proxy-wasm HTTP filter for Envoy and Istio sidecars. Per route it
//! authenticates JWTs, authorizes on claims (including path-parameter binding),
//! enforces quotas shared by all Envoy workers, validates JSON request bodies
//! against JSON Schemas, masks sensitive fields in JSON responses, and answers every
//! rejection with `application/problem+json`.
//!
//! Modules, in the order a request meets them (README, "Design", has the map):
//! - [`root`] and [`filter`]: the proxy-wasm contexts; the filter only routes
//!   callbacks to the modules below and keeps the request's state.
//! - [`config`]: the raw JSON contract and the checks its fields share;
//!   [`policy`]: its compiled runtime view.
//! - [`route`]: path templates, normalisation and method sets.
//! - [`jwt`]: token extraction, key sets, verification, the per-route auth policy;
//!   [`authz`]: claim rules and binding; [`cloak`]: cloaked identifiers turned
//!   back into real ones before either reads them.
//! - [`quota`]: rate limiting over proxy-wasm shared data.
//! - [`request`]: media types, body limits and JSON Schema validation, over the
//!   strict parser in [`json`].
//! - [`mask`]: the response side: when to hold a response, masking (identifier
//!   tokens included), detectors.
//! - [`reply`]: the only place statuses and problem documents are made.
//! - [`metrics`]: Envoy stats; [`logging`]: log lines at Envoy's level; [`host`]:
//!   the only module that calls the host.
//!
//! Every module is private to the crate, so `rustc` reports what nothing uses;
//! [`api`] is the small surface that benches and conformance tests drive. The
//! crate documentation is read with `--document-private-items`, so it links
//! private modules.
#![allow(rustdoc::private_intra_doc_links)]

mod audit;
mod authz;
mod blocking;
mod cloak;
mod config;
mod filter;
mod host;
mod http;
mod json;
mod jwt;
mod logging;
mod mask;
mod metrics;
mod policy;
mod quota;
mod reply;
mod request;
mod root;
mod route;

pub mod api;

proxy_wasm::main! {{
    logging::init();
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::Root::default())
    });
}}
