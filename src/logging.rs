//! The `log` crate's logger: every record goes to Envoy's `wasm` log component,
//! and Envoy's level for that component decides what is written, so
//! `curl -X POST 'localhost:9901/logging?wasm=debug'` shows the debug lines of a
//! running filter (rejections, with route, reason and the failed rule) without a
//! restart.
//!
//! The SDK's own logger filters by a level fixed inside the module; set to
//! `Trace` it would format every record and make a host call even when Envoy
//! discards it. This one asks the host for its level first (one call, no
//! allocation) and formats only records that will be written.
//!
//! Envoy prefixes each line with the plugin's `name`, `root_id` and `vm_id`, those
//! that are set (`wasm log api-guard: ...`), so messages carry no prefix of their
//! own.

use crate::host;
use proxy_wasm::types::LogLevel;

struct HostLogger;

static LOGGER: HostLogger = HostLogger;

/// proxy-wasm's level for a `log` level; the numbers are spdlog's, which Envoy
/// compares with its component level.
fn host_level(level: log::Level) -> LogLevel {
    match level {
        log::Level::Trace => LogLevel::Trace,
        log::Level::Debug => LogLevel::Debug,
        log::Level::Info => LogLevel::Info,
        log::Level::Warn => LogLevel::Warn,
        log::Level::Error => LogLevel::Error,
    }
}

/// Whether Envoy writes a record of `level` now.
fn enabled(level: LogLevel) -> bool {
    level as u32 >= host::log_level()
}

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        enabled(host_level(metadata.level()))
    }

    fn log(&self, record: &log::Record) {
        let level = host_level(record.level());
        if !enabled(level) {
            return;
        }
        match record.args().as_str() {
            Some(text) => host::log(level, text),
            None => host::log(level, &record.args().to_string()),
        }
    }

    fn flush(&self) {}
}

/// Installs the logger (once per VM) and a panic hook that logs the panic at
/// `critical` before the VM aborts.
pub fn init() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
        std::panic::set_hook(Box::new(|info| {
            host::log(LogLevel::Critical, &info.to_string());
        }));
    }
}
