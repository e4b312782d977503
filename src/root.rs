//! The root context: owns the compiled policy for one worker's VM.
//!
//! `on_configure` parses and compiles the whole configuration; any error is
//! logged with its field path and `false` is returned, so Envoy refuses the
//! plugin (and `envoy --mode validate` fails) instead of running unprotected.

use crate::filter::Filter;
use crate::host;
use crate::policy::Policy;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};
use std::rc::Rc;

/// Root context of the plugin.
#[derive(Default)]
pub struct Root {
    policy: Option<Rc<Policy>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = host::buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        )
        .unwrap_or_default();
        match Policy::from_bytes(&bytes) {
            Ok(policy) => {
                log::info!(
                    "api-guard: configuration loaded: {} route(s)",
                    policy.routes.len()
                );
                self.policy = Some(Rc::new(policy));
                true
            }
            Err(e) => {
                log::error!("api-guard: invalid plugin configuration: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter::new(self.policy.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
