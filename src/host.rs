//! The seam to the proxy-wasm host: the only module that calls `proxy_wasm`.
//!
//! Every call goes through `proxy_wasm::hostcalls`, which returns `Result`, and
//! failures are logged and turned into `None`/`false` — never a panic, which would
//! kill the VM and make Envoy fail every request on the worker.
//!
//! Trap: the SDK's `get_map_value` / `get_map` convert header values with
//! `String::from_utf8(..).unwrap()`. HTTP/1.1 allows obs-text bytes (0x80-0xFF)
//! in header values (RFC 9110 §5.5), so a client could panic the VM with one
//! byte. We only use the `_bytes` variants and convert lossily: a value that was
//! not UTF-8 cannot match a token, media type or claim anyway.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};
use std::time::{Duration, UNIX_EPOCH};

fn lossy(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn map_value(map: MapType, name: &str) -> Option<String> {
    match hostcalls::get_map_value_bytes(map, name) {
        Ok(v) => v.map(lossy),
        Err(s) => {
            log::warn!("api-guard: reading header {name} failed: {s:?}");
            None
        }
    }
}

fn set_map_value(map: MapType, name: &str, value: Option<&str>) {
    let r = hostcalls::set_map_value_bytes(map, name, value.map(str::as_bytes));
    if let Err(s) = r {
        log::warn!("api-guard: setting header {name} failed: {s:?}");
    }
}

/// A request header (lossy UTF-8). Multiple values come joined by `,` from Envoy.
pub fn request_header(name: &str) -> Option<String> {
    map_value(MapType::HttpRequestHeaders, name)
}

/// Sets (`Some`) or removes (`None`) a request header.
pub fn set_request_header(name: &str, value: Option<&str>) {
    set_map_value(MapType::HttpRequestHeaders, name, value);
}

/// A response header (lossy UTF-8).
pub fn response_header(name: &str) -> Option<String> {
    map_value(MapType::HttpResponseHeaders, name)
}

/// Sets (`Some`) or removes (`None`) a response header.
pub fn set_response_header(name: &str, value: Option<&str>) {
    set_map_value(MapType::HttpResponseHeaders, name, value);
}

/// All request headers, values converted lossily, in order.
pub fn request_headers() -> Vec<(String, String)> {
    match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
        Ok(pairs) => pairs.into_iter().map(|(k, v)| (k, lossy(v))).collect(),
        Err(s) => {
            log::warn!("api-guard: reading request headers failed: {s:?}");
            Vec::new()
        }
    }
}

/// A header of the response to an HTTP call (`dispatch_http_call`).
pub fn call_response_header(name: &str) -> Option<String> {
    map_value(MapType::HttpCallResponseHeaders, name)
}

/// All request header names (values are not needed, and may not be UTF-8).
pub fn request_header_names() -> Vec<String> {
    match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
        Ok(pairs) => pairs.into_iter().map(|(k, _)| k).collect(),
        Err(s) => {
            log::warn!("api-guard: reading request headers failed: {s:?}");
            Vec::new()
        }
    }
}

/// A host property such as `["source", "address"]`, as text.
pub fn property(path: &[&str]) -> Option<String> {
    match hostcalls::get_property(path.to_vec()) {
        Ok(v) => v.map(lossy),
        Err(s) => {
            log::debug!("api-guard: property {path:?} unavailable: {s:?}");
            None
        }
    }
}

/// Wall-clock time in milliseconds since the Unix epoch (0 if the host fails).
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sends a local reply; the request goes no further.
pub fn send_reply(status: u32, headers: &[(String, String)], body: &[u8]) {
    let hs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Err(s) = hostcalls::send_http_response(status, hs, Some(body)) {
        log::error!("api-guard: sending local reply {status} failed: {s:?}");
    }
}

/// Reads a buffer (request/response body, plugin configuration, call response).
pub fn buffer(kind: BufferType, start: usize, size: usize) -> Option<Vec<u8>> {
    match hostcalls::get_buffer(kind, start, size) {
        Ok(b) => b,
        Err(s) => {
            log::warn!("api-guard: reading buffer {kind:?} failed: {s:?}");
            None
        }
    }
}

/// Replaces a whole buffer (body rewrite).
pub fn replace_buffer(kind: BufferType, size: usize, value: &[u8]) -> bool {
    match hostcalls::set_buffer(kind, 0, size, value) {
        Ok(()) => true,
        Err(s) => {
            log::error!("api-guard: replacing buffer {kind:?} failed: {s:?}");
            false
        }
    }
}

/// Sets the root context's tick period.
pub fn set_tick_period(period: Duration) {
    if let Err(s) = hostcalls::set_tick_period(period) {
        log::warn!("api-guard: setting tick period failed: {s:?}");
    }
}

/// Dispatches an HTTP call to an Envoy cluster; returns the call token.
pub fn dispatch_http_call(
    cluster: &str,
    headers: Vec<(&str, &str)>,
    timeout: Duration,
) -> Result<u32, Status> {
    hostcalls::dispatch_http_call(cluster, headers, None, Vec::new(), timeout)
}

/// Shared-data read: value and CAS token.
pub fn shared_get(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), Status> {
    hostcalls::get_shared_data(key)
}

/// Shared-data write with optional CAS token.
pub fn shared_set(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    hostcalls::set_shared_data(key, Some(value), cas)
}

/// All values of a request header, in order, joined by `,` (for
/// `X-Forwarded-For`, where a client may send several lines and only the
/// rightmost, proxy-appended entries are trustworthy).
pub fn request_header_all(name: &str) -> Option<String> {
    let pairs = match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
        Ok(p) => p,
        Err(s) => {
            log::warn!("api-guard: reading request headers failed: {s:?}");
            return None;
        }
    };
    let values: Vec<String> = pairs
        .into_iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| lossy(v))
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// Proxy-wasm shared data (one store per Envoy process, shared by all workers)
/// as the quota module's [`crate::quota::SharedStore`].
pub struct HostStore;

impl crate::quota::SharedStore for HostStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), crate::quota::StoreError> {
        match hostcalls::get_shared_data(key) {
            Ok(v) => Ok(v),
            Err(Status::NotFound) => Ok((None, None)),
            Err(s) => {
                log::warn!("api-guard: shared data read failed: {s:?}");
                Err(crate::quota::StoreError::Unavailable)
            }
        }
    }

    fn set(
        &mut self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), crate::quota::StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(crate::quota::StoreError::CasMismatch),
            Err(s) => {
                log::warn!("api-guard: shared data write failed: {s:?}");
                Err(crate::quota::StoreError::Unavailable)
            }
        }
    }
}
