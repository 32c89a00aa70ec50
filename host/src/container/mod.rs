//! tmp
pub mod rootfs;
