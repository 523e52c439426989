//! The wasmtime engine shared by every plugin, and the limits every guest
//! runs under.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use std::path::Path;

use anyhow::Context as _;
use wasmtime::{Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy};

use crate::manifest::PluginLimits;
use crate::state::ConsumerState;

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
    /// Most wasm stack one guest call may use (`guest.max-wasm-stack-bytes`).
    /// Engine-wide: wasmtime sets it per engine, not per store, so every
    /// plugin of a server gets the same.
    pub max_wasm_stack: usize,
    /// Most core instances one component instance may create (`[limits]
    /// max-core-instances`, per plugin: a store limit).
    pub max_core_instances: u32,
}

impl Default for GuestLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            call_timeout: Duration::from_secs(5),
            max_instances: 20_000,
            max_wasm_stack: DEFAULT_WASM_STACK,
            max_core_instances: DEFAULT_CORE_INSTANCES,
        }
    }
}

/// The default wasm stack: room for an interpreter (CPython parsing a
/// JSON array nested 800 deep needs more than 256 KiB).
pub const DEFAULT_WASM_STACK: usize = 1 << 20;
/// The smallest and largest `guest.max-wasm-stack-bytes`.
pub const WASM_STACK_RANGE: std::ops::RangeInclusive<usize> = (64 << 10)..=(16 << 20);
/// Native stack a guest call keeps beyond its wasm stack, for host calls.
const HOST_STACK_HEADROOM: usize = 256 << 10;
/// The default core instances per component: componentize-py's output
/// uses 14, its `--stub-wasi` builds 38.
pub const DEFAULT_CORE_INSTANCES: u32 = 64;
/// The largest `[limits] max-core-instances`.
pub const MAX_CORE_INSTANCES: u32 = 1024;

impl GuestLimits {
    /// These (server-wide) limits narrowed by a plugin's `[limits]` table.
    /// A plugin may ask for less memory than the server allows, never more.
    pub(crate) fn for_plugin(&self, own: &PluginLimits) -> Result<Self, String> {
        let memory_bytes = own.memory_bytes.unwrap_or(self.memory_bytes);
        if memory_bytes > self.memory_bytes {
            return Err(format!(
                "limits.memory-bytes = {memory_bytes} exceeds the server's guest.memory-bytes ({})",
                self.memory_bytes
            ));
        }
        if memory_bytes < WASM_PAGE {
            return Err(format!(
                "limits.memory-bytes = {memory_bytes} is below one wasm page ({WASM_PAGE})"
            ));
        }
        let call_timeout = own
            .call_timeout_ms
            .map_or(self.call_timeout, Duration::from_millis);
        if call_timeout.is_zero() {
            return Err("limits.call-timeout-ms must be at least 1".to_owned());
        }
        let max_instances = own.max_instances.unwrap_or(self.max_instances);
        if max_instances == 0 {
            return Err("limits.max-instances must be at least 1".to_owned());
        }
        let max_core_instances = own.max_core_instances.unwrap_or(self.max_core_instances);
        if !(1..=MAX_CORE_INSTANCES).contains(&max_core_instances) {
            return Err(format!(
                "limits.max-core-instances = {max_core_instances} must be between 1 and {MAX_CORE_INSTANCES}"
            ));
        }
        Ok(Self {
            memory_bytes,
            call_timeout,
            max_instances: max_instances.min(self.max_instances),
            max_wasm_stack: self.max_wasm_stack,
            max_core_instances,
        })
    }
}

const WASM_PAGE: usize = 1 << 16;

/// How often the epoch advances. A runaway guest is stopped within one tick
/// of its deadline.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The store's epoch callback, called at every tick while the guest runs:
/// yield to the async executor (so a spinning guest shares its worker
/// thread with every other task instead of holding it until the deadline),
/// or trap with [`wasmtime::Trap::Interrupt`] once the call's ticks are
/// spent.
pub(crate) fn yield_or_interrupt(
    mut store: wasmtime::StoreContextMut<'_, ConsumerState>,
) -> wasmtime::Result<wasmtime::UpdateDeadline> {
    let left = &mut store.data_mut().ticks_left;
    if *left == 0 {
        return Err(wasmtime::Trap::Interrupt.into());
    }
    *left -= 1;
    Ok(wasmtime::UpdateDeadline::Yield(1))
}

/// Epoch ticks for a call timeout (at least one).
pub(crate) fn epoch_ticks(timeout: Duration) -> u64 {
    let ticks = timeout.as_millis() / EPOCH_TICK.as_millis();
    u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
}

/// Memories one component instance may hold. A Rust `wasm32-wasip2`
/// component has one memory and a handful of core instances and tables (its
/// own module plus the canonical-ABI shims); tables are capped at
/// [`GuestLimits::max_core_instances`] (each core instance has few).
pub(crate) const MEMORIES_PER_COMPONENT: u32 = 2;
/// Most elements in one table. A Rust guest's function table holds a few
/// hundred entries; a guest growing a table without bound fails here.
pub(crate) const TABLE_ELEMENTS: usize = 20_000;

/// Memory mappings one live instance keeps: its store's fiber stack and the
/// stack's guard page (a store keeps its last stack until it is dropped),
/// and one per linear memory.
pub(crate) const MAPPINGS_PER_INSTANCE: usize = 3;

/// Build the engine: Cranelift, epoch interruption, and instances
/// allocated on demand, laid out to take as few memory mappings as
/// possible, so a stock kernel (`vm.max_map_count` = 65,530) holds 19,000
/// live instances.
///
/// Why not the pooling allocator: it maps every slot up front, and a slot
/// costs at least four mappings (a fiber stack and its guard page, which a
/// store keeps from its first call until it is dropped, and a linear memory
/// split from the pool's reservation, twice more with a copy-on-write
/// image). At 20,000 slots that is more than the kernel allows, and sizing
/// the pool down caps the instances at about 13,000. Allocated on demand,
/// without a reservation or guard region around linear memory (Cranelift
/// checks bounds explicitly) and without copy-on-write images, an instance
/// takes [`MAPPINGS_PER_INSTANCE`], and instantiation is as fast (19-24 µs
/// p50 against 23-31 µs for the pool, echo plugin, this machine). The cost:
/// `memory.grow` moves a memory to a new mapping and copies it, so a guest
/// growing its memory a page at a time to tens of MiB spends up to a second
/// doing so. The instance cap is [`GuestLimits::max_instances`], held by
/// the host's semaphore.
///
/// With `compile_cache`, compiled components are cached in that directory,
/// keyed by the hash of the component and the engine's settings (wasmtime's
/// own cache), so restarting with unchanged plugins skips compilation.
pub(crate) fn build_engine(
    limits: &GuestLimits,
    compile_cache: Option<&Path>,
) -> anyhow::Result<(Engine, Option<Cache>)> {
    let cache = match compile_cache {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the compile cache {}", dir.display()))?;
            let mut cache_config = CacheConfig::new();
            cache_config.with_directory(dir);
            Some(
                Cache::new(cache_config)
                    .map_err(anyhow::Error::from)
                    .with_context(|| format!("opening the compile cache {}", dir.display()))?,
            )
        }
        None => None,
    };
    let mut config = base_config(cache.clone(), limits.max_wasm_stack);
    config
        .allocation_strategy(InstanceAllocationStrategy::OnDemand)
        .memory_init_cow(false)
        .memory_reservation(0)
        .memory_reservation_for_growth(0)
        .memory_guard_size(0)
        .guard_before_linear_memory(false);
    let engine = Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("creating the wasmtime engine")?;
    log_mapping_room(limits);
    Ok((engine, cache))
}

/// Say at start-up how many live instances the kernel's mapping limit
/// leaves room for, and warn when that is fewer than `guest.max-instances`
/// (past it, instantiation fails with ENOMEM and the handshake gets 500).
fn log_mapping_room(limits: &GuestLimits) {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let Some(max) = read("/proc/sys/vm/max_map_count").and_then(|s| s.trim().parse::<usize>().ok())
    else {
        return;
    };
    let in_use = read("/proc/self/maps").map_or(0, |maps| maps.lines().count());
    // Room for the runtime's own growth: threads, buffers, the compiler.
    let reserve = 2048;
    let room = max.saturating_sub(in_use + reserve) / MAPPINGS_PER_INSTANCE;
    let wanted = usize::try_from(limits.max_instances).unwrap_or(usize::MAX);
    if room < wanted {
        tracing::warn!(
            max_map_count = max,
            in_use,
            room,
            max_instances = limits.max_instances,
            "vm.max_map_count leaves room for about {room} live instances ({MAPPINGS_PER_INSTANCE} \
             mappings each), fewer than guest.max-instances; past that, handshakes fail with 500. \
             Lower guest.max-instances, use instance = \"shared\", or run more processes"
        );
    } else {
        tracing::info!(
            max_map_count = max,
            in_use,
            room,
            max_instances = limits.max_instances,
            "memory mappings: room for about {room} live instances ({MAPPINGS_PER_INSTANCE} each)"
        );
    }
}

fn base_config(cache: Option<Cache>, max_wasm_stack: usize) -> Config {
    let mut config = Config::new();
    config
        .cache(cache)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .cranelift_opt_level(wasmtime::OptLevel::Speed)
        // Engine-wide in wasmtime (no per-store knob). A fiber stack is
        // reserved, not committed: an instance pays only for the pages its
        // calls touch.
        .max_wasm_stack(max_wasm_stack)
        .async_stack_size(max_wasm_stack + HOST_STACK_HEADROOM);
    config
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a plain thread, so a
/// guest spinning on every tokio worker still gets interrupted, but only
/// while guest calls run ([`EpochClock::running`]): once a whole tick went
/// by with no call in flight and none started, the thread parks, so an idle
/// server does not wake 100 times a second. An epoch deadline is relative
/// to the epoch when the call was armed, so the pauses change no deadline.
/// Stops when dropped.
///
/// Why park only after a quiet tick: parking as soon as no call is in
/// flight made a busy server (calls of a microsecond, most of the time
/// none in flight) unpark the thread for nearly every call, a futex wake
/// and a context switch per message. Now a call only raises a counter and
/// reads a flag; the thread is woken only by the first call after a pause.
#[derive(Debug)]
pub(crate) struct EpochTicker {
    clock: EpochClock,
}

/// The ticker's shared half: what guest calls tell it.
#[derive(Debug, Clone)]
pub(crate) struct EpochClock {
    shared: Arc<TickerShared>,
}

#[derive(Debug)]
struct TickerShared {
    /// Guest calls (and instantiations) running now.
    in_flight: AtomicUsize,
    /// A call started since the thread last looked.
    started: AtomicBool,
    /// The thread is parked (or about to park): the next call unparks it.
    parked: AtomicBool,
    stop: AtomicBool,
    /// The thread, to unpark.
    thread: std::sync::OnceLock<std::thread::Thread>,
    /// Ticks since start, and times the thread parked (for tests).
    ticks: AtomicU64,
    parks: AtomicU64,
}

/// A guest call in flight; the clock ticks while any is alive.
#[derive(Debug)]
pub(crate) struct Running {
    shared: Arc<TickerShared>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EpochClock {
    /// Mark a guest call in flight until the guard drops.
    pub(crate) fn running(&self) -> Running {
        let shared = &*self.shared;
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        // Written only when it changes, so busy calls on several threads
        // do not keep taking the cache line from each other.
        if !shared.started.load(Ordering::Relaxed) {
            shared.started.store(true, Ordering::Relaxed);
        }
        // SeqCst with the thread's store of `parked` and its second look
        // at `in_flight`: either it sees this call and stays awake, or this
        // call sees it parking and unparks it.
        if shared.parked.load(Ordering::SeqCst)
            && let Some(thread) = shared.thread.get()
        {
            thread.unpark();
        }
        Running {
            shared: Arc::clone(&self.shared),
        }
    }

    #[cfg(test)]
    fn ticks(&self) -> u64 {
        self.shared.ticks.load(Ordering::Acquire)
    }

    #[cfg(test)]
    fn parked(&self) -> bool {
        self.shared.parked.load(Ordering::Acquire)
    }

    #[cfg(test)]
    fn parks(&self) -> u64 {
        self.shared.parks.load(Ordering::Acquire)
    }
}

impl TickerShared {
    /// Whether a call runs now or started since the last look.
    fn busy(&self) -> bool {
        let started = self.started.swap(false, Ordering::Relaxed);
        started || self.in_flight.load(Ordering::SeqCst) > 0
    }

    /// The thread's loop: tick while calls run, park once a tick was quiet.
    fn run(&self, engine: &Engine) {
        while !self.stop.load(Ordering::Acquire) {
            if !self.busy() {
                self.parked.store(true, Ordering::SeqCst);
                // A call that started between `busy` and the store above
                // is seen here; one starting after it sees `parked` and
                // unparks (a token left early makes `park` return at once).
                if self.in_flight.load(Ordering::SeqCst) == 0 && !self.stop.load(Ordering::Acquire)
                {
                    self.parks.fetch_add(1, Ordering::AcqRel);
                    std::thread::park();
                }
                self.parked.store(false, Ordering::SeqCst);
                continue;
            }
            std::thread::sleep(EPOCH_TICK);
            engine.increment_epoch();
            self.ticks.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine) -> std::io::Result<Self> {
        let shared = Arc::new(TickerShared {
            in_flight: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            thread: std::sync::OnceLock::new(),
            ticks: AtomicU64::new(0),
            parks: AtomicU64::new(0),
        });
        let state = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("switchyard-epoch".into())
            .spawn(move || state.run(&engine))?;
        let _ = shared.thread.set(handle.thread().clone());
        Ok(Self {
            clock: EpochClock { shared },
        })
    }

    /// The handle guest calls use to keep the clock ticking.
    pub(crate) fn clock(&self) -> EpochClock {
        self.clock.clone()
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.clock.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = self.clock.shared.thread.get() {
            thread.unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_limits_narrow_but_never_widen() {
        let server = GuestLimits::default();
        let same = server
            .for_plugin(&PluginLimits::default())
            .expect("defaults");
        assert_eq!(same.memory_bytes, server.memory_bytes);
        assert_eq!(same.call_timeout, server.call_timeout);
        let own = PluginLimits {
            memory_bytes: Some(16 << 20),
            call_timeout_ms: Some(300),
            max_instances: Some(u32::MAX),
            max_core_instances: Some(38),
        };
        let narrowed = server.for_plugin(&own).expect("narrower");
        assert_eq!(narrowed.memory_bytes, 16 << 20);
        assert_eq!(narrowed.call_timeout, Duration::from_millis(300));
        assert_eq!(narrowed.max_instances, server.max_instances);
        assert_eq!(narrowed.max_core_instances, 38);
        let too_many = PluginLimits {
            max_core_instances: Some(MAX_CORE_INSTANCES + 1),
            ..PluginLimits::default()
        };
        let err = server.for_plugin(&too_many).expect_err("too many");
        assert!(err.contains("limits.max-core-instances"), "{err}");
        let greedy = PluginLimits {
            memory_bytes: Some(server.memory_bytes + 1),
            ..PluginLimits::default()
        };
        let err = server.for_plugin(&greedy).expect_err("wider");
        assert!(err.contains("guest.memory-bytes"), "{err}");
        let zero = PluginLimits {
            call_timeout_ms: Some(0),
            ..PluginLimits::default()
        };
        assert!(server.for_plugin(&zero).is_err());
    }

    /// Whether a core wasm function recursing `depth` deep returns under
    /// an engine built with `max_wasm_stack`.
    async fn recursion_fits(max_wasm_stack: usize, depth: i32) -> bool {
        let limits = GuestLimits {
            max_wasm_stack,
            ..GuestLimits::default()
        };
        let (engine, _) = build_engine(&limits, None).expect("engine");
        let wasm = wat::parse_str(
            r#"(module (func $r (export "r") (param i32) (result i32)
                local.get 0
                i32.eqz
                if (result i32)
                  i32.const 0
                else
                  local.get 0 i32.const 1 i32.sub call $r i32.const 1 i32.add
                end))"#,
        )
        .expect("wat");
        let module = wasmtime::Module::new(&engine, wasm).expect("module");
        let mut store = wasmtime::Store::new(&engine, ());
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = wasmtime::Instance::new_async(&mut store, &module, &[])
            .await
            .expect("instance");
        let r = instance
            .get_typed_func::<i32, i32>(&mut store, "r")
            .expect("export r");
        match r.call_async(&mut store, depth).await {
            Ok(n) => n == depth,
            Err(err) => {
                assert_eq!(
                    err.downcast_ref::<wasmtime::Trap>(),
                    Some(&wasmtime::Trap::StackOverflow),
                    "{err:?}"
                );
                false
            }
        }
    }

    #[tokio::test]
    async fn the_wasm_stack_is_the_configured_one() {
        // 20,000 frames overflow the smallest stack and fit the default.
        assert!(!recursion_fits(*WASM_STACK_RANGE.start(), 20_000).await);
        assert!(recursion_fits(DEFAULT_WASM_STACK, 20_000).await);
        // ... and 200,000 need a raised one.
        assert!(!recursion_fits(DEFAULT_WASM_STACK, 200_000).await);
        assert!(recursion_fits(*WASM_STACK_RANGE.end(), 200_000).await);
    }

    #[test]
    fn epoch_ticks_round_down_but_never_to_zero() {
        assert_eq!(epoch_ticks(Duration::from_secs(5)), 500);
        assert_eq!(epoch_ticks(Duration::from_millis(15)), 1);
        assert_eq!(epoch_ticks(Duration::from_millis(1)), 1);
    }

    /// Wait (spinning politely) until `done` holds.
    fn wait_until(done: impl Fn() -> bool) {
        while !done() {
            std::thread::yield_now();
        }
    }

    #[test]
    fn the_epoch_ticks_only_while_a_call_runs() {
        let engine = Engine::default();
        let ticker = EpochTicker::start(engine).expect("ticker thread");
        let clock = ticker.clock();
        // Idle from the start: the thread parks without ticking.
        wait_until(|| clock.parked());
        assert_eq!(clock.ticks(), 0);

        let call = clock.running();
        wait_until(|| clock.ticks() >= 2);
        drop(call);
        wait_until(|| clock.parked());
        let idle = clock.ticks();
        // Parked means blocked in `park`: no tick until the next call.
        assert_eq!(clock.ticks(), idle);

        let _again = clock.running();
        wait_until(|| clock.ticks() > idle);
    }

    #[test]
    fn short_calls_back_to_back_do_not_park_the_thread_each_time() {
        let engine = Engine::default();
        let ticker = EpochTicker::start(engine).expect("ticker thread");
        let clock = ticker.clock();
        wait_until(|| clock.parked());
        let parks = clock.parks();
        // Short calls with gaps between them longer than the calls (no
        // call in flight most of the time), across 20 ticks: the thread
        // sees a call started in every tick and keeps ticking. Parking
        // whenever no call is in flight would park about once per tick.
        // A little slack for this thread being descheduled for a whole
        // tick on a busy machine.
        let mut calls = 0u64;
        while clock.ticks() < 20 {
            drop(clock.running());
            calls += 1;
            let gap = std::time::Instant::now();
            while gap.elapsed() < Duration::from_micros(200) {
                std::hint::spin_loop();
            }
        }
        assert!(calls > 20);
        assert!(
            clock.parks() <= parks + 3,
            "parked {} times during {calls} calls",
            clock.parks() - parks
        );
        // And once the calls stop, it parks again.
        wait_until(|| clock.parked());
    }
}
