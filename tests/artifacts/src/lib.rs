//! Absolute paths of the guest components in `components/`, built for
//! wasm32-wasip2 (release) by this crate's build script: one `&str` const per
//! component (`HELLO`, `ECHO`, ..., `SPIN_FOREVER`, `ALLOC_BOMB`, ...) and
//! [`ALL`], every `(crate name, path)` pair.

include!(concat!(env!("OUT_DIR"), "/components.rs"));
