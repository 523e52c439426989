//! One task owns each socket: it reads client frames and channel-layer
//! events and hands them to the consumer one at a time, in order. What the
//! consumer sends goes to a bounded outbound queue; after each call the
//! task writes the queue to the socket as far as the socket takes it
//! without waiting, and the rest as the socket drains, while it goes on
//! reading. So a guest call never waits on a slow client: its queue fills
//! instead, and it is closed as a slow reader.
//!
//! Close codes the host uses:
//! - 1001: the server is shutting down (after the events already queued
//!   for the socket went through the consumer and the frames queued for
//!   the client were written), or the client answered no ping for
//!   `websocket.ping-timeout-secs` (reason `ping timeout`; the consumer's
//!   `disconnect` gets 1006 then, as under Daphne).
//! - 1007: a text frame was not valid UTF-8.
//! - 1008: the client reads too slowly (its outbound queue filled up;
//!   reason `outbound queue full (slow reader)`), or sends more messages
//!   than `rate-limit.messages-per-second` allows (reason
//!   `message rate limit exceeded`).
//! - 1002: the client broke the protocol (an unmasked frame, a bad opcode,
//!   a control frame too long, ...).
//! - 1009: a message or frame exceeded the size limit.
//! - 1011: the plugin trapped or ran past its deadline.
//! - 1012: the plugin was replaced under the `restart` policy: reconnect.
//! - 1013: the server's budget for unfinished messages
//!   (`websocket.max-unfinished-bytes`) is spent and this client holds more
//!   than a little of one: try again later.
//!
//! After the server (or the plugin) sent a close frame, the task reads on for
//! up to two seconds: frames until the client's close, or, after a protocol
//! error (1002, 1007, 1009, 1013), raw bytes until the client hangs up or
//! goes quiet for 200 ms. So
//! the close frame reaches a client that is still sending instead of being
//! lost to the TCP reset that closing a socket with unread bytes causes.
//!
//! Pings follow Daphne: a client silent for `ping-interval-secs` is pinged;
//! one still silent `ping-timeout-secs` after the ping is closed. Any frame
//! from the client (a pong included) counts as an answer.
//!
//! A consumer whose plugin sets `hibernate-after-secs` hibernates after
//! that long without a call, and is woken before the next one
//! (`hibernation`); pings, pongs and closes go on meanwhile.

mod hibernation;

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker, ready};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::task::AtomicWaker;
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use switchyard_host::{
    ConnectionStatus, Consumer, GuestError, InFrame, OutFrame, Outbound, OutboundOverflow,
    OutboundReceiver, OutboundSender, PluginHost, Retired,
};
use switchyard_layer::{Event, Inbox};
use tokio::time::Instant;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, Utf8Bytes};

use crate::config::Config;
use crate::counters::Counters;
use crate::fastlane;
use crate::metrics::ConnectionMetrics;
use crate::ratelimit::{MessageLimit, Ticket};
use crate::upgrade::{self, Meter, OverBudget, Socket};

/// Bytes read from the socket at a time. tungstenite's default (128 KiB)
/// is allocated per socket; 4 KiB keeps idle sockets cheap and still reads
/// chat-sized messages in one go.
pub(crate) const READ_BUFFER: usize = 4 << 10;
/// Bytes buffered before a write is forced; frames are flushed as soon as
/// the outbound queue is empty anyway.
pub(crate) const WRITE_BUFFER: usize = 8 << 10;
/// How long a closing socket gets to flush its last frames.
const WRITER_GRACE: Duration = Duration::from_secs(2);
/// Most channel-layer events a connection takes out of its inbox and holds
/// while it migrates to a new plugin version. Migrating stops the consumer
/// for a snapshot, an instantiation and a restore, and with hundreds of
/// connections moving at once on a busy machine that can outlast what the
/// inbox holds (the layer's capacity, 100 by default), so events would be
/// refused as `ChannelFull` and group sends would skip the member. Holding
/// them here keeps the inbox empty meanwhile; the bound keeps a stuck
/// migration (every step is bounded by the call timeout anyway) from
/// holding unbounded memory: past it, events wait in the inbox again,
/// under the layer's capacity rules.
const MIGRATION_BACKLOG: usize = 4096;

const GOING_AWAY: u16 = 1001;
const PROTOCOL_ERROR: u16 = 1002;
const ABNORMAL: u16 = 1006;
const INVALID_PAYLOAD: u16 = 1007;
const POLICY_VIOLATION: u16 = 1008;
const MESSAGE_TOO_BIG: u16 = 1009;
const INTERNAL_ERROR: u16 = 1011;
const SERVICE_RESTART: u16 = 1012;
const TRY_AGAIN_LATER: u16 = 1013;

/// An accepted handshake waiting for its socket: everything the task that
/// will own the socket needs.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// This connection's metric handles; `None` with metrics off.
    pub(crate) metrics: Option<ConnectionMetrics>,
    pub(crate) consumer: Consumer,
    pub(crate) inbox: Inbox,
    /// The host's own handle on the outbound queue (the guest's is in the
    /// store); kept so the queue stays open until this task ends.
    pub(crate) outbound_tx: OutboundSender,
    pub(crate) outbound_rx: OutboundReceiver,
    pub(crate) shutdown: CancellationToken,
    /// The route pattern that matched, for log lines.
    pub(crate) route: String,
    /// The connection's admission; its places are given back on drop.
    pub(crate) ticket: Ticket,
    pub(crate) limits: Limits,
    pub(crate) counters: Arc<Counters>,
    /// For moving the consumer to a new plugin version (hot swap).
    pub(crate) host: Arc<PluginHost>,
}

/// Per-connection limits from the config.
#[derive(Debug)]
pub(crate) struct Limits {
    ping_interval: Duration,
    ping_timeout: Duration,
    messages: Option<MessageLimit>,
}

impl Limits {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            ping_interval: Duration::from_secs(config.websocket.ping_interval_secs),
            ping_timeout: Duration::from_secs(config.websocket.ping_timeout_secs),
            messages: MessageLimit::new(config),
        }
    }
}

/// When to ping, and when a ping went unanswered. Hearing from the client
/// only records the time: the timer is not moved on every frame, it wakes
/// at the old deadline and is set again from there ([`Keepalive::due`]).
#[derive(Debug)]
struct Keepalive {
    interval: Duration,
    timeout: Duration,
    last_heard: Instant,
    ping_sent: Option<Instant>,
}

impl Keepalive {
    fn new(interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            last_heard: Instant::now(),
            ping_sent: None,
        }
    }

    fn heard(&mut self) {
        self.last_heard = Instant::now();
        self.ping_sent = None;
    }

    /// When [`Keepalive::due`] should next be called.
    fn deadline(&self) -> Instant {
        match self.ping_sent {
            Some(sent) => sent + self.timeout,
            None => self.last_heard + self.interval,
        }
    }

    /// At the deadline: `Ok(true)` to send a ping, `Ok(false)` for nothing
    /// to do, `Err(())` when the ping went unanswered.
    fn due(&mut self, now: Instant) -> Result<bool, ()> {
        match self.ping_sent {
            Some(sent) if now >= sent + self.timeout => Err(()),
            Some(_) => Ok(false),
            None if now >= self.last_heard + self.interval => {
                self.ping_sent = Some(now);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// How the read loop ended: the code the consumer's `disconnect` gets and
/// the close frame the host sends, if any (the plugin's own close is
/// already queued).
struct Ending {
    disconnect_code: u16,
    close: Option<(u16, &'static str)>,
    /// What to read after the close frame went out.
    linger: Linger,
    /// Write the frames already queued before the host's close frame
    /// (shutdown); otherwise they are dropped for it.
    flush: bool,
}

/// What the task reads after it sent a close frame, for at most
/// [`WRITER_GRACE`], before it drops the socket. Closing a socket with
/// unread bytes makes the kernel send a TCP reset, and a client still
/// sending would lose the close frame to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Linger {
    /// The client closed, or is gone: nothing to wait for.
    No,
    /// Read frames until the client's close frame (the closing handshake).
    ForClose,
    /// The client broke the protocol, so frames cannot be read: read and
    /// drop bytes until it closes the connection.
    Drain,
}

impl Ending {
    fn client(code: u16) -> Self {
        Self {
            disconnect_code: code,
            close: None,
            linger: Linger::No,
            flush: false,
        }
    }

    fn host(code: u16, reason: &'static str) -> Self {
        Self {
            disconnect_code: code,
            close: Some((code, reason)),
            linger: Linger::ForClose,
            flush: false,
        }
    }

    /// The server shuts down: 1001, after the frames already queued.
    fn shutdown() -> Self {
        Self {
            flush: true,
            ..Self::host(GOING_AWAY, "server shutting down")
        }
    }

    /// The plugin closed the connection: its close frame is queued.
    fn plugin() -> Self {
        Self {
            linger: Linger::ForClose,
            ..Self::client(1000)
        }
    }

    /// Closed for what the client sent: drain the rest after the close.
    fn protocol(code: u16, reason: &'static str) -> Self {
        Self {
            linger: Linger::Drain,
            ..Self::host(code, reason)
        }
    }

    /// The client stopped answering: closed like a dropped socket for the
    /// consumer (1006), with a 1001 frame in case it is still reading.
    fn ping_timeout() -> Self {
        Self {
            disconnect_code: ABNORMAL,
            close: Some((GOING_AWAY, "ping timeout")),
            linger: Linger::No,
            flush: false,
        }
    }
}

impl Accepted {
    /// Wait for the upgraded socket, then serve it until either side closes
    /// or the server shuts down.
    ///
    /// # Memory
    /// This future is the task every open socket holds, for the socket's
    /// whole life, awake or hibernated. What only one phase needs stays out
    /// of it: the upgrade comes boxed (it is done before the first frame)
    /// and the close phase is boxed when it starts ([`close`]), so the
    /// task holds the read loop and the state it borrows, not three
    /// phases side by side. And `self` is taken apart before the future
    /// is made, so the future holds its fields once, not `self` beside
    /// them.
    pub(crate) fn run(self, socket: Pin<Box<Upgrading>>) -> impl Future<Output = ()> + Send {
        let Self {
            metrics,
            mut consumer,
            mut inbox,
            outbound_tx,
            outbound_rx,
            shutdown,
            route,
            ticket,
            limits,
            counters,
            host,
        } = self;
        async move {
            let (socket, meter) = match socket.await {
                Ok(upgraded) => upgraded,
                Err(err) => {
                    // The consumer accepted a socket that never opened.
                    // Boxed, as the close phase is: a rare path.
                    tracing::info!("WebSocket upgrade failed: {err}");
                    Box::pin(consumer.disconnect(ABNORMAL)).await;
                    return;
                }
            };
            let connection = consumer.connection_id();
            tracing::debug!(plugin = consumer.plugin(), connection, "WSCONNECT");
            if let Some(metrics) = &metrics {
                metrics.opened();
            }
            let (sink, mut stream) = socket.split();
            let mut out = Outgoing::new(sink, outbound_rx, metrics);
            // This connection's own token: polling it touches no lock shared
            // with the other connections.
            let shutdown = shutdown.child_token();

            let ending = read_loop(
                Io {
                    consumer: &mut consumer,
                    inbox: &mut inbox,
                    outbound: &outbound_tx,
                    stream: &mut stream,
                    out: &mut out,
                    shutdown: &shutdown,
                    host: &host,
                    meter: &meter,
                },
                &route,
                &limits,
                &counters,
            )
            .await;
            tracing::debug!(
                plugin = consumer.plugin(),
                connection,
                code = ending.disconnect_code,
                "WSDISCONNECT"
            );
            if let Some(metrics) = &out.metrics {
                metrics.closed(ending.disconnect_code);
            }
            // The guest's sender lives in the connection's entry in the
            // instance's table: once `disconnect` has returned, that entry is
            // gone (with the store, or deleted from a shared one), ours is
            // dropped here, the queue ends and `finish` stops.
            drop(outbound_tx);
            Box::pin(close(ending, &host, consumer, out, stream)).await;
            drop(ticket);
        }
    }
}

/// The socket's upgrade: the connection hyper hands over, wrapped as a
/// WebSocket.
pub(crate) type Upgrading = dyn Future<Output = Result<(Socket, Arc<Meter>), hyper::Error>> + Send;

/// After the read loop: write the last frames and the close frame while
/// the consumer gets its `disconnect`, then linger for the client's close.
async fn close(
    ending: Ending,
    host: &PluginHost,
    mut consumer: Consumer,
    mut out: Outgoing,
    stream: SplitStream<Socket>,
) {
    let connection = consumer.connection_id();
    let finish = async {
        if tokio::time::timeout(WRITER_GRACE, out.finish(ending.close, ending.flush))
            .await
            .is_err()
        {
            tracing::debug!(connection, "socket not flushed within {WRITER_GRACE:?}");
        }
    };
    // Channels calls `disconnect` on every consumer: a hibernated one
    // is woken for it (one that cannot be only leaves its groups).
    let disconnect = async {
        let _ = hibernation::awake(host, &mut consumer).await;
        consumer.disconnect(ending.disconnect_code).await;
    };
    tokio::join!(finish, disconnect);
    if ending.linger != Linger::No
        && let Ok(mut socket) = stream.reunite(out.sink)
    {
        let _ = tokio::time::timeout(WRITER_GRACE, async {
            if ending.linger == Linger::Drain {
                upgrade::drain(&mut socket).await;
                return;
            }
            while let Some(Ok(frame)) = socket.next().await {
                if frame.is_close() {
                    break;
                }
            }
        })
        .await;
    }
}

/// What the read loop drives.
struct Io<'a> {
    consumer: &'a mut Consumer,
    inbox: &'a mut Inbox,
    /// The outbound queue, for the ready frames of host-side broadcast.
    outbound: &'a OutboundSender,
    stream: &'a mut SplitStream<Socket>,
    out: &'a mut Outgoing,
    shutdown: &'a CancellationToken,
    host: &'a PluginHost,
    /// Told when a whole message arrived.
    meter: &'a Meter,
}

/// Feed the consumer until the connection ends.
///
/// # Fairness
/// The `select!` is not biased: when several sources are ready, tokio
/// starts polling at a random branch, so each gets its turn. A client that
/// streams frames as fast as it can would otherwise always win the read
/// branch (its next frame is always buffered) and starve its own
/// channel-layer events (its channel fills and group sends skip it) and
/// a `restart` or `migrate` swap. And every turn of the loop spends one
/// unit of tokio's cooperative budget, so such a client cannot hold its
/// worker thread either: the task yields when its budget is spent.
///
/// # Cancel safety
/// Every branch of the `select!` is cancel safe: [`ReadGate::poll_next`],
/// [`next_event`] and [`Outgoing::write`] lose nothing when another branch
/// wins, and the shutdown, keepalive and retirement futures live across
/// iterations. While the consumer handles one input nothing else is read,
/// so events wait in the inbox, in order; while it migrates, events are
/// taken out of the inbox and held ([`hold_events_while`]), so a long
/// migration does not fill the channel, and the held ones come first.
async fn read_loop(io: Io<'_>, route: &str, limits: &Limits, counters: &Counters) -> Ending {
    let Io {
        consumer,
        inbox,
        outbound,
        stream,
        out,
        shutdown,
        host,
        meter,
    } = io;
    let shutdown = shutdown.cancelled();
    tokio::pin!(shutdown);
    let mut keepalive = Keepalive::new(limits.ping_interval, limits.ping_timeout);
    // Also wakes the consumer's hibernation when that comes first.
    let mut idle = hibernation::Idle::new(consumer);
    let keepalive_timer: Sleep =
        tokio::time::sleep_until(idle.timer_deadline(keepalive.deadline()));
    tokio::pin!(keepalive_timer);
    let mut retirement = consumer.retirement();
    let mut read_gate = ReadGate::new();
    // Events taken out of the inbox during a migration, delivered first.
    let mut backlog: VecDeque<Event> = VecDeque::new();
    loop {
        // One unit of the task's cooperative budget per input: a client
        // whose next frame is always buffered would otherwise keep this
        // task running without ever yielding its worker thread to the
        // other sockets on it.
        tokio::task::consume_budget().await;
        let result = tokio::select! {
            () = &mut shutdown => {
                let queued = Queued { inbox, backlog: &mut backlog, outbound };
                return deliver_queued(host, consumer, queued, out, route, counters).await;
            }
            written = out.write(), if out.busy() => match written {
                Ok(()) => continue,
                Err(err) => {
                    tracing::debug!(connection = consumer.connection_id(), "socket write error: {err}");
                    return Ending::client(ABNORMAL);
                }
            },
            message = poll_fn(|cx| read_gate.poll_next(stream, cx)) => {
                keepalive.heard();
                let data_len = match &message {
                    Some(Ok(Message::Text(text))) => Some(text.len()),
                    Some(Ok(Message::Binary(bytes))) => Some(bytes.len()),
                    _ => None,
                };
                let is_data = data_len.is_some();
                if let Some(len) = data_len {
                    meter.message_done();
                    if let Some(metrics) = &out.metrics {
                        metrics.received(len);
                    }
                }
                if is_data && limits.messages.as_ref().is_some_and(|limit| !limit.allow()) {
                    let total = Counters::bump(&counters.message_rate);
                    tracing::warn!(
                        plugin = consumer.plugin(),
                        route,
                        connection = consumer.connection_id(),
                        total,
                        "client exceeds rate-limit.messages-per-second; closing with 1008"
                    );
                    return Ending::host(POLICY_VIOLATION, "message rate limit exceeded");
                }
                match message {
                    Some(Ok(Message::Text(text))) => match hibernation::awake(host, consumer).await {
                        Ok(()) => consumer.receive(InFrame::Text(text.as_str().to_owned())).await,
                        Err(err) => Err(err),
                    },
                    Some(Ok(Message::Binary(bytes))) => match hibernation::awake(host, consumer).await {
                        Ok(()) => consumer.receive(InFrame::Binary(bytes.to_vec())).await,
                        Err(err) => Err(err),
                    },
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(frame))) => {
                        return Ending::client(frame.map_or(1005, |f| f.code.into()));
                    }
                    Some(Err(err)) => return read_error(&err),
                    None => return Ending::client(ABNORMAL),
                }
            },
            event = next_event(&mut backlog, inbox) => match event {
                // A ready frame (host-side broadcast) goes to the socket
                // without a guest call.
                Some(event) => match fastlane::queue_frame(&event, outbound) {
                    None => match hibernation::awake(host, consumer).await {
                        Ok(()) => consumer.event(&event).await,
                        Err(err) => Err(err),
                    },
                    Some(Ok(())) => Ok(()),
                    Some(Err(overflow)) => {
                        return overflow_ending(consumer, overflow, route, counters);
                    }
                },
                None => return Ending::host(INTERNAL_ERROR, "channel layer closed"),
            },
            retired = &mut retirement => {
                let next = match retired {
                    Retired::Restart => {
                        return Ending::host(SERVICE_RESTART, "plugin replaced: please reconnect");
                    }
                    Retired::Migrate(next) => next,
                    Retired::Broken => {
                        tracing::warn!(
                            plugin = consumer.plugin(),
                            route,
                            connection = consumer.connection_id(),
                            "the shared instance failed in another connection's call; closing with 1011"
                        );
                        return Ending::host(INTERNAL_ERROR, "consumer error");
                    }
                };
                // Boxed: a rare path whose future would otherwise grow every
                // connection's task by the size of an instantiation. Events
                // arriving meanwhile are held, not left to fill the inbox.
                let migrating = Box::pin(host.migrate(consumer, &next));
                let migrated = hold_events_while(migrating, inbox, &mut backlog).await;
                // The successor has a retirement of its own; the old
                // instance's (still there if the move failed) is spent.
                retirement = consumer.retirement();
                idle.replaced(consumer);
                match migrated {
                    Ok(()) => Ok(()),
                    Err(err) if err.old_version_usable() => {
                        tracing::warn!(
                            plugin = consumer.plugin(),
                            route,
                            connection = consumer.connection_id(),
                            "cannot migrate ({err}); the connection stays on the old version"
                        );
                        Ok(())
                    }
                    Err(err) => {
                        tracing::error!(
                            plugin = consumer.plugin(),
                            route,
                            connection = consumer.connection_id(),
                            "migration failed ({err}); closing with 1011"
                        );
                        return Ending::host(INTERNAL_ERROR, "consumer error");
                    }
                }
            },
            () = &mut keepalive_timer => {
                let now = Instant::now();
                if let Err(err) = idle.due(now, host, consumer).await
                    && let Some(ending) = call_ending(consumer, Err(err), route, counters)
                {
                    return ending;
                }
                match keepalive.due(now) {
                    // A ping already waiting to be written is enough.
                    Ok(true) => out.ping = true,
                    Ok(false) => {}
                    Err(()) => {
                        let total = Counters::bump(&counters.ping_timeouts);
                        tracing::info!(
                            plugin = consumer.plugin(),
                            route,
                            connection = consumer.connection_id(),
                            total,
                            "client answered no ping within {:?}; closing",
                            limits.ping_timeout
                        );
                        return Ending::ping_timeout();
                    }
                }
                keepalive_timer.as_mut().reset(idle.timer_deadline(keepalive.deadline()));
                continue;
            }
        };
        idle.called(consumer, keepalive_timer.as_mut(), keepalive.deadline());
        // What is left unwritten goes through the `write` branch.
        if let Some(ending) = after_call(consumer, result, route, counters, out) {
            return ending;
        }
    }
}

/// How the connection ends after a call into the consumer, if it does: the
/// call failed (1011), the plugin closed it, its outbound queue overflowed
/// (1008) or is gone, or the socket failed while this task wrote what the
/// call queued, as far as the socket takes it now.
fn after_call(
    consumer: &Consumer,
    result: Result<(), GuestError>,
    route: &str,
    counters: &Counters,
    out: &mut Outgoing,
) -> Option<Ending> {
    let ending = call_ending(consumer, result, route, counters);
    if ending.is_some() {
        return ending;
    }
    if let Some(Err(err)) = out.write().now_or_never() {
        tracing::debug!(
            connection = consumer.connection_id(),
            "socket write error: {err}"
        );
        return Some(Ending::client(ABNORMAL));
    }
    None
}

/// [`after_call`]'s verdict on the call itself.
fn call_ending(
    consumer: &Consumer,
    result: Result<(), GuestError>,
    route: &str,
    counters: &Counters,
) -> Option<Ending> {
    if let Err(err) = result {
        let total = Counters::bump(&counters.plugin_failures);
        tracing::error!(
            plugin = consumer.plugin(),
            route,
            connection = consumer.connection_id(),
            total,
            "{err}; closing with 1011"
        );
        return Some(Ending::host(INTERNAL_ERROR, "consumer error"));
    }
    match consumer.status() {
        ConnectionStatus::Open => None,
        ConnectionStatus::Closed => Some(Ending::plugin()),
        ConnectionStatus::Overflowed(overflow) => {
            Some(overflow_ending(consumer, overflow, route, counters))
        }
    }
}

/// How the connection ends when its outbound queue overflowed: 1008 for a
/// client that reads too slowly (counted), or the socket is gone.
fn overflow_ending(
    consumer: &Consumer,
    overflow: OutboundOverflow,
    route: &str,
    counters: &Counters,
) -> Ending {
    match overflow {
        OutboundOverflow::QueueFull => {
            let total = Counters::bump(&counters.slow_readers);
            tracing::warn!(
                plugin = consumer.plugin(),
                route,
                connection = consumer.connection_id(),
                total,
                "client reads too slowly: outbound queue full; closing with 1008"
            );
            Ending::host(POLICY_VIOLATION, "outbound queue full (slow reader)")
        }
        OutboundOverflow::Gone => Ending::client(ABNORMAL),
    }
}

/// The server shuts down: hand the consumer the events already queued for
/// it (those held during a migration, then the inbox's), so nothing the
/// layer accepted for this socket is lost, then end with 1001 once the
/// frames queued for the client are written ([`Ending::shutdown`]). At most
/// what the inbox holds is taken from it, so events still arriving cannot
/// keep the socket open; the server's shutdown deadline bounds the rest.
async fn deliver_queued(
    host: &PluginHost,
    consumer: &mut Consumer,
    Queued {
        inbox,
        backlog,
        outbound,
    }: Queued<'_>,
    out: &mut Outgoing,
    route: &str,
    counters: &Counters,
) -> Ending {
    let mut from_inbox = inbox.capacity();
    loop {
        let event = match backlog.pop_front() {
            Some(event) => event,
            None if from_inbox > 0 => match inbox.try_recv() {
                Some(event) => {
                    from_inbox -= 1;
                    event
                }
                None => break,
            },
            None => break,
        };
        let result = match fastlane::queue_frame(&event, outbound) {
            None => match hibernation::awake(host, consumer).await {
                Ok(()) => consumer.event(&event).await,
                Err(err) => Err(err),
            },
            Some(Ok(())) => Ok(()),
            Some(Err(overflow)) => return overflow_ending(consumer, overflow, route, counters),
        };
        // What fits in the socket goes now, so the outbound queue does not
        // fill while the events go through.
        if let Some(ending) = after_call(consumer, result, route, counters, out) {
            return ending;
        }
    }
    Ending::shutdown()
}

/// The events already queued for a socket, and its outbound queue.
struct Queued<'a> {
    inbox: &'a mut Inbox,
    backlog: &'a mut VecDeque<Event>,
    outbound: &'a OutboundSender,
}

/// The next channel-layer event: those held during a migration first, in
/// order, then the inbox's.
///
/// # Cancel safety
/// Cancel safe: a held event is taken in the same poll that returns it,
/// and `Inbox::recv` is cancel safe.
async fn next_event(backlog: &mut VecDeque<Event>, inbox: &mut Inbox) -> Option<Event> {
    if let Some(event) = backlog.pop_front() {
        return Some(event);
    }
    inbox.recv().await
}

/// Drive `work` (a migration) to its end while taking the events that
/// arrive meanwhile out of the inbox into `backlog`, up to
/// [`MIGRATION_BACKLOG`], so the channel does not fill and refuse them.
///
/// # Cancel safety
/// `work` is polled by reference and runs to its end; `Inbox::recv` is
/// cancel safe, so losing the race to `work` loses no event.
async fn hold_events_while<T>(
    work: impl Future<Output = T>,
    inbox: &mut Inbox,
    backlog: &mut VecDeque<Event>,
) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            done = &mut work => return done,
            Some(event) = inbox.recv(), if backlog.len() < MIGRATION_BACKLOG => {
                backlog.push_back(event);
            }
        }
    }
}

/// Map a read error to how the connection ends.
fn read_error(err: &tungstenite::Error) -> Ending {
    use tungstenite::error::ProtocolError;
    match err {
        tungstenite::Error::Capacity(_) => Ending::protocol(MESSAGE_TOO_BIG, "message too big"),
        tungstenite::Error::Utf8(_) => {
            Ending::protocol(INVALID_PAYLOAD, "invalid UTF-8 in text frame")
        }
        // The client went away without a close: nobody to tell.
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            Ending::client(ABNORMAL)
        }
        tungstenite::Error::Protocol(why) => {
            tracing::debug!("protocol error from the client: {why}");
            Ending::protocol(PROTOCOL_ERROR, "protocol error")
        }
        tungstenite::Error::Io(io)
            if io.get_ref().is_some_and(|inner| inner.is::<OverBudget>()) =>
        {
            Ending::protocol(TRY_AGAIN_LATER, "server busy: unfinished message too large")
        }
        _ => {
            tracing::debug!("socket read error: {err}");
            Ending::client(ABNORMAL)
        }
    }
}

/// Polls the socket's reading half only when its waker fired since the last
/// poll, or when it last gave a message (more may be buffered). A task woken
/// for a channel-layer event then skips tungstenite's read path, which
/// zeroes its read buffer on every attempt, and the lock it shares with the
/// sending half.
struct ReadGate {
    flag: Arc<GateFlag>,
    /// Given to the reading half; wakes the task through `flag`.
    waker: Waker,
}

struct GateFlag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for GateFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl ReadGate {
    fn new() -> Self {
        let flag = Arc::new(GateFlag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(Arc::clone(&flag));
        Self { flag, waker }
    }

    fn poll_next(
        &mut self,
        stream: &mut SplitStream<Socket>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, tungstenite::Error>>> {
        self.flag.task.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let polled = stream.poll_next_unpin(&mut Context::from_waker(&self.waker));
        if polled.is_ready() {
            self.flag.woken.store(true, Ordering::Release);
        }
        polled
    }
}

/// The socket's sending half and the consumer's outbound queue.
struct Outgoing {
    sink: SplitSink<Socket, Message>,
    queue: OutboundReceiver,
    /// Taken from the queue, waiting for room in the socket.
    held: Option<Message>,
    /// Frames given to the socket and not yet flushed.
    unflushed: bool,
    /// A keepalive ping to send.
    ping: bool,
    /// A close frame went out: nothing more is written.
    closed: bool,
    /// The connection's metric handles; `None` with metrics off.
    metrics: Option<ConnectionMetrics>,
}

impl Outgoing {
    fn new(
        sink: SplitSink<Socket, Message>,
        queue: OutboundReceiver,
        metrics: Option<ConnectionMetrics>,
    ) -> Self {
        Self {
            sink,
            queue,
            held: None,
            unflushed: false,
            ping: false,
            closed: false,
            metrics,
        }
    }

    /// Whether anything waits to be written.
    fn busy(&self) -> bool {
        self.unflushed
            || !self.closed && (self.held.is_some() || self.ping || !self.queue.is_empty())
    }

    /// Write what is queued, and flush.
    ///
    /// # Cancel safety
    /// Cancel safe: a frame the socket has no room for yet is kept in
    /// `held`, and the queue is only read when there is room.
    async fn write(&mut self) -> Result<(), tungstenite::Error> {
        poll_fn(|cx| self.poll_write(cx)).await
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tungstenite::Error>> {
        while !self.closed {
            let Some(message) = self.held.take().or_else(|| self.next_message()) else {
                break;
            };
            if self.sink.poll_ready_unpin(cx)?.is_pending() {
                self.held = Some(message);
                return Poll::Pending;
            }
            self.closed = matches!(message, Message::Close(_));
            if let Some(metrics) = &self.metrics {
                count_sent(metrics, &message);
            }
            self.sink.start_send_unpin(message)?;
            self.unflushed = true;
        }
        if self.unflushed {
            ready!(self.sink.poll_flush_unpin(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// The next message to write: a due ping first, then the queue.
    fn next_message(&mut self) -> Option<Message> {
        if std::mem::take(&mut self.ping) {
            return Some(Message::Ping(Default::default()));
        }
        self.queue.try_recv().map(message)
    }

    /// After the read loop: with the host's close, send it at once (what
    /// is still queued is dropped, unless `flush`: then what is queued now
    /// goes first); otherwise write everything the plugin queued, its own
    /// close included, until the queue ends.
    async fn finish(&mut self, host_close: Option<(u16, &'static str)>, flush: bool) {
        if let Some((code, reason)) = host_close {
            if flush && !self.closed {
                // Writes what is queued now and flushes; a close the plugin
                // queued goes out instead of ours.
                let _ = self.write().await;
            }
            if !self.closed {
                self.held = None;
                self.closed = true;
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: Utf8Bytes::from_static(reason),
                };
                let _ = self.sink.send(Message::Close(Some(frame))).await;
            }
            return;
        }
        loop {
            if self.write().await.is_err() || self.closed {
                break;
            }
            match self.queue.recv().await {
                Some(next) => self.held = Some(message(next)),
                None => break,
            }
        }
        // Also sends the reply to a client's close, which the socket
        // queued itself.
        let _ = self.sink.flush().await;
    }
}

/// Count a data message about to go to the socket.
fn count_sent(metrics: &ConnectionMetrics, message: &Message) {
    match message {
        Message::Text(text) => metrics.sent(text.len()),
        Message::Binary(bytes) => metrics.sent(bytes.len()),
        _ => {}
    }
}

/// The WebSocket message for what the plugin queued.
fn message(outbound: Outbound) -> Message {
    match outbound {
        Outbound::Frame(OutFrame::Text(text)) => Message::Text(text.into()),
        Outbound::Frame(OutFrame::Binary(bytes)) => Message::Binary(bytes),
        Outbound::Ready(frame) => fastlane::message(&frame),
        Outbound::Close { code, reason } => Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2,544 bytes with rustc 1.95 (the layout is the same in debug and
    /// release builds); the bound leaves room for a field or two.
    const TASK_BOUND: usize = 3 << 10;

    /// The size of the future `run` returns, without making one.
    fn task_size<F, Fut>(_: F) -> usize
    where
        F: FnOnce(Accepted, Pin<Box<Upgrading>>) -> Fut,
    {
        size_of::<Fut>()
    }

    /// Every open socket holds this future for its whole life (hibernated
    /// too): the rare phases and the per-call state stay out of it (see
    /// `Accepted::run`). It was 10 KiB before they did.
    #[test]
    fn a_socket_task_stays_small() {
        let size = task_size(Accepted::run);
        assert!(size <= TASK_BOUND, "a socket's task is {size} bytes");
    }
}
