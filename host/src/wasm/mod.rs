//! Wasm apps: berth's engine (the `berth_wasm` crate, re-exported whole
//! here, so `crate::wasm::WasmRuntime` and friends keep their paths) and
//! the adaptor that makes it a [`Backend`](crate::backend::Backend).
//!
//! # Layout
//! - everything of `berth_wasm`: [`WasmRuntime`], [`WasmApp`], the compile
//!   cache, resident components, the stock, limits, the outbound allow-list.
//! - [`backend`]: Wasm as a [`Backend`](crate::backend::Backend): instances
//!   as shares of a resident component, guest failures as
//!   [`ServeError`](crate::backend::ServeError)s, metering into
//!   [`Metrics`](crate::metrics::Metrics).

pub mod backend;
pub mod config;

pub use berth_wasm::*;
