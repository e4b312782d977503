#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// The host functions' safety contract is the proxy-wasm ABI's (every pointer valid
// for its size, result pointers writable), stated once here rather than on each.
#![allow(clippy::missing_safety_doc)]
//! The whole filter per request, without Envoy: the module's own work on the open
//! route, on a route with a cached ES256 token and with a fresh one per request whose
//! signature the host checks, through the SDK's context traits
//! as its dispatcher calls them, with the host functions answered here from memory. What Envoy's host calls cost is
//! measured apart (`make bench ARGS=--hostcalls`); this bench counts them per
//! request and times everything else, and natively `perf record` names the
//! functions (no JIT frames to guess at).
//!
//! `cargo bench --bench filter`; for a profile: `perf record -g` on the bench
//! binary with `FILTER_BENCH_ONLY=<label prefix>`.

use api_guard::api::{NativeVerifySignature, SignatureHost};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use proxy_wasm::traits::RootContext;
use proxy_wasm::types::Action;
use serde_json::json;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[path = "rounds.rs"]
mod rounds;

/// The system allocator, counting allocations (a reallocation counts as one) while
/// `COUNTING` is set.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// With `FILTER_BENCH_TRACE` set, where each counted allocation was made: the
/// first frame in the library (debug info: `CARGO_PROFILE_BENCH_STRIP=false
/// CARGO_PROFILE_BENCH_DEBUG=1`).
static TRACING: AtomicBool = AtomicBool::new(false);

fn counted() {
    if !COUNTING.load(Ordering::Relaxed) {
        return;
    }
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    if TRACING.load(Ordering::Relaxed) {
        // The capture allocates: not counted, not traced.
        COUNTING.store(false, Ordering::Relaxed);
        let trace = std::backtrace::Backtrace::force_capture().to_string();
        let site: Vec<&str> = trace
            .lines()
            .filter(|l| l.contains("api_guard::") && !l.contains("api_guard::host::Headers::parse"))
            .take(2)
            .map(str::trim)
            .collect();
        eprintln!("      allocation at {}", site.join(" <- "));
        COUNTING.store(true, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// How the host answers Envoy's `verify_signature` foreign function.
#[derive(Default, Clone, Copy)]
enum Signatures {
    /// As an Envoy without it: the module verifies every signature itself.
    #[default]
    Absent,
    /// Checked, by the test stand-in for Envoy's BoringSSL (the configure-time check
    /// needs right answers).
    Checked,
    /// "Valid" without checking: in the timed loop, so that the figure is the
    /// module's own work around a host-verified signature (Envoy's share is measured
    /// in Envoy).
    Valid,
}

/// A header map as pairs.
type Map = [(String, Vec<u8>)];

/// The host's side: what the filter reads and what it did.
#[derive(Default)]
struct Host {
    configuration: Vec<u8>,
    /// The maps as pairs (single-header reads) and serialized (whole-map reads).
    /// Writes are counted, not applied: every request sees the same maps, and the
    /// host's own work per request stays one copy per map read.
    request: Vec<(String, Vec<u8>)>,
    response: Vec<(String, Vec<u8>)>,
    request_bytes: Vec<u8>,
    response_bytes: Vec<u8>,
    /// Shared data as proxy-wasm-cpp-host keeps it: one CAS counter for all keys,
    /// and a write to a missing key creates it whatever its CAS. `(key, value,
    /// cas)`, scanned: a hashed map would run std's hasher, which `make footprint`
    /// would count as the module's code.
    shared: Vec<(Vec<u8>, Vec<u8>, u32)>,
    last_cas: u32,
    metrics: u32,
    signatures: Signatures,
    calls: Vec<(&'static str, u64)>,
    local_replies: u64,
}

thread_local! {
    static HOST: RefCell<Host> = RefCell::new(Host::default());
}

thread_local! {
    /// Buffers handed to the module while counting: in Envoy the module's allocator
    /// makes them (`proxy_on_memory_allocate`), so they are the filter's.
    static GIVEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Runs a host call: counted by name, and its own allocations not counted as the
/// filter's.
fn with<R>(call: &'static str, f: impl FnOnce(&mut Host) -> R) -> R {
    let counting = COUNTING.swap(false, Ordering::Relaxed);
    let r = HOST.with(|h| {
        let mut h = h.borrow_mut();
        match h.calls.iter_mut().find(|(name, _)| *name == call) {
            Some((_, n)) => *n += 1,
            None => h.calls.push((call, 1)),
        }
        f(&mut h)
    });
    let given = GIVEN.with(|g| g.replace(0));
    if counting {
        ALLOCATIONS.fetch_add(given, Ordering::Relaxed);
        COUNTING.store(true, Ordering::Relaxed);
    }
    r
}

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const BAD_ARGUMENT: u32 = 2;
const CAS_MISMATCH: u32 = 8;

/// A lookup's answer: the value handed over (`OK`) or `NOT_FOUND`.
///
/// # Safety
/// As [`give`].
unsafe fn answer(found: Option<&[u8]>, data: *mut *mut u8, size: *mut usize) -> u32 {
    match found {
        Some(bytes) => {
            unsafe { give(bytes, data, size) };
            OK
        }
        None => NOT_FOUND,
    }
}

/// Hands `bytes` to the module the way Envoy does: a buffer the module's allocator
/// made (`proxy_on_memory_allocate`), which the SDK takes back as a `Vec`.
///
/// # Safety
/// `data` and `size` are valid for writes.
unsafe fn give(bytes: &[u8], data: *mut *mut u8, size: *mut usize) {
    GIVEN.with(|g| g.set(g.get() + 1));
    let mut v = Vec::<u8>::with_capacity(bytes.len());
    v.extend_from_slice(bytes);
    let mut v = std::mem::ManuallyDrop::new(v);
    unsafe {
        *data = v.as_mut_ptr();
        *size = bytes.len();
    }
}

/// # Safety
/// `data` points to `size` readable bytes (or `size` is 0).
unsafe fn slice<'a>(data: *const u8, size: usize) -> &'a [u8] {
    if size == 0 {
        &[]
    } else {
        unsafe { std::slice::from_raw_parts(data, size) }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn map(h: &Host, map_type: u32) -> Option<(&Map, &[u8])> {
    match map_type {
        0 => Some((&h.request, &h.request_bytes)),
        2 => Some((&h.response, &h.response_bytes)),
        _ => None,
    }
}

fn serialize(pairs: &Map) -> Vec<u8> {
    let pairs: Vec<(&str, &[u8])> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    api_guard::api::fuzzing::serialize_header_map(&pairs)
}

// The proxy-wasm host functions the SDK and src/host.rs import. Natively they are
// the symbols the library links against; in Wasm the library imports them from
// `env`, and bench/micro/wasi_run.js forwards each import to the export here.

/// Adds the attributes every host function needs: natively the symbol the library
/// links against, in Wasm an export `bench_host_<name>` (see wasi_run.js).
macro_rules! host {
    ($name:expr, $item:item) => {
        #[cfg_attr(not(target_family = "wasm"), no_mangle)]
        #[cfg_attr(target_family = "wasm", export_name = concat!("bench_host_", $name))]
        $item
    };
}

/// Host functions the measured paths do not call, or whose answer is all that
/// matters: counted under `label`, then answered with a fixed status.
macro_rules! fixed_answer {
    ($($name:ident($($ty:ty),*) as $label:literal => $status:expr;)*) => {$(
        host!(stringify!($name), pub extern "C" fn $name($(_: $ty),*) -> u32 {
            with($label, |_| $status)
        });
    )*};
}

fixed_answer! {
    proxy_set_tick_period_milliseconds(u32) as "set_tick_period" => OK;
    proxy_set_buffer_bytes(u32, usize, usize, *const u8, usize) as "set_buffer_bytes" => OK;
    proxy_set_header_map_pairs(u32, *const u8, usize) as "set_header_map_pairs" => OK;
    proxy_set_property(*const u8, usize, *const u8, usize) as "set_property" => OK;
    proxy_register_shared_queue(*const u8, usize, *mut u32) as "register_shared_queue" => BAD_ARGUMENT;
    proxy_resolve_shared_queue(*const u8, usize, *const u8, usize, *mut u32) as "resolve_shared_queue" => NOT_FOUND;
    proxy_dequeue_shared_queue(u32, *mut *mut u8, *mut usize) as "dequeue_shared_queue" => NOT_FOUND;
    proxy_enqueue_shared_queue(u32, *const u8, usize) as "enqueue_shared_queue" => NOT_FOUND;
    proxy_continue_stream(u32) as "continue_stream" => OK;
    proxy_close_stream(u32) as "close_stream" => OK;
    proxy_http_call(*const u8, usize, *const u8, usize, *const u8, usize, *const u8, usize, u32, *mut u32) as "http_call" => BAD_ARGUMENT;
    proxy_grpc_call(*const u8, usize, *const u8, usize, *const u8, usize, *const u8, usize, *const u8, usize, u32, *mut u32) as "grpc_call" => BAD_ARGUMENT;
    proxy_grpc_stream(*const u8, usize, *const u8, usize, *const u8, usize, *const u8, usize, *mut u32) as "grpc_stream" => BAD_ARGUMENT;
    proxy_grpc_send(u32, *const u8, usize, bool) as "grpc_send" => NOT_FOUND;
    proxy_grpc_cancel(u32) as "grpc_cancel" => NOT_FOUND;
    proxy_grpc_close(u32) as "grpc_close" => NOT_FOUND;
    proxy_set_effective_context(u32) as "set_effective_context" => OK;
    proxy_done() as "done" => OK;
    proxy_record_metric(u32, u64) as "record_metric" => OK;
    proxy_increment_metric(u32, i64) as "increment_metric" => OK;
}

host!(
    "proxy_log",
    pub unsafe extern "C" fn proxy_log(level: u32, data: *const u8, size: usize) -> u32 {
        with("log", |_| {
            // Warnings and errors (a refused configuration) are shown.
            if level >= 3 {
                eprintln!("filter log: {}", text(unsafe { slice(data, size) }));
            }
            OK
        })
    }
);

host!(
    "proxy_get_log_level",
    pub unsafe extern "C" fn proxy_get_log_level(level: *mut u32) -> u32 {
        unsafe { *level = 3 }
        OK
    }
);

host!(
    "proxy_get_current_time_nanoseconds",
    pub unsafe extern "C" fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32 {
        with("get_current_time", |_| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            unsafe { *time = now.as_nanos() as u64 };
            OK
        })
    }
);

host!(
    "proxy_get_buffer_bytes",
    pub unsafe extern "C" fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32 {
        with("get_buffer_bytes", |h| {
            // 6: VM configuration, 7: plugin configuration.
            let b: &[u8] = match buffer_type {
                7 => &h.configuration,
                6 => b"",
                _ => return NOT_FOUND,
            };
            let end = b.len().min(start.saturating_add(max));
            unsafe { give(&b[start.min(end)..end], data, size) };
            OK
        })
    }
);

host!(
    "proxy_get_header_map_pairs",
    pub unsafe extern "C" fn proxy_get_header_map_pairs(
        map_type: u32,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32 {
        with("get_header_map_pairs", |h| unsafe {
            answer(map(h, map_type).map(|(_, bytes)| bytes), data, size)
        })
    }
);

host!(
    "proxy_get_header_map_value",
    pub unsafe extern "C" fn proxy_get_header_map_value(
        map_type: u32,
        key: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32 {
        with("get_header_map_value", |h| {
            let key = unsafe { slice(key, key_size) };
            let Some((pairs, _)) = map(h, map_type) else {
                return NOT_FOUND;
            };
            let found = pairs.iter().find(|(k, _)| k.as_bytes() == key);
            unsafe { answer(found.map(|(_, v)| v.as_slice()), data, size) }
        })
    }
);

host!(
    "proxy_remove_header_map_value",
    pub unsafe extern "C" fn proxy_remove_header_map_value(
        map_type: u32,
        key: *const u8,
        key_size: usize,
    ) -> u32 {
        with("remove_header_map_value", |h| match map(h, map_type) {
            Some(_) if key_size > 0 && !key.is_null() => OK,
            _ => BAD_ARGUMENT,
        })
    }
);

/// The header writes (replace, add), counted, not applied: `BadArgument` for a map
/// the filter cannot write or a missing name, as Envoy answers.
macro_rules! header_write {
    ($($name:ident as $label:literal;)*) => {$(
        host!(stringify!($name), pub unsafe extern "C" fn $name(
            map_type: u32,
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
        ) -> u32 {
            with($label, |h| match map(h, map_type) {
                Some(_) if key_size > 0 && !key.is_null() && (value_size == 0 || !value.is_null()) => OK,
                _ => BAD_ARGUMENT,
            })
        });
    )*};
}

header_write! {
    proxy_replace_header_map_value as "replace_header_map_value";
    proxy_add_header_map_value as "add_header_map_value";
}

host!(
    "proxy_get_shared_data",
    pub unsafe extern "C" fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
        cas: *mut u32,
    ) -> u32 {
        with("get_shared_data", |h| {
            let key = unsafe { slice(key, key_size) };
            match h
                .shared
                .iter()
                .find(|(k, _, _)| k == key)
                .map(|(_, v, c)| (v, c))
            {
                Some((v, c)) => {
                    unsafe {
                        give(v, data, size);
                        *cas = *c;
                    }
                    OK
                }
                None => NOT_FOUND,
            }
        })
    }
);

host!(
    "proxy_get_property",
    pub unsafe extern "C" fn proxy_get_property(
        path: *const u8,
        path_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32 {
        // The client's address, as Envoy gives it: what a quota counts by default.
        with("get_property", |_| unsafe {
            let address = slice(path, path_size) == b"source\0address";
            answer(address.then_some(b"127.0.0.1:54321".as_slice()), data, size)
        })
    }
);

host!(
    "proxy_set_shared_data",
    pub unsafe extern "C" fn proxy_set_shared_data(
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32 {
        with("set_shared_data", |h| {
            let key = unsafe { slice(key, key_size) };
            let value = unsafe { slice(value, value_size) };
            h.last_cas += 1;
            let next = h.last_cas;
            match h.shared.iter_mut().find(|(k, _, _)| k == key) {
                Some((_, _, c)) if cas != 0 && cas != *c => CAS_MISMATCH,
                Some((_, v, c)) => {
                    v.clear();
                    v.extend_from_slice(value);
                    *c = next;
                    OK
                }
                None => {
                    h.shared.push((key.to_vec(), value.to_vec(), next));
                    OK
                }
            }
        })
    }
);

host!(
    "proxy_send_local_response",
    pub extern "C" fn proxy_send_local_response(
        _status: u32,
        _d: *const u8,
        _ds: usize,
        _b: *const u8,
        _bs: usize,
        _h: *const u8,
        _hs: usize,
        _g: i32,
    ) -> u32 {
        with("send_local_response", |h| {
            h.local_replies += 1;
            OK
        })
    }
);

host!(
    "proxy_get_status",
    pub unsafe extern "C" fn proxy_get_status(
        code: *mut u32,
        _d: *mut *mut u8,
        size: *mut usize,
    ) -> u32 {
        unsafe {
            *code = 0;
            *size = 0;
        }
        with("get_status", |_| OK)
    }
);

host!(
    "proxy_call_foreign_function",
    pub unsafe extern "C" fn proxy_call_foreign_function(
        name: *const u8,
        name_size: usize,
        args: *const u8,
        args_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32 {
        with("call_foreign_function", |h| {
            if unsafe { slice(name, name_size) } != b"verify_signature" {
                return NOT_FOUND;
            }
            match h.signatures {
                Signatures::Absent => NOT_FOUND,
                Signatures::Checked => {
                    match NativeVerifySignature.verify_signature(unsafe { slice(args, args_size) })
                    {
                        Ok(answer) => {
                            unsafe { give(&answer, data, size) };
                            OK
                        }
                        Err(status) => status,
                    }
                }
                Signatures::Valid => {
                    unsafe { give(&[0x08, 0x01], data, size) };
                    OK
                }
            }
        })
    }
);

host!(
    "proxy_define_metric",
    pub unsafe extern "C" fn proxy_define_metric(
        _t: u32,
        _n: *const u8,
        _s: usize,
        id: *mut u32,
    ) -> u32 {
        with("define_metric", |h| {
            h.metrics += 1;
            unsafe { *id = h.metrics };
            OK
        })
    }
);

host!(
    "proxy_get_metric",
    pub unsafe extern "C" fn proxy_get_metric(_id: u32, value: *mut u64) -> u32 {
        unsafe { *value = 0 };
        with("get_metric", |_| OK)
    }
);

const ROOT: u32 = 1;

/// Distinct tokens for the fresh-token case: more than its timed rounds use (five of
/// a sixth each), so no token repeats.
const FRESH_TOKENS: usize = 3000;

fn configure(root: &mut dyn RootContext, config: &serde_json::Value) {
    let bytes = serde_json::to_vec(config).unwrap();
    let size = bytes.len();
    HOST.with(|h| h.borrow_mut().configuration = bytes);
    assert!(root.on_vm_start(0));
    assert!(root.on_configure(size), "configuration refused");
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

/// One request through the filter's callbacks in Envoy's order, on a fresh
/// context: the request headers (returns the action), the upstream's response
/// headers and empty body, then the stream's end. The host's maps are the case's
/// (set in `main`). Never inlined: bench/micro/footprint.py collects inside it.
#[inline(never)]
fn request(root: &dyn RootContext, id: u32, request: &Map, response: &Map, count: bool) -> Action {
    COUNTING.store(count, Ordering::Relaxed);
    let mut http = root.create_http_context(id).unwrap();
    let action = http.on_http_request_headers(request.len(), true);
    if action == Action::Continue {
        http.on_http_response_headers(response.len(), false);
        http.on_http_response_body(0, true);
    }
    http.on_done();
    http.on_log();
    drop(http);
    COUNTING.store(false, Ordering::Relaxed);
    action
}

/// The provider's JWK and `n` ES256 tokens, each for another subject.
fn es256_tokens(n: usize) -> (serde_json::Value, Vec<String>) {
    use p256::ecdsa::signature::Signer;
    let key = p256::ecdsa::SigningKey::from_slice(&[3; 32]).unwrap();
    let point = key.verifying_key().to_encoded_point(false);
    let (x, y) = point.as_bytes()[1..].split_at(32);
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "k", "alg": "ES256",
                     "x": B64.encode(x), "y": B64.encode(y)});
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let tokens = (0..n)
        .map(|i| {
            let input = format!(
                "{}.{}",
                B64.encode(r#"{"alg":"ES256","kid":"k","typ":"JWT"}"#),
                B64.encode(
                    json!({"iss": "https://idp.example", "aud": "api",
                           "sub": format!("user-{i}"), "exp": exp})
                    .to_string()
                )
            );
            let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
            format!("{input}.{}", B64.encode(sig.to_bytes()))
        })
        .collect();
    (jwk, tokens)
}

fn main() {
    let only = std::env::var("FILTER_BENCH_ONLY").unwrap_or_default();
    let (jwk, tokens) = es256_tokens(FRESH_TOKENS + 1);
    let token = &tokens[FRESH_TOKENS];
    let config = json!({
        "providers": {"idp": {"issuer": "https://idp.example", "audiences": ["api"],
                              "jwks": {"inline": {"keys": [jwk]}}}},
        "routes": [
            {"name": "items", "match": {"path": "/api/items/{id}", "methods": ["GET"]}},
            {"name": "orders", "match": {"path": "/api/orders/{id}", "methods": ["GET"]},
             "auth": {"requires": "idp"}},
            // `make bench`'s quota scenario: counted by caller address, never reached.
            {"name": "limited", "match": {"path": "/api/limited/{id}", "methods": ["GET"]},
             "quota": {"limit": 1_000_000_000u64, "window_seconds": 1}}
        ]
    });
    let mut root = api_guard::api::root_context();
    configure(root.as_mut(), &config);
    // The open route under four blocking rules, as `make bench`'s blocking-4-rules
    // (keyed on a header here: the bench's host has no client address).
    let mut blocking = config.clone();
    let by = "header:x-bench-caller";
    blocking["quota_settings"] = json!({"key_salt": "bench-blocking-salt-0123456789"});
    blocking["blocking"] = json!({"rules": [
        {"name": "guessing", "count": "auth_failures", "by": by, "max": 20,
         "window_seconds": 60, "block_seconds": 300},
        {"name": "scanning", "count": "not_found", "by": by, "max": 50,
         "window_seconds": 60, "block_seconds": 600},
        {"name": "walking", "count": "distinct_param", "param": "id", "routes": ["items"],
         "by": by, "max": 1000, "window_seconds": 60, "block_seconds": 900},
        {"name": "stuffing", "count": "status", "statuses": [401], "routes": ["items"],
         "by": by, "max": 10, "window_seconds": 300, "block_seconds": 900}
    ]});
    let mut blocking_root = api_guard::api::root_context();
    configure(blocking_root.as_mut(), &blocking);
    let mut roots = [root, blocking_root];
    let common = [
        (":authority", "127.0.0.1:10000"),
        (":scheme", "http"),
        (":method", "GET"),
        ("user-agent", "wrk"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "4b0e8b0e-4f5c-4a0e-9b5e-2f8d2d6b0c1a"),
    ];
    let response = headers(&[
        (":status", "200"),
        ("content-type", "application/json"),
        ("content-length", "17"),
        ("date", "Mon, 07 Dec 2026 15:00:00 GMT"),
        ("server", "envoy"),
        ("x-envoy-upstream-service-time", "0"),
    ]);
    let mut open = headers(&common);
    open.push((":path".into(), b"/api/items/42".to_vec()));
    let mut jwt = headers(&common);
    jwt.push((":path".into(), b"/api/orders/7".to_vec()));
    jwt.push((
        "authorization".into(),
        format!("Bearer {token}").into_bytes(),
    ));
    let mut limited = headers(&common);
    limited.push((":path".into(), b"/api/limited/42".to_vec()));
    let mut unmatched = headers(&common);
    unmatched.push((":path".into(), b"/nowhere".to_vec()));
    let mut caller = open.clone();
    caller.push(("x-bench-caller".into(), b"alice".to_vec()));

    println!(
        "filter: {}, release build",
        if cfg!(target_family = "wasm") {
            "wasm32"
        } else {
            "native"
        }
    );
    let mut id = ROOT;
    let cases: [(&str, usize, &Map, Action); 5] = [
        ("open route (GET /api/items/42)", 0, &open, Action::Continue),
        (
            "ES256 token, cached (GET /api/orders/7)",
            0,
            &jwt,
            Action::Continue,
        ),
        ("no route (404 problem+json)", 0, &unmatched, Action::Pause),
        (
            "open route, four blocking rules",
            1,
            &caller,
            Action::Continue,
        ),
        ("quota, never reached", 0, &limited, Action::Continue),
    ];
    for (label, r, req, expect) in cases {
        let root = &mut roots[r];
        if !label.starts_with(only.as_str()) {
            continue;
        }
        HOST.with(|h| {
            let mut h = h.borrow_mut();
            h.request = req.to_vec();
            h.request_bytes = serialize(req);
            h.response = response.clone();
            h.response_bytes = serialize(&response);
        });
        // The first request verifies the token and fills the cache, the second
        // defines the metrics a cached token counts; the third is counted.
        for _ in 0..2 {
            id += 1;
            assert_eq!(
                request(&**root, id, req, &response, false),
                expect,
                "{label}: unexpected action"
            );
        }
        HOST.with(|h| h.borrow_mut().calls.clear());
        id += 1;
        ALLOCATIONS.store(0, Ordering::Relaxed);
        TRACING.store(
            std::env::var_os("FILTER_BENCH_TRACE").is_some(),
            Ordering::Relaxed,
        );
        request(&**root, id, req, &response, true);
        TRACING.store(false, Ordering::Relaxed);
        let allocations = ALLOCATIONS.load(Ordering::Relaxed);
        let calls = HOST.with(|h| std::mem::take(&mut h.borrow_mut().calls));
        rounds::time(label, 20_000, || {
            id += 1;
            request(&**root, id, req, &response, false);
            if id % 1000 == 0 {
                root.on_tick();
            }
        });
        let list: Vec<String> = calls.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "    allocations by the filter: {allocations}; host calls: {}",
            list.join(", ")
        );
    }
    // A fresh ES256 token per request, its signature checked by the host (Envoy's
    // `verify_signature`, BoringSSL): the module's own work around it (decoding,
    // claims, the host call's arguments, the cache). A root of its own, configured
    // while the host answers rightly, so that its configure-time check picks the host.
    let label = "ES256 token, fresh, verified by the host";
    if label.starts_with(only.as_str()) {
        let mut fresh_root = api_guard::api::root_context();
        HOST.with(|h| h.borrow_mut().signatures = Signatures::Checked);
        configure(fresh_root.as_mut(), &config);
        let maps: Vec<Vec<u8>> = tokens[..FRESH_TOKENS]
            .iter()
            .map(|t| {
                let mut m = headers(&common);
                m.push((":path".into(), b"/api/orders/7".to_vec()));
                m.push(("authorization".into(), format!("Bearer {t}").into_bytes()));
                serialize(&m)
            })
            .collect();
        let mut next = 0;
        let mut fresh = |count: bool, id: u32| {
            let map = maps[next % FRESH_TOKENS].clone();
            next += 1;
            HOST.with(|h| h.borrow_mut().request_bytes = map);
            request(&*fresh_root, id, &jwt, &response, count)
        };
        // Checked for real once: the token passes through the host's check.
        HOST.with(|h| h.borrow_mut().calls.clear());
        id += 1;
        assert_eq!(fresh(false, id), Action::Continue, "{label}: refused");
        let checked = HOST.with(|h| {
            h.borrow()
                .calls
                .iter()
                .any(|(name, n)| *name == "call_foreign_function" && *n == 1)
        });
        assert!(checked, "{label}: the module did not ask the host");
        HOST.with(|h| {
            let mut h = h.borrow_mut();
            h.signatures = Signatures::Valid;
            h.calls.clear();
        });
        id += 1;
        ALLOCATIONS.store(0, Ordering::Relaxed);
        fresh(true, id);
        let allocations = ALLOCATIONS.load(Ordering::Relaxed);
        let calls = HOST.with(|h| std::mem::take(&mut h.borrow_mut().calls));
        rounds::time(label, (FRESH_TOKENS / 6) as u32, || {
            id += 1;
            fresh(false, id);
        });
        let list: Vec<String> = calls.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "    allocations by the filter: {allocations}; host calls: {}",
            list.join(", ")
        );
    }
    let replies = HOST.with(|h| h.borrow().local_replies);
    assert!(
        replies > 0 || !"no route".starts_with(only.as_str()),
        "the unmatched route was never refused"
    );
}
