//! Host-call probe: per request, `n` host calls of one kind (plugin configuration
//! `"<kind> <n>"`, e.g. `"get_header 50"`). Measured next to the no-op filter by
//! `bench/run.py --hostcalls`, the difference divided by `n` is what one call of
//! that kind costs in Envoy's V8 runtime. Kinds:
//! - `get_header`: read `:path` (`proxy_get_header_map_value`);
//! - `get_headers`: read the whole request header map (`proxy_get_header_map_pairs`);
//! - `set_header`: replace one response header (`proxy_replace_header_map_value`);
//! - `add_headers`: set `n` distinct new response headers (the same call);
//! - `remove_absent`: remove `n` distinct response headers that are not there
//!   (`proxy_remove_header_map_value`);
//! - `set_pairs`: read the response header map and write it back with one more
//!   header (`proxy_get_header_map_pairs` + `proxy_set_header_map_pairs`);
//! - `metric`: increment a counter (`proxy_increment_metric`);
//! - `time`: read the clock (`proxy_get_current_time_nanoseconds`);
//! - `shared_get`: read one shared-data key (`proxy_get_shared_data`).
//!
//! And `"verify <alg> <key> <message> <signature>"` (key and signature base64url;
//! RSA key `n:e`): one signature check per request with `ring`, the filter's
//! backend: the cost of the check alone, for the fresh-token target.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType};
use ring::signature::{self as rs, VerificationAlgorithm};
use std::rc::Rc;

#[derive(Clone, Default)]
struct Probe {
    kind: Kind,
    n: u32,
    metric: u32,
    check: Option<Rc<Check>>,
}

/// A fixed signature check.
struct Check {
    alg: String,
    key: Vec<u8>,
    exponent: Vec<u8>,
    message: Vec<u8>,
    signature: Vec<u8>,
}

impl Check {
    fn parse(words: &[&str]) -> Option<Check> {
        let [alg, key, message, signature] = words else {
            return None;
        };
        let (key, exponent) = match key.split_once(':') {
            Some((n, e)) => (B64.decode(n).ok()?, B64.decode(e).ok()?),
            None => (B64.decode(key).ok()?, Vec::new()),
        };
        Some(Check {
            alg: alg.to_string(),
            key,
            exponent,
            message: message.as_bytes().to_vec(),
            signature: B64.decode(signature).ok()?,
        })
    }

    fn verify(&self) -> bool {
        let ecdsa_or_eddsa = |alg: &'static dyn VerificationAlgorithm| {
            rs::UnparsedPublicKey::new(alg, &self.key)
                .verify(&self.message, &self.signature)
                .is_ok()
        };
        match self.alg.as_str() {
            "ES256" => ecdsa_or_eddsa(&rs::ECDSA_P256_SHA256_FIXED),
            "EdDSA" => ecdsa_or_eddsa(&rs::ED25519),
            "RS256" => rs::RsaPublicKeyComponents {
                n: &self.key,
                e: &self.exponent,
            }
            .verify(
                &rs::RSA_PKCS1_2048_8192_SHA256,
                &self.message,
                &self.signature,
            )
            .is_ok(),
            "HS256" => {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.key);
                ring::hmac::verify(&key, &self.message, &self.signature).is_ok()
            }
            _ => false,
        }
    }
}

#[derive(Clone, Copy, Default, PartialEq)]
enum Kind {
    Verify,
    #[default]
    None,
    GetHeader,
    GetHeaders,
    SetHeader,
    AddHeaders,
    RemoveAbsent,
    SetPairs,
    Metric,
    Time,
    SharedGet,
}

#[derive(Default)]
struct Root(Probe);

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let cfg = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let cfg = String::from_utf8_lossy(&cfg);
        let words: Vec<&str> = cfg.trim().trim_matches('"').split_whitespace().collect();
        if words.first() == Some(&"verify") {
            let Some(check) = Check::parse(&words[1..]) else {
                return false;
            };
            // Refuse to measure a check that fails: the probe must do the real work.
            if !check.verify() {
                log::error!("probe: the signature does not verify");
                return false;
            }
            self.0 = Probe {
                kind: Kind::Verify,
                n: 1,
                metric: 0,
                check: Some(Rc::new(check)),
            };
            return true;
        }
        let mut words = words.into_iter();
        let kind = match words.next().unwrap_or("") {
            "get_header" => Kind::GetHeader,
            "get_headers" => Kind::GetHeaders,
            "set_header" => Kind::SetHeader,
            "add_headers" => Kind::AddHeaders,
            "remove_absent" => Kind::RemoveAbsent,
            "set_pairs" => Kind::SetPairs,
            "metric" => Kind::Metric,
            "time" => Kind::Time,
            "shared_get" => Kind::SharedGet,
            _ => Kind::None,
        };
        let n = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        let metric = hostcalls::define_metric(MetricType::Counter, "probe.calls").unwrap_or(0);
        if kind == Kind::SharedGet {
            let _ = hostcalls::set_shared_data("probe", Some(b"0123456789abcdef"), None);
        }
        self.0 = Probe {
            kind,
            n,
            metric,
            check: None,
        };
        true
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter(self.0.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Filter(Probe);

impl Context for Filter {}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let p = &self.0;
        for _ in 0..p.n {
            match p.kind {
                Kind::GetHeader => {
                    let _ = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, ":path");
                }
                Kind::GetHeaders => {
                    let _ = hostcalls::get_map_bytes(MapType::HttpRequestHeaders);
                }
                Kind::Metric => {
                    let _ = hostcalls::increment_metric(p.metric, 1);
                }
                Kind::Time => {
                    let _ = hostcalls::get_current_time();
                }
                Kind::SharedGet => {
                    let _ = hostcalls::get_shared_data("probe");
                }
                Kind::Verify => {
                    if !p.check.as_ref().is_some_and(|c| c.verify()) {
                        return Action::Pause;
                    }
                }
                Kind::SetHeader
                | Kind::AddHeaders
                | Kind::RemoveAbsent
                | Kind::SetPairs
                | Kind::None => break,
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        const NAMES: [&str; 8] = [
            "x-probe-0",
            "x-probe-1",
            "x-probe-2",
            "x-probe-3",
            "x-probe-4",
            "x-probe-5",
            "x-probe-6",
            "x-probe-7",
        ];
        let kind = self.0.kind;
        match kind {
            Kind::SetHeader | Kind::AddHeaders | Kind::RemoveAbsent => {
                let value: Option<&[u8]> = (kind != Kind::RemoveAbsent).then_some(b"1");
                for i in 0..self.0.n as usize {
                    // `set_header` replaces one header; the others cycle through 8 names.
                    let name = match kind {
                        Kind::SetHeader => "x-probe",
                        _ => NAMES[i % NAMES.len()],
                    };
                    let _ =
                        hostcalls::set_map_value_bytes(MapType::HttpResponseHeaders, name, value);
                }
            }
            Kind::SetPairs => {
                for _ in 0..self.0.n {
                    let Ok(mut pairs) = hostcalls::get_map_bytes(MapType::HttpResponseHeaders)
                    else {
                        break;
                    };
                    pairs.retain(|(k, _)| k != "x-probe");
                    pairs.push(("x-probe".to_string(), b"1".to_vec()));
                    let view: Vec<(&str, &[u8])> = pairs
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_slice()))
                        .collect();
                    let _ = hostcalls::set_map_bytes(MapType::HttpResponseHeaders, view);
                }
            }
            _ => {}
        }
        Action::Continue
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}
