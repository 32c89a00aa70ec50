//! The engine's configuration: the pooling allocator and how its slots
//! are reset between instances.

use wasmtime::PoolingAllocationConfig;

use crate::limits;

/// The most bytes of a linear memory a slot's reset copies back (only the
/// pages its instance wrote, found with `PAGEMAP_SCAN`) and keeps resident;
/// past it the rest is `madvise`d away.
pub const LINEAR_MEMORY_KEEP_RESIDENT: usize = 1 << 20;

/// Without `PAGEMAP_SCAN`, the bytes at the start of a linear memory reset
/// with `memset` (blindly: written or not) rather than `madvise`.
pub const LINEAR_MEMORY_MEMSET: usize = 64 << 10;

/// How a pool slot is made clean for its next instance.
///
/// [`SlotReset::Madvise`] is the default. With wasmtime 50.0.1 Linux's
/// `PAGEMAP_SCAN` costs more than it saves: its scan asks for pages that
/// are *written*, no longer also *present* (so that a dirty page in swap is
/// reset too), and on a memory not registered with userfaultfd the kernel
/// reports every page that was never touched as written as well (checked
/// on Linux 6.18: of 256 pages with 2 written, the scan returns 255). The
/// reset then copies back the whole `keep_resident` budget on every
/// instance and `madvise`s the rest: 1 MiB of `memset` and a TLB shootdown
/// per request, a third of berth's CPU under `wrk -c50` (README,
/// "Performance"). Asking for pages written *and* present-or-swapped would
/// find the two written pages; until the engine does, `madvise` is the
/// cheaper reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlotReset {
    /// Linux's `PAGEMAP_SCAN` (6.7+) finds the pages to reset; they are
    /// copied back from the memory image and stay resident (up to
    /// [`LINEAR_MEMORY_KEEP_RESIDENT`]). Falls back to [`SlotReset::Madvise`]
    /// where the kernel has no `PAGEMAP_SCAN`.
    DirtyPages,
    /// The first [`LINEAR_MEMORY_MEMSET`] bytes with `memset`, the rest with
    /// `madvise`: written pages fault in again for the next instance.
    #[default]
    Madvise,
}

impl SlotReset {
    /// How `--wasm-slot-reset` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotReset::DirtyPages => "dirty-pages",
            SlotReset::Madvise => "madvise",
        }
    }
}

impl std::str::FromStr for SlotReset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dirty-pages" => Ok(SlotReset::DirtyPages),
            "madvise" => Ok(SlotReset::Madvise),
            other => Err(format!(
                "unknown slot reset `{other}` (expected `madvise` or `dirty-pages`)"
            )),
        }
    }
}

/// The engine's configuration: the pooling allocator sized for `n`
/// instances, copy-on-write memory images, epoch interruption.
pub(crate) fn engine_config(n: u32, reset: SlotReset) -> wasmtime::Config {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        // A component built by wit-component holds a few core instances
        // (the main module plus shims) and may have an adapter's memory.
        .total_core_instances(n.saturating_mul(8))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        .total_stacks(n)
        .max_memories_per_component(4)
        .max_tables_per_component(8)
        .max_core_instances_per_component(32)
        .max_memory_size(limits::MAX_MEMORY_LIMIT as usize)
        .table_keep_resident(1 << 16);
    match reset {
        SlotReset::DirtyPages => pool
            .pagemap_scan(wasmtime::Enabled::Yes)
            .linear_memory_keep_resident(LINEAR_MEMORY_KEEP_RESIDENT),
        // A blind memset of the first 1 MiB was 26 % of berth's CPU under
        // `wrk -c50` (perf).
        SlotReset::Madvise => pool.linear_memory_keep_resident(LINEAR_MEMORY_MEMSET),
    };
    let mut config = wasmtime::Config::new();
    config
        .allocation_strategy(pool)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .wasm_component_model(true)
        // WASIp3 (`wasi:http/handler@0.3`): async exports, streams, futures.
        .wasm_component_model_async(true)
        .parallel_compilation(true);
    config
}
