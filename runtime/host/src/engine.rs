//! The wasmtime engine shared by every plugin, and the limits every guest
//! runs under.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Limits applied to every guest instance.
#[derive(Debug, Clone)]
pub struct GuestLimits {
    /// Most linear memory one instance may grow to.
    pub memory_bytes: usize,
    /// Longest one call into the guest may run (epoch deadline and a tokio
    /// timeout, because an epoch does not cover a guest awaiting the host).
    pub call_timeout: Duration,
    /// Most live instances in this process; instantiation waits for none and
    /// fails fast past this (the server answers 503).
    pub max_instances: u32,
}

impl Default for GuestLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            call_timeout: Duration::from_secs(5),
            max_instances: 20_000,
        }
    }
}

/// How often the epoch advances. A runaway guest is stopped within one tick
/// of its deadline.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Epoch ticks for a call timeout (at least one).
pub(crate) fn epoch_ticks(timeout: Duration) -> u64 {
    let ticks = timeout.as_millis() / EPOCH_TICK.as_millis();
    u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
}

/// Core wasm items one component instance may hold. A Rust `wasm32-wasip2`
/// component has one memory and a handful of core instances and tables (its
/// own module plus the canonical-ABI shims).
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const TABLES_PER_COMPONENT: u32 = 8;
const MEMORIES_PER_COMPONENT: u32 = 2;

/// Build the engine: Cranelift, epoch interruption, copy-on-write memory
/// images, and the pooling allocator sized from `limits` (instantiation in
/// tens of microseconds). When the pool's address-space reservation fails
/// (e.g. under a `ulimit -v`), fall back to on-demand allocation and say so.
pub fn build_engine(limits: &GuestLimits) -> anyhow::Result<Engine> {
    let mut config = base_config();
    let instances = limits.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(instances.saturating_mul(MEMORIES_PER_COMPONENT))
        .total_tables(instances.saturating_mul(TABLES_PER_COMPONENT))
        .total_stacks(instances)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_memory_size(limits.memory_bytes);
    // Reserve only what a memory may grow to. With wasmtime's default
    // reservation (4 GiB per memory, for bounds checks by guard pages) the
    // pool's slab for 20,000 instances is ~160 TiB, more than the 128 TiB
    // of user address space, so the pool could never be created and every
    // server fell back to on-demand allocation (which then runs out of
    // mappings, vm.max_map_count, near 10,000 instances). Cranelift emits
    // explicit bounds checks instead.
    config.memory_reservation(u64::try_from(limits.memory_bytes).unwrap_or(u64::MAX));
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    match Engine::new(&config) {
        Ok(engine) => Ok(engine),
        Err(err) => {
            tracing::warn!(
                error = %err,
                "pooling allocator unavailable; falling back to on-demand instance allocation"
            );
            let mut config = base_config();
            config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
            Engine::new(&config)
                .map_err(anyhow::Error::from)
                .context("creating the wasmtime engine")
        }
    }
}

fn base_config() -> Config {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .memory_init_cow(true)
        .cranelift_opt_level(wasmtime::OptLevel::Speed)
        // Guests handle one event at a time; 512 KiB of native stack is
        // plenty and keeps fiber stacks small.
        .max_wasm_stack(256 << 10)
        .async_stack_size(512 << 10);
    config
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a plain thread, so a
/// guest spinning on every tokio worker still gets interrupted. Stops when
/// dropped.
#[derive(Debug)]
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("switchyard-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(Self { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_ticks_round_down_but_never_to_zero() {
        assert_eq!(epoch_ticks(Duration::from_secs(5)), 500);
        assert_eq!(epoch_ticks(Duration::from_millis(15)), 1);
        assert_eq!(epoch_ticks(Duration::from_millis(1)), 1);
    }
}
