//! Which wasi:http world a component is served as.

use std::fmt;

use wasmtime::Engine;
use wasmtime::component::Component;

/// The wasi:http world a component is served as, told from its exports at
/// deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum World {
    /// Exports `wasi:http/incoming-handler@0.2.x` (WASIp2): a fresh handler
    /// call per request, the response through a `response-outparam`.
    P2,
    /// Exports `wasi:http/handler@0.3.x` (WASIp3): an async handler that
    /// returns its response; bodies are `stream<u8>` with trailers as a
    /// `future`.
    P3,
}

impl World {
    /// How the API, CLI and console name it.
    pub fn as_str(self) -> &'static str {
        match self {
            World::P2 => "wasi:http@0.2",
            World::P3 => "wasi:http@0.3",
        }
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The export that makes a component a WASIp3 service.
const P3_HANDLER: &str = "wasi:http/handler@0.3";
/// The export that makes a component a WASIp2 proxy.
const P2_HANDLER: &str = "wasi:http/incoming-handler@0.2";

/// The world `component` exports (p3 first when it exports both), or the
/// list of what it exports instead.
pub(crate) fn world_of(component: &Component, engine: &Engine) -> Result<World, String> {
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    if exports.iter().any(|e| e.starts_with(P3_HANDLER)) {
        Ok(World::P3)
    } else if exports.iter().any(|e| e.starts_with(P2_HANDLER)) {
        Ok(World::P2)
    } else if exports.is_empty() {
        Err("it exports nothing".into())
    } else {
        Err(format!("it exports {}", exports.join(", ")))
    }
}
