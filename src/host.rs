//! The seam to the proxy-wasm host: the only module that calls `proxy_wasm`.
//!
//! Every call goes through `proxy_wasm::hostcalls`, which returns `Result`, and
//! failures are logged and turned into `None`/`false` — never a panic, which would
//! kill the VM and make Envoy fail every request on the worker. Two calls use the
//! raw ABI instead: reading a header map whole (no copy per header), and Envoy's
//! `verify_signature` foreign function, since the SDK's `call_foreign_function`
//! panics on a status it does not list.
//!
//! Trap: the SDK's `get_map_value` / `get_map` convert header values with
//! `String::from_utf8(..).unwrap()`. HTTP/1.1 allows obs-text bytes (0x80-0xFF)
//! in header values (RFC 9110 §5.5), so a client could panic the VM with one
//! byte. We only use the `_bytes` variants and convert lossily: a value that was
//! not UTF-8 cannot match a token, media type or claim anyway.

use crate::jwt::hostsig::SignatureHost;
use crate::quota::{SharedStore, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, Status};

pub use proxy_wasm::types::{BufferType, MetricType};
use std::borrow::Cow;
use std::ops::Range;
use std::time::{Duration, UNIX_EPOCH};

fn lossy(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn set_map_value(map: MapType, name: &str, value: Option<&str>) {
    let r = hostcalls::set_map_value_bytes(map, name, value.map(str::as_bytes));
    if let Err(s) = r {
        log::warn!("setting header {name} failed: {s:?}");
    }
}

/// Sets (`Some`) or removes (`None`) a request header.
pub fn set_request_header(name: &str, value: Option<&str>) {
    set_map_value(MapType::HttpRequestHeaders, name, value);
}

/// Sets (`Some`) or removes (`None`) a response header.
pub fn set_response_header(name: &str, value: Option<&str>) {
    set_map_value(MapType::HttpResponseHeaders, name, value);
}

/// A snapshot of a header map, read with one host call: every later lookup is
/// a scan of Wasm memory instead of another call into Envoy (`make bench
/// ARGS=--hostcalls`: reading one header costs about 1 µs in V8, the whole map
/// 1.4 µs). The host's serialized map is kept as it came, and lookups borrow
/// from it: two allocations per read, not two per header. Names are lowercase,
/// as Envoy keeps them; a map that is not valid UTF-8 (obs-text bytes in a
/// value) is converted lossily, once.
#[derive(Debug, Default)]
pub struct Headers {
    text: String,
    /// `(name, value)` byte ranges into `text`.
    entries: Vec<(Range<usize>, Range<usize>)>,
}

#[link(wasm_import_module = "env")]
extern "C" {
    /// The proxy-wasm ABI call behind `hostcalls::get_map_bytes`, which copies
    /// every name and value into its own allocation.
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;

    /// The proxy-wasm ABI call behind `hostcalls::call_foreign_function`, which
    /// panics on a status it does not list (proxy-wasm 0.2.5); the status is read
    /// here as the plain number it is.
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
}

/// Takes ownership of a buffer the host allocated for a result.
///
/// # Safety
/// `data` is null or points to `size` bytes the host allocated through the SDK's
/// `proxy_on_memory_allocate` (a leaked `Box<[u8]>` of exactly `size` bytes) that
/// nothing else refers to.
unsafe fn take_host_buffer(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        return Vec::new();
    }
    // SAFETY: the caller's contract; the SDK's own hostcalls reclaim such buffers
    // the same way.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// The serialized header map (proxy-wasm ABI: count, lengths, then each name and
/// value followed by NUL), owned.
fn raw_map(map: MapType) -> Result<Vec<u8>, u32> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer to `size` bytes that it allocated through
    // the SDK's `proxy_on_memory_allocate` (a leaked `Box<[u8]>` of exactly `size`
    // bytes), or leaves it null. Ownership is taken back the way the SDK's own
    // `hostcalls::get_map_bytes` does; nothing else refers to the buffer.
    let status = unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) };
    if status != 0 {
        return Err(status);
    }
    // SAFETY: as above: `data` is null or a `size`-byte allocation now owned here.
    Ok(unsafe { take_host_buffer(data, size) })
}

/// Envoy's `verify_signature` foreign function (BoringSSL inside Envoy), for
/// [`crate::jwt::hostsig`].
pub struct EnvoySignatures;

impl SignatureHost for EnvoySignatures {
    fn verify_signature(&self, arguments: &[u8]) -> Result<Vec<u8>, u32> {
        const NAME: &str = "verify_signature";
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: the name and arguments are live slices for the whole call; the
        // host only reads them. It writes into `data`/`size` a buffer it allocated
        // through `proxy_on_memory_allocate`, or nothing.
        let status = unsafe {
            proxy_call_foreign_function(
                NAME.as_ptr(),
                NAME.len(),
                arguments.as_ptr(),
                arguments.len(),
                &mut data,
                &mut size,
            )
        };
        // SAFETY: `data` is null or the host's allocation of `size` bytes, owned here
        // whatever the status, so a buffer that came with a failure is freed too.
        let answer = unsafe { take_host_buffer(data, size) };
        if status == 0 {
            Ok(answer)
        } else {
            // The probe reports it once per configuration; after the probe passed a
            // failure is unexpected, and the signature counts as invalid.
            log::debug!("api-guard: verify_signature failed: status {status}");
            Err(status)
        }
    }
}

fn le_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

impl Headers {
    /// The request headers, pseudo-headers included.
    pub fn request() -> Headers {
        Headers::read(MapType::HttpRequestHeaders)
    }

    /// The response headers, `:status` included.
    pub fn response() -> Headers {
        Headers::read(MapType::HttpResponseHeaders)
    }

    fn read(map: MapType) -> Headers {
        match raw_map(map) {
            Ok(bytes) => Headers::parse(bytes).unwrap_or_else(|| {
                log::warn!("the {map:?} from the host are malformed");
                Headers::default()
            }),
            Err(s) => {
                log::warn!("reading {map:?} failed: status {s}");
                Headers::default()
            }
        }
    }

    /// Indexes a serialized map; `None` if it is malformed.
    pub(crate) fn parse(mut bytes: Vec<u8>) -> Option<Headers> {
        if bytes.is_empty() {
            return Some(Headers::default());
        }
        let count = le_u32(&bytes, 0)?;
        let table_end = count.checked_mul(8)?.checked_add(4)?;
        let mut at = table_end;
        let mut entries = Vec::with_capacity(count.min(bytes.len() / 2));
        for i in 0..count {
            let name_len = le_u32(&bytes, 4 + i * 8)?;
            let value_len = le_u32(&bytes, 8 + i * 8)?;
            let name = at..at.checked_add(name_len)?;
            let value = name.end + 1..(name.end + 1).checked_add(value_len)?;
            at = value.end + 1;
            if at > bytes.len() {
                return None;
            }
            entries.push((name, value));
        }
        // The length table is binary (a length of 128 or more is not UTF-8): blanked
        // before the check, so only the names and values decide whether the map
        // takes the lossy path. A token or cookie header is that long in most
        // requests.
        if let Some(table) = bytes.get_mut(..table_end) {
            table.fill(0);
        }
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => return Some(Headers::lossy(e.as_bytes(), &entries)),
        };
        Some(Headers { text, entries })
    }

    /// Rebuilds the snapshot with every name and value converted lossily.
    fn lossy(bytes: &[u8], entries: &[(Range<usize>, Range<usize>)]) -> Headers {
        let mut out = Headers::default();
        for (name, value) in entries {
            let mut push = |r: &Range<usize>| {
                let start = out.text.len();
                out.text.push_str(&String::from_utf8_lossy(
                    bytes.get(r.clone()).unwrap_or(&[]),
                ));
                start..out.text.len()
            };
            let (n, v) = (push(name), push(value));
            out.entries.push((n, v));
        }
        out
    }

    /// Every value of `name`, in order. Names are compared as bytes and only a
    /// matching entry's value is sliced as text: a lookup passes over every header
    /// before the one it wants, and slicing each of those names as `str` would add
    /// two char-boundary checks per header passed.
    fn values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        let bytes = self.text.as_bytes();
        self.entries.iter().filter_map(move |(n, v)| {
            let key = bytes.get(n.clone())?;
            if key.eq_ignore_ascii_case(name.as_bytes()) {
                self.text.get(v.clone())
            } else {
                None
            }
        })
    }

    /// The first value of `name` (for headers that occur once: pseudo-headers).
    pub fn first(&self, name: &str) -> Option<&str> {
        self.values(name).next()
    }

    /// Every value of `name` in order, joined by `sep`; `None` if absent. A
    /// repeated header is never reduced to its first line, so a second value
    /// cannot hide behind the first.
    pub fn joined(&self, name: &str, sep: &str) -> Option<String> {
        self.joined_borrowed(name, sep).map(Cow::into_owned)
    }

    /// [`Headers::joined`], borrowing the value when the header occurs once (a
    /// bearer token is read without a copy).
    pub fn joined_borrowed(&self, name: &str, sep: &str) -> Option<Cow<'_, str>> {
        let mut out: Option<Cow<'_, str>> = None;
        for v in self.values(name) {
            match &mut out {
                Some(o) => {
                    let o = o.to_mut();
                    o.push_str(sep);
                    o.push_str(v);
                }
                None => out = Some(Cow::Borrowed(v)),
            }
        }
        out
    }

    /// Every value of `name` joined by `,` (RFC 9110 §5.3).
    pub fn get(&self, name: &str) -> Option<String> {
        self.joined(name, ",")
    }

    /// True if `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.first(name).is_some()
    }

    /// Every header name, once per occurrence, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .map(|(n, _)| self.text.get(n.clone()).unwrap_or_default())
    }
}

#[cfg(test)]
impl Headers {
    /// A snapshot built from pairs through the host's serialization (unit tests).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Headers {
        let raw: Vec<(&str, &[u8])> = pairs.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        Headers::parse(serialize(&raw)).unwrap_or_default()
    }
}

/// The proxy-wasm serialization of a header map, as the host hands it over (unit
/// tests, and the whole-filter bench's in-memory host through `api::fuzzing`).
pub fn serialize(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// A header of the response to an HTTP call (`dispatch_http_call`).
pub fn call_response_header(name: &str) -> Option<String> {
    match hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name) {
        Ok(v) => v.map(lossy),
        Err(s) => {
            log::warn!("reading call response header {name} failed: {s:?}");
            None
        }
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    /// The ABI call behind `hostcalls::set_effective_context`, which panics on
    /// any status but `Ok` and `BadArgument`.
    fn proxy_set_effective_context(context_id: u32) -> u32;
}

/// Makes the stream `context_id` the target of the next host calls (from the root
/// context's tick). False if the stream is gone.
pub fn set_effective_context(context_id: u32) -> bool {
    // SAFETY: a plain integer argument; the host validates the id.
    unsafe { proxy_set_effective_context(context_id) == 0 }
}

/// One response header (one host call, where a whole map costs about as much
/// as 1.4 of them).
pub fn response_header(name: &str) -> Option<String> {
    match hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name) {
        Ok(v) => v.map(lossy),
        Err(s) => {
            log::warn!("reading response header {name} failed: {s:?}");
            None
        }
    }
}

/// A host property such as `["source", "address"]`, as text.
pub fn property(path: &[&str]) -> Option<String> {
    match hostcalls::get_property(path.to_vec()) {
        Ok(v) => v.map(lossy),
        Err(s) => {
            log::debug!("property {path:?} unavailable: {s:?}");
            None
        }
    }
}

/// An Envoy property as raw bytes (`response.code` is a little-endian int64).
fn property_bytes(path: &[&str]) -> Option<Vec<u8>> {
    match hostcalls::get_property(path.to_vec()) {
        Ok(v) => v,
        Err(s) => {
            log::debug!("api-guard: property {path:?} unavailable: {s:?}");
            None
        }
    }
}

/// The downstream connection's client certificate: `None` unless the connection is
/// mutual TLS (`connection.mtls`), else its first URI SAN
/// (`connection.uri_san_peer_certificate`), if it has one. Two host calls, so the
/// caller asks only on routes that check a peer.
pub fn peer_uri_san() -> Option<Option<String>> {
    // A bool property is one byte.
    let mtls = property_bytes(&["connection", "mtls"])?;
    if mtls.first().copied().unwrap_or(0) == 0 {
        return None;
    }
    Some(property(&["connection", "uri_san_peer_certificate"]).filter(|s| !s.is_empty()))
}

/// The SHA-256 of the client certificate, hex (`connection.sha256_peer_certificate_digest`).
pub fn peer_cert_sha256() -> Option<String> {
    property(&["connection", "sha256_peer_certificate_digest"]).filter(|s| !s.is_empty())
}

/// The status Envoy sent downstream (`response.code`), once a response exists.
pub fn response_code() -> Option<u32> {
    let bytes = property_bytes(&["response", "code"])?;
    let raw: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    u32::try_from(i64::from_le_bytes(raw)).ok()
}

#[link(wasm_import_module = "env")]
extern "C" {
    /// The ABI call behind `hostcalls::set_property`, which panics on any status
    /// but `Ok` (a panic kills the VM).
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
}

/// Stores `value` in the stream's filter state as `wasm.<name>` (Envoy's
/// `setProperty`), where access logs read it with `%FILTER_STATE(wasm.<name>)%`.
/// `name` is one path segment. False if the host refused.
pub fn set_property(name: &str, value: &[u8]) -> bool {
    // SAFETY: both pointers are valid for the given lengths for the duration of
    // the call; the host copies the bytes and keeps no reference to them.
    let status =
        unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) };
    if status != 0 {
        log::debug!("api-guard: property {name} not set: status {status}");
    }
    status == 0
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
        log::error!("sending local reply {status} failed: {s:?}");
    }
}

/// Reads a buffer (request/response body, plugin configuration, call response).
pub fn buffer(kind: BufferType, start: usize, size: usize) -> Option<Vec<u8>> {
    match hostcalls::get_buffer(kind, start, size) {
        Ok(b) => b,
        Err(s) => {
            log::warn!("reading buffer {kind:?} failed: {s:?}");
            None
        }
    }
}

/// Replaces a whole buffer (body rewrite).
pub fn replace_buffer(kind: BufferType, size: usize, value: &[u8]) -> bool {
    match hostcalls::set_buffer(kind, 0, size, value) {
        Ok(()) => true,
        Err(s) => {
            log::error!("replacing buffer {kind:?} failed: {s:?}");
            false
        }
    }
}

/// Sets the root context's tick period.
pub fn set_tick_period(period: Duration) {
    if let Err(s) = hostcalls::set_tick_period(period) {
        log::warn!("setting tick period failed: {s:?}");
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

/// Dispatches a unary gRPC call (`message`: the serialized request) through an
/// Envoy cluster; returns the call token. Envoy ends the call itself after
/// `timeout` (status 4, `DEADLINE_EXCEEDED`).
pub fn dispatch_grpc_call(
    cluster: &str,
    service: &str,
    method: &str,
    message: &[u8],
    timeout: Duration,
) -> Result<u32, Status> {
    hostcalls::dispatch_grpc_call(cluster, service, method, Vec::new(), Some(message), timeout)
}

/// Lets a request held at its headers go on.
pub fn resume_request() {
    if let Err(s) = hostcalls::resume_http_request() {
        log::warn!("resuming the request failed: {s:?}");
    }
}

/// Defines a metric (idempotent in Envoy: the same name gives the same id).
pub fn define_metric(kind: MetricType, name: &str) -> Option<u32> {
    match hostcalls::define_metric(kind, name) {
        Ok(id) => Some(id),
        Err(s) => {
            log::warn!("defining metric {name} failed: {s:?}");
            None
        }
    }
}

/// Adds `n` to a counter.
pub fn increment_metric(id: u32, n: u64) {
    let _ = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
}

/// Sets a gauge.
pub fn record_metric(id: u32, value: u64) {
    let _ = hostcalls::record_metric(id, value);
}

/// Proxy-wasm shared data (one store per Envoy process, shared by all workers)
/// as the quota module's [`SharedStore`].
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        match hostcalls::get_shared_data(key) {
            Ok(v) => Ok(v),
            Err(Status::NotFound) => Ok((None, None)),
            Err(s) => {
                log::warn!("shared data read failed: {s:?}");
                Err(StoreError::Unavailable)
            }
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(s) => {
                log::warn!("shared data write failed: {s:?}");
                Err(StoreError::Unavailable)
            }
        }
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    /// Envoy's level for Wasm logs, as a `u32`: spdlog's numbering, which is
    /// proxy-wasm's `LogLevel` (0 trace ... 5 critical) plus 6 for `off`. The SDK's
    /// `hostcalls::get_log_level` reads it into the enum, which has no 6, and panics
    /// on a failed call.
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
}

/// The host's current level for this module's logs (0 trace ... 5 critical,
/// 6 off); 0 when it cannot be read, so the host's own filter decides then.
pub fn log_level() -> u32 {
    let mut level: u32 = 0;
    // SAFETY: the host writes one `u32` through the pointer, which points to a live
    // local of that type.
    match unsafe { proxy_get_log_level(&mut level) } {
        0 => level,
        _ => 0,
    }
}

/// Writes one line to Envoy's `wasm` log component at `level`.
pub fn log(level: proxy_wasm::types::LogLevel, message: &str) {
    // Nowhere to report a failed log call.
    let _ = hostcalls::log(level, message);
}

#[cfg(test)]
mod tests {
    use super::Headers;
    use std::borrow::Cow;

    #[test]
    fn lookups_are_case_insensitive_and_join_repeats() {
        let h = Headers::from_pairs(&[
            (":path", "/a"),
            ("x-forwarded-for", "1.1.1.1"),
            ("cookie", "a=1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("cookie", "b=2"),
        ]);
        assert_eq!(h.first(":PATH"), Some("/a"));
        assert_eq!(h.get("X-Forwarded-For").as_deref(), Some("1.1.1.1,2.2.2.2"));
        assert_eq!(h.joined("cookie", "; ").as_deref(), Some("a=1; b=2"));
        assert!(h.contains("cookie") && !h.contains("authorization"));
        assert_eq!(h.get("authorization"), None);
        // A header that occurs once is lent, not copied; a repeated one is joined.
        assert!(matches!(
            h.joined_borrowed(":path", ","),
            Some(Cow::Borrowed("/a"))
        ));
        assert!(
            matches!(h.joined_borrowed("cookie", "; "), Some(Cow::Owned(v)) if v == "a=1; b=2")
        );
    }

    #[test]
    fn long_values_keep_the_hosts_buffer() {
        // A 200-byte value puts 0xc8 0x00 in the length table: not UTF-8, yet the
        // map is text and is kept as it came, not rebuilt.
        let token = format!("Bearer {}", "a".repeat(193));
        let raw = super::serialize(&[(":path", b"/a"), ("authorization", token.as_bytes())]);
        let at = raw.as_ptr();
        let Some(h) = Headers::parse(raw) else {
            unreachable!("a valid map was refused");
        };
        assert_eq!(h.text.as_ptr(), at, "the map was copied");
        assert_eq!(h.first("authorization"), Some(token.as_str()));
        assert_eq!(h.first(":path"), Some("/a"));
    }

    #[test]
    fn obs_text_is_converted_lossily_and_malformed_maps_are_refused() {
        let raw = super::serialize(&[(":path", b"/a"), ("x-v", b"caf\xe9"), ("x-w", b"ok")]);
        let Some(h) = Headers::parse(raw.clone()) else {
            unreachable!("a valid map was refused");
        };
        assert_eq!(h.first("x-v"), Some("caf\u{fffd}"));
        assert_eq!(h.first("x-w"), Some("ok"));
        assert_eq!(h.first(":path"), Some("/a"));
        for cut in 1..raw.len() {
            assert!(
                Headers::parse(raw[..cut].to_vec()).is_none(),
                "cut at {cut}"
            );
        }
        let mut huge = raw.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Headers::parse(huge).is_none());
        assert!(Headers::parse(Vec::new()).is_some_and(|h| h.first(":path").is_none()));
    }
}
