//! The host side of the WIT `connection` resource
//! (`switchyard:consumer/host.connection`): the state behind one handle, as
//! a plugin sees its WebSocket connection, and what it asks the server to
//! do with the socket.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use switchyard_layer::{ReadyFrame, queue};

/// A frame the plugin sends to the client. Payloads are moved, not copied,
/// into the server's WebSocket message types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutFrame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Bytes),
}

/// What the plugin asks the server to write to the socket, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// A data frame.
    Frame(OutFrame),
    /// A ready frame of a channel-layer event (host-side broadcast), queued
    /// by the server without a guest call; its payload is shared by every
    /// member it goes to.
    Ready(ReadyFrame),
    /// Close with this code and reason; nothing is written after it.
    Close {
        /// The close code.
        code: u16,
        /// The close reason (at most 123 bytes).
        reason: String,
    },
}

/// The sending end of a socket's outbound queue: the connection's entry in
/// the instance's table holds one, the server another (for host-side
/// broadcast).
pub type OutboundSender = queue::Sender<Outbound>;

/// The receiving end of a socket's outbound queue: the socket's writer.
pub type OutboundReceiver = queue::Receiver<Outbound>;

/// A socket's outbound queue, holding at most `capacity` messages. It holds
/// no memory while empty, so an idle socket does not pay for its capacity.
pub fn outbound_queue(capacity: usize) -> (OutboundSender, OutboundReceiver) {
    queue::channel(capacity)
}

/// The answer to the handshake, decided during `connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// The plugin has not decided yet (only seen while `connect` runs).
    Pending,
    /// Accepted, with the chosen subprotocol if any.
    Accepted {
        /// The subprotocol the plugin chose from the client's offer.
        subprotocol: Option<String>,
    },
    /// Rejected before accept: the server answers HTTP 403, as Channels does.
    Rejected {
        /// The code the plugin closed with.
        code: u16,
        /// The reason it gave.
        reason: Option<String>,
    },
    /// Refused before accept with an HTTP status of the plugin's choice
    /// (`connection.refuse`), e.g. 503 while a backend is down.
    Refused {
        /// The HTTP status to answer, one of [`REFUSAL_STATUSES`].
        status: u16,
        /// Seconds for the `Retry-After` header of a 429 or 503 answer.
        retry_after_secs: Option<u32>,
    },
}

/// The HTTP statuses a plugin may refuse a handshake with.
pub const REFUSAL_STATUSES: [u16; 7] = [400, 401, 403, 404, 429, 500, 503];

/// Why an outbound frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundOverflow {
    /// The client does not read fast enough: the bounded queue is full.
    QueueFull,
    /// The socket is gone.
    Gone,
}

/// The host side of the WIT `connection` resource: the state behind one
/// handle in a store's table. The name matches the WIT; the socket itself
/// is the server's, reached through the outbound queue.
///
/// `pub` only because `bindgen!`'s `with` re-exports it from the generated
/// module; the crate root does not export it.
#[allow(
    unreachable_pub,
    reason = "bindgen!'s `with` names this type from the generated bindings module"
)]
#[derive(Debug)]
pub struct Connection {
    /// The connection's id, unique in this process.
    pub(crate) id: u64,
    pub(crate) channel_name: Arc<str>,
    pub(crate) handshake: Handshake,
    /// Set once the plugin (or the host on its behalf) closed the socket.
    pub(crate) closed: bool,
    /// Set when the outbound queue overflowed; the server closes the socket.
    pub(crate) overflow: Option<OutboundOverflow>,
    /// Groups this connection joined, so the host can leave them on close
    /// (Channels leaves that to the consumer and leaks memberships).
    pub(crate) groups: BTreeSet<String>,
    outbound: OutboundSender,
}

impl Connection {
    pub(crate) fn new(id: u64, channel_name: Arc<str>, outbound: OutboundSender) -> Self {
        Self {
            id,
            channel_name,
            handshake: Handshake::Pending,
            closed: false,
            overflow: None,
            groups: BTreeSet::new(),
            outbound,
        }
    }

    /// The same connection, for the instance of a newer version that takes
    /// it over (hot swap with `migrate`): same id, channel, handshake,
    /// groups and socket.
    pub(crate) fn successor(&self) -> Self {
        Self {
            id: self.id,
            channel_name: Arc::clone(&self.channel_name),
            handshake: self.handshake.clone(),
            closed: self.closed,
            overflow: self.overflow,
            groups: self.groups.clone(),
            outbound: self.outbound.clone(),
        }
    }

    /// Queue a message for the socket without waiting: a guest call never
    /// blocks on a slow client. A full queue marks the connection for closing
    /// instead (counted by the server), so one slow reader never stalls a
    /// `group_send` for the others.
    pub(crate) fn push(&mut self, message: Outbound) {
        if self.overflow.is_some() {
            return;
        }
        match self.outbound.try_send(message) {
            Ok(()) => {}
            Err(queue::TrySendError::Full(_)) => {
                self.overflow = Some(OutboundOverflow::QueueFull);
            }
            Err(queue::TrySendError::Closed(_)) => {
                self.overflow = Some(OutboundOverflow::Gone);
            }
        }
    }
}
