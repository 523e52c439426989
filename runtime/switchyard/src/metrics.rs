//! `GET /_switchyard/metrics`: the server's metrics in the Prometheus text
//! format (0.0.4), behind the admin token like the rest of the admin API
//! (404 while `admin.token` is unset or `[metrics] enabled = false`, 401
//! without the right token).
//!
//! Two kinds of values, one registry (`prometheus-client`):
//! - Counted here, on the hot paths: open connections, handshakes,
//!   messages and bytes by plugin and route, close codes, handshake
//!   answers by status, HTTP requests by plugin and status. The labelled
//!   handles are resolved once per connection ([`ConnectionMetrics`]);
//!   a message costs two relaxed atomic adds on the worker thread's own
//!   slot of a [`ShardedCounter`]. Guest call durations go to a
//!   per-plugin [`CallHistogram`] of atomics, sharded the same way, which
//!   the host reaches through its [`GuestMetrics`] hook (resolved once per
//!   consumer).
//!
//! Why shards: every connection of a route counts into the same counters,
//! from every worker thread. One atomic shared by all would pass its cache
//! line from core to core on every message (with plain shared atomics,
//! `bench/metrics.sh` on a busy 2-core machine showed the server using
//! ~1 µs, ~7%, more CPU per echo message with metrics on, within a wide
//! noise). Each thread adds to a slot of its own, on its own cache line,
//! and a scrape sums the slots.
//! - Already counted elsewhere, read at scrape time by [`Scraped`] (never
//!   counted twice): [`Counters`] (refusals and forced closes), the
//!   layer's `LayerStats` and `LayerHealth`, the host's guest failures,
//!   plugin lifecycle events and instance slots.
//!
//! With `[metrics] enabled = false` none of this exists: the server keeps
//! no handles and the host times no call.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};
use switchyard_host::{CallObserver, GuestMetrics, PluginHost};
use switchyard_layer::LoopHealth;

use crate::admin;
use crate::counters::Counters;
use crate::server::AppState;

/// The path of the metrics endpoint.
pub(crate) const METRICS_PATH: &str = "/_switchyard/metrics";

/// A WebSocket route and the plugin serving it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    plugin: String,
    route: String,
}

/// A close code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: u16,
}

/// An HTTP status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

/// A plugin and the HTTP status of its answer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginStatusLabels {
    plugin: String,
    status: u16,
}

/// Every metric of a server, and the registry that encodes them.
pub(crate) struct Metrics {
    registry: Registry,
    open: Family<RouteLabels, Gauge>,
    handshakes: Family<RouteLabels, Counter>,
    messages_in: Family<RouteLabels, ShardedCounter>,
    messages_out: Family<RouteLabels, ShardedCounter>,
    bytes_in: Family<RouteLabels, ShardedCounter>,
    bytes_out: Family<RouteLabels, ShardedCounter>,
    closes: Family<CodeLabels, Counter>,
    answers: Family<StatusLabels, Counter>,
    http: Family<PluginStatusLabels, Counter>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The registry: the server's own families, and a collector that reads
    /// what `host` and `counters` count (and `calls`, the guest call
    /// histograms the host feeds) at scrape time.
    pub(crate) fn new(
        host: Arc<PluginHost>,
        counters: Arc<Counters>,
        calls: Arc<GuestCalls>,
    ) -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            open: Family::default(),
            handshakes: Family::default(),
            messages_in: Family::default(),
            messages_out: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            closes: Family::default(),
            answers: Family::default(),
            http: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "switchyard_websocket_open_connections",
            "Open WebSocket connections by plugin and route",
            metrics.open.clone(),
        );
        registry.register(
            "switchyard_websocket_handshakes",
            "WebSocket handshakes routed to a plugin, whatever the answer",
            metrics.handshakes.clone(),
        );
        registry.register(
            "switchyard_websocket_handshake_responses",
            "Answers to WebSocket handshakes by HTTP status (101 accepted)",
            metrics.answers.clone(),
        );
        registry.register(
            "switchyard_websocket_messages_received",
            "Text and binary messages received from clients",
            metrics.messages_in.clone(),
        );
        registry.register(
            "switchyard_websocket_messages_sent",
            "Text and binary messages written to clients",
            metrics.messages_out.clone(),
        );
        registry.register_with_unit(
            "switchyard_websocket_received",
            "Payload bytes of the messages received from clients",
            Unit::Bytes,
            metrics.bytes_in.clone(),
        );
        registry.register_with_unit(
            "switchyard_websocket_sent",
            "Payload bytes of the messages written to clients",
            Unit::Bytes,
            metrics.bytes_out.clone(),
        );
        registry.register(
            "switchyard_websocket_closes",
            "Connections ended, by the code the consumer's disconnect got",
            metrics.closes.clone(),
        );
        registry.register(
            "switchyard_http_requests",
            "Plain HTTP requests routed to a plugin, by plugin and answer status",
            metrics.http.clone(),
        );
        registry.register_collector(Box::new(Scraped {
            host,
            counters,
            calls,
        }));
        Self {
            registry,
            ..metrics
        }
    }

    /// The handles of one connection's metrics.
    pub(crate) fn connection(&self, plugin: &str, route: &str) -> ConnectionMetrics {
        let labels = RouteLabels {
            plugin: plugin.to_owned(),
            route: route.to_owned(),
        };
        ConnectionMetrics {
            open: self.open.get_or_create_owned(&labels),
            messages_in: self.messages_in.get_or_create_owned(&labels),
            messages_out: self.messages_out.get_or_create_owned(&labels),
            bytes_in: self.bytes_in.get_or_create_owned(&labels),
            bytes_out: self.bytes_out.get_or_create_owned(&labels),
            closes: self.closes.clone(),
        }
    }

    /// A handshake reached `plugin`'s `route`.
    pub(crate) fn handshake(&self, plugin: &str, route: &str) {
        let labels = RouteLabels {
            plugin: plugin.to_owned(),
            route: route.to_owned(),
        };
        self.handshakes.get_or_create(&labels).inc();
    }

    /// A WebSocket handshake was answered with `status`.
    pub(crate) fn handshake_answered(&self, status: StatusCode) {
        let labels = StatusLabels {
            status: status.as_u16(),
        };
        self.answers.get_or_create(&labels).inc();
    }

    /// `plugin` answered an HTTP request with `status` (or the server did
    /// for it: 401, 413, 500, 503, 504, ...).
    pub(crate) fn http_answered(&self, plugin: &str, status: StatusCode) {
        let labels = PluginStatusLabels {
            plugin: plugin.to_owned(),
            status: status.as_u16(),
        };
        self.http.get_or_create(&labels).inc();
    }

    /// The registry in the Prometheus text format.
    fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::with_capacity(16 << 10);
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// `GET /_switchyard/metrics`.
pub(crate) async fn scrape(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let Some(metrics) = &app.metrics else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Some(refused) = admin::refusal(&app, &headers) {
        return refused;
    }
    match metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                ),
            )],
            text,
        )
            .into_response(),
        Err(fmt::Error) => {
            tracing::error!("encoding the metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n").into_response()
        }
    }
}

/// One connection's handles: cloned from the families once, when the
/// handshake is accepted, so counting a message touches no map or lock.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionMetrics {
    /// Changed once per connection: a plain (shared) atomic.
    open: Gauge,
    messages_in: ShardedCounter,
    messages_out: ShardedCounter,
    bytes_in: ShardedCounter,
    bytes_out: ShardedCounter,
    closes: Family<CodeLabels, Counter>,
}

impl ConnectionMetrics {
    /// The socket opened.
    pub(crate) fn opened(&self) {
        self.open.inc();
    }

    /// The connection ended; its consumer's `disconnect` got `code`.
    pub(crate) fn closed(&self, code: u16) {
        self.open.dec();
        self.closes.get_or_create(&CodeLabels { code }).inc();
    }

    /// A whole message of `bytes` arrived.
    pub(crate) fn received(&self, bytes: usize) {
        let shard = shard();
        self.messages_in.add(shard, 1);
        self.bytes_in.add(shard, bytes as u64);
    }

    /// A message of `bytes` went to the socket.
    pub(crate) fn sent(&self, bytes: usize) {
        let shard = shard();
        self.messages_out.add(shard, 1);
        self.bytes_out.add(shard, bytes as u64);
    }
}

/// Slots of a sharded metric: more than the worker threads of a process
/// on most machines (threads past it share slots, still correct).
const SHARDS: usize = 16;

/// This thread's slot in every sharded metric.
fn shard() -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static SHARD: usize = (NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS as u64) as usize;
    }
    SHARD.with(|shard| *shard)
}

/// One thread's slot, alone on its cache line (128 bytes: two lines
/// on CPUs that fetch lines in pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(AtomicU64);

/// A counter whose threads each add to a slot of their own; a scrape
/// sums the slots.
#[derive(Debug, Clone, Default)]
pub(crate) struct ShardedCounter(Arc<[Slot; SHARDS]>);

impl ShardedCounter {
    fn add(&self, shard: usize, n: u64) {
        self.0[shard].0.fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0
            .iter()
            .map(|slot| slot.0.load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> fmt::Result {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Upper bounds of the guest call duration buckets, in nanoseconds: a
/// call into a hot instance takes 1-2 µs, one that instantiates or waits
/// on Redis milliseconds, and the default call timeout is 5 s.
const CALL_BUCKETS_NS: [u64; 16] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
];

/// A histogram of one plugin's guest call durations, all atomics: a call
/// costs a short scan of the bounds and two relaxed adds on its thread's
/// shard. (`prometheus_client`'s own histogram takes a mutex per
/// observation, shared by every thread.)
#[derive(Debug, Default)]
pub(crate) struct CallHistogram {
    shards: [HistogramShard; SHARDS],
}

/// One thread's buckets, on cache lines of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct HistogramShard {
    /// Per bucket (not cumulative); the last is past every bound (+Inf).
    buckets: [AtomicU64; CALL_BUCKETS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl CallObserver for CallHistogram {
    fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = CALL_BUCKETS_NS
            .iter()
            .position(|&bound| ns <= bound)
            .unwrap_or(CALL_BUCKETS_NS.len());
        let shard = &self.shards[shard()];
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        shard.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl CallHistogram {
    /// Sum in seconds, count, and the buckets as `(upper bound in seconds,
    /// count in that bucket)`, as the encoder wants them.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut count = 0;
        let buckets = (0..=CALL_BUCKETS_NS.len())
            .map(|i| {
                let n: u64 = self
                    .shards
                    .iter()
                    .map(|shard| shard.buckets[i].load(Ordering::Relaxed))
                    .sum();
                count += n;
                let bound = CALL_BUCKETS_NS
                    .get(i)
                    .map_or(f64::INFINITY, |&ns| ns as f64 / 1e9);
                (bound, n)
            })
            .collect();
        let sum_ns: u64 = self
            .shards
            .iter()
            .map(|shard| shard.sum_ns.load(Ordering::Relaxed))
            .sum();
        let sum = sum_ns as f64 / 1e9;
        (sum, count, buckets)
    }
}

/// The host's [`GuestMetrics`]: a [`CallHistogram`] per plugin name,
/// shared by its versions.
#[derive(Debug, Default)]
pub(crate) struct GuestCalls {
    /// A std mutex: held only for the lookup when a consumer starts, and
    /// for the copy of the map at a scrape.
    by_plugin: Mutex<BTreeMap<String, Arc<CallHistogram>>>,
}

impl GuestMetrics for GuestCalls {
    fn plugin(&self, plugin: &str) -> Arc<dyn CallObserver> {
        let mut map = self
            .by_plugin
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(histogram) = map.get(plugin) {
            return Arc::clone(histogram) as Arc<dyn CallObserver>;
        }
        let histogram = Arc::new(CallHistogram::default());
        map.insert(plugin.to_owned(), Arc::clone(&histogram));
        histogram
    }
}

/// Reads, at each scrape, what other parts of the server already count.
#[derive(Debug)]
struct Scraped {
    host: Arc<PluginHost>,
    counters: Arc<Counters>,
    calls: Arc<GuestCalls>,
}

fn counter(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn gauge(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// A metric with one sample per label set.
fn labelled<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    (name, help, kind): (&str, &str, MetricType),
    samples: &[(L, u64)],
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        let mut sample = metric.encode_family(labels)?;
        if kind == MetricType::Counter {
            sample.encode_counter::<NoLabelSet, _, u64>(value, None)?;
        } else {
            sample.encode_gauge(value)?;
        }
    }
    Ok(())
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        self.encode_server(&mut encoder)?;
        self.encode_layer(&mut encoder)?;
        self.encode_host(&mut encoder)
    }
}

impl Scraped {
    /// [`Counters`]: refusals and forced closes.
    fn encode_server(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let c = &*self.counters;
        let get = Counters::get;
        labelled(
            encoder,
            (
                "switchyard_handshake_refusals",
                "WebSocket handshakes refused by the server's own gates, by reason.",
                MetricType::Counter,
            ),
            &[
                ([("reason", "origin")], get(&c.bad_origin)),
                ([("reason", "unauthenticated")], get(&c.unauthenticated)),
                ([("reason", "ip_limit")], get(&c.ip_limited)),
                ([("reason", "capacity")], get(&c.at_capacity)),
            ],
        )?;
        labelled(
            encoder,
            (
                "switchyard_forced_closes",
                "Connections the server closed, by reason.",
                MetricType::Counter,
            ),
            &[
                ([("reason", "slow_reader")], get(&c.slow_readers)),
                ([("reason", "message_rate")], get(&c.message_rate)),
                ([("reason", "ping_timeout")], get(&c.ping_timeouts)),
                ([("reason", "plugin_failure")], get(&c.plugin_failures)),
            ],
        )?;
        counter(
            encoder,
            "switchyard_oversized_requests",
            "Requests refused for an oversized path (414) or headers (431).",
            get(&c.oversized_requests),
        )?;
        counter(
            encoder,
            "switchyard_abandoned_handshakes",
            "Handshakes whose client left while the consumer's connect ran.",
            get(&c.abandoned_handshakes),
        )?;
        counter(
            encoder,
            "switchyard_request_timeouts",
            "Connections closed for sending no complete request head in time.",
            get(&c.request_timeouts),
        )?;
        counter(
            encoder,
            "switchyard_tls_reloads",
            "TLS certificates reloaded from changed files.",
            get(&c.tls_reloads),
        )?;
        counter(
            encoder,
            "switchyard_tls_reload_failures",
            "TLS certificate reloads that failed (the previous certificate kept serving).",
            get(&c.tls_reload_failures),
        )
    }

    /// The channel layer's `LayerStats` and, for Redis, its loops' health.
    fn encode_layer(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let layer = self.host.layer();
        let stats = layer.stats();
        for (name, help, value) in [
            (
                "switchyard_layer_sends",
                "send and group_send calls that passed validation.",
                stats.sent,
            ),
            (
                "switchyard_layer_group_sends",
                "group_send calls that passed validation.",
                stats.group_sends,
            ),
            (
                "switchyard_layer_deliveries",
                "Events put into a local inbox.",
                stats.delivered,
            ),
            (
                "switchyard_layer_channel_full",
                "send calls refused with ChannelFull.",
                stats.channel_full,
            ),
            (
                "switchyard_layer_group_skipped_members",
                "Group members skipped by group_send because their channel was full.",
                stats.group_over_capacity,
            ),
            (
                "switchyard_layer_expired",
                "Events dropped unread after the expiry.",
                stats.expired,
            ),
            (
                "switchyard_layer_undeliverable",
                "Events addressed to a channel with no local inbox.",
                stats.undeliverable,
            ),
            (
                "switchyard_layer_full_inbox_skips",
                "Redis group sends that skipped a whole full process inbox.",
                stats.full_inbox_skips,
            ),
        ] {
            counter(encoder, name, help, value)?;
        }
        let health = layer.health();
        let loops = |pick: &dyn Fn(&LoopHealth) -> u64| -> Vec<_> {
            health
                .shards
                .iter()
                .flat_map(|shard| {
                    [
                        ("receive", &shard.receive),
                        ("refresh", &shard.refresh),
                        ("heartbeat", &shard.heartbeat),
                    ]
                    .map(|(name, state)| {
                        (
                            [("shard", shard.url.clone()), ("loop", name.to_owned())],
                            pick(state),
                        )
                    })
                })
                .collect()
        };
        labelled(
            encoder,
            (
                "switchyard_redis_errors",
                "Failed attempts of the Redis layer's background loops (each is retried: a reconnect).",
                MetricType::Counter,
            ),
            &loops(&|state| state.total_failures),
        )?;
        labelled(
            encoder,
            (
                "switchyard_redis_loop_failing",
                "1 while a Redis layer loop's last attempt failed.",
                MetricType::Gauge,
            ),
            &loops(&|state| u64::from(state.failing)),
        )?;
        let processes: Vec<_> = health
            .shards
            .iter()
            .map(|shard| ([("shard", shard.url.clone())], shard.processes as u64))
            .collect();
        labelled(
            encoder,
            (
                "switchyard_redis_processes",
                "Switchyard processes seen alive on each Redis host.",
                MetricType::Gauge,
            ),
            &processes,
        )
    }

    /// The host: guest failures, call durations, lifecycle, instance slots.
    fn encode_host(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let failures = self.host.failures();
        let per_plugin = |pick: fn(&switchyard_host::PluginFailures) -> u64| -> Vec<_> {
            failures
                .iter()
                .map(|f| ([("plugin", f.plugin.clone())], pick(f)))
                .collect()
        };
        for (name, help, pick) in [
            (
                "switchyard_guest_traps",
                "Guest calls that trapped, by plugin.",
                (|f| f.traps) as fn(&switchyard_host::PluginFailures) -> u64,
            ),
            (
                "switchyard_guest_deadline_kills",
                "Guest calls stopped at their deadline, by plugin.",
                |f| f.deadlines,
            ),
            (
                "switchyard_guest_abandoned_calls",
                "Instances left in the middle of a call and never entered again, by plugin.",
                |f| f.abandoned,
            ),
        ] {
            labelled(
                encoder,
                (name, help, MetricType::Counter),
                &per_plugin(pick),
            )?;
        }
        let histograms: Vec<(String, Arc<CallHistogram>)> = self
            .calls
            .by_plugin
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, h)| (name.clone(), Arc::clone(h)))
            .collect();
        let mut metric = encoder.encode_descriptor(
            "switchyard_guest_call_duration_seconds",
            "Duration of WebSocket consumer calls into the guest, by plugin.",
            None,
            MetricType::Histogram,
        )?;
        for (plugin, histogram) in &histograms {
            let (sum, count, buckets) = histogram.snapshot();
            let labels = [("plugin", plugin.as_str())];
            metric
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        let events = self.host.events();
        counter(
            encoder,
            "switchyard_plugin_loads",
            "Plugin versions made live (first loads and replacements).",
            events.loads,
        )?;
        counter(
            encoder,
            "switchyard_plugin_load_errors",
            "Plugin files that failed to load.",
            events.load_errors,
        )?;
        counter(
            encoder,
            "switchyard_plugin_swaps",
            "Hot swaps: versions that replaced a live version.",
            events.swaps,
        )?;
        labelled(
            encoder,
            (
                "switchyard_plugin_migrations",
                "Connections moved to a new version by a migrate swap, by result.",
                MetricType::Counter,
            ),
            &[
                ([("result", "ok")], events.migrations),
                ([("result", "failed")], events.failed_migrations),
            ],
        )?;
        labelled(
            encoder,
            (
                "switchyard_hibernations",
                "Idle connections whose instance hibernated, woken, or failed to wake (closed with 1011).",
                MetricType::Counter,
            ),
            &[
                ([("event", "hibernated")], events.hibernations),
                ([("event", "woken")], events.wakes),
                ([("event", "wake_failed")], events.failed_wakes),
            ],
        )?;
        gauge(
            encoder,
            "switchyard_connections_hibernated",
            "Connections whose instance hibernates right now (hibernate-after-secs).",
            events.hibernated,
        )?;
        let (live, cap) = self.host.instance_slots();
        gauge(
            encoder,
            "switchyard_instances_live",
            "Guest instance slots in use (per-connection, shared and HTTP instances).",
            live,
        )?;
        gauge(
            encoder,
            "switchyard_instances_max",
            "The cap on live guest instances (guest.max-instances).",
            cap,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_histogram_buckets_and_sums() {
        let histogram = CallHistogram::default();
        histogram.observe(Duration::from_micros(2));
        histogram.observe(Duration::from_micros(5));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60));
        let (sum, count, buckets) = histogram.snapshot();
        assert_eq!(count, 4);
        assert!((sum - 60.003_007).abs() < 1e-9, "{sum}");
        assert_eq!(buckets[0], (0.000_005, 2));
        assert_eq!(buckets[9], (0.005, 1));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 4);
    }

    #[test]
    fn shards_from_many_threads_add_up() {
        let counter = ShardedCounter::default();
        let histogram = Arc::new(CallHistogram::default());
        std::thread::scope(|scope| {
            for _ in 0..20 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        counter.add(shard(), 2);
                        histogram.observe(Duration::from_micros(1));
                    }
                });
            }
        });
        assert_eq!(counter.get(), 4000);
        let (_, count, buckets) = histogram.snapshot();
        assert_eq!((count, buckets[0].1), (2000, 2000));
    }
}
