//! A proxy-wasm HTTP filter that does nothing: every callback keeps the SDK's
//! default (`Action::Continue`). Benchmarked next to api-guard, it measures what
//! any Wasm filter costs in Envoy's V8 runtime (VM calls per request and per
//! callback), so the filter's own work can be told apart from that floor.

use proxy_wasm::traits::{Context, HttpContext};

struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {}

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Noop) });
}}
