//! [`WebsocketCommunicator`]: one connection to a consumer, driven as the
//! server's socket loop drives it.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::Value;
use switchyard_host::{
    ConnectionStatus, Consumer, GuestError, InFrame, OutFrame, Outbound, OutboundOverflow,
    OutboundReceiver, OutboundSender,
};
use switchyard_layer::Inbox;
use switchyard_layer::queue::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// A data frame the consumer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
}

/// How the connection was closed from the server side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The close code: the plugin's, 1011 when the consumer failed (a
    /// trap or a deadline), 1008 when the client read too slowly.
    pub code: u16,
    /// The close reason.
    pub reason: String,
}

/// What went wrong talking to a consumer.
#[derive(Debug, thiserror::Error)]
pub enum CommunicatorError {
    /// Nothing arrived in time.
    #[error("nothing received within {0:?}")]
    Timeout(Duration),
    /// The connection was closed (by the consumer, or after it failed).
    #[error("the connection was closed with {} ({:?})", .0.code, .0.reason)]
    Closed(Closed),
    /// The connection is gone: closed earlier, or disconnected.
    #[error("the connection is gone")]
    Gone,
    /// A binary frame arrived where text was expected.
    #[error("expected a text frame, got {0:?}")]
    NotText(Message),
    /// A text frame arrived that is not JSON.
    #[error("the frame {text:?} is not JSON: {source}")]
    NotJson {
        /// The frame.
        text: String,
        /// serde_json's error.
        source: serde_json::Error,
    },
}

/// What the test asks of the connection's task.
enum Command {
    /// Deliver a client frame; answered once the consumer handled it.
    Frame(InFrame, oneshot::Sender<()>),
    /// The client closes with this code.
    Disconnect(u16),
}

/// One connection to a consumer loaded in a [`crate::TestHost`], as
/// Channels' `WebsocketCommunicator`: send frames to it, receive what it
/// sends, send it events through the layer. Channel-layer events reach the
/// consumer from a task of its own, whether or not the test is waiting.
#[derive(Debug)]
pub struct WebsocketCommunicator {
    commands: mpsc::UnboundedSender<Command>,
    outbound: OutboundReceiver,
    /// Output seen by `receive_nothing`, not yet taken.
    pending: VecDeque<Outbound>,
    task: Option<JoinHandle<()>>,
    subprotocol: Option<String>,
    channel_name: String,
    connection_id: u64,
    closed: Option<Closed>,
}

impl WebsocketCommunicator {
    pub(crate) fn start(
        consumer: Consumer,
        inbox: Inbox,
        outbound_tx: OutboundSender,
        outbound: OutboundReceiver,
        subprotocol: Option<String>,
    ) -> Self {
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let channel_name = inbox.name().to_owned();
        let connection_id = consumer.connection_id();
        let task = tokio::spawn(serve(consumer, inbox, commands_rx, outbound_tx));
        Self {
            commands,
            outbound,
            pending: VecDeque::new(),
            task: Some(task),
            subprotocol,
            channel_name,
            connection_id,
            closed: None,
        }
    }

    /// The subprotocol the consumer accepted with, if any.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// The connection's channel name on the layer.
    pub fn channel_name(&self) -> &str {
        &self.channel_name
    }

    /// The connection's id, as the plugin sees it.
    pub fn connection_id(&self) -> u64 {
        self.connection_id
    }

    /// Send a frame to the consumer; returns once its `receive` has run.
    pub async fn send_to(&mut self, message: Message) -> Result<(), CommunicatorError> {
        let frame = match message {
            Message::Text(text) => InFrame::Text(text),
            Message::Binary(bytes) => InFrame::Binary(bytes),
        };
        let (done, handled) = oneshot::channel();
        self.commands
            .send(Command::Frame(frame, done))
            .map_err(|_| CommunicatorError::Gone)?;
        handled.await.map_err(|_| CommunicatorError::Gone)
    }

    /// Send a text frame.
    pub async fn send_text(&mut self, text: &str) -> Result<(), CommunicatorError> {
        self.send_to(Message::Text(text.to_owned())).await
    }

    /// Send `content` as JSON in a text frame (Channels' `send_json_to`).
    pub async fn send_json_to(&mut self, content: &Value) -> Result<(), CommunicatorError> {
        self.send_to(Message::Text(content.to_string())).await
    }

    /// The next frame the consumer sent, waiting up to `timeout`. A close
    /// is [`CommunicatorError::Closed`].
    pub async fn receive_from(&mut self, timeout: Duration) -> Result<Message, CommunicatorError> {
        let next = match self.pending.pop_front() {
            Some(next) => Some(next),
            None => match tokio::time::timeout(timeout, self.outbound.recv()).await {
                Ok(next) => next,
                Err(_) => return Err(CommunicatorError::Timeout(timeout)),
            },
        };
        match next {
            Some(Outbound::Frame(OutFrame::Text(text))) => Ok(Message::Text(text)),
            Some(Outbound::Frame(OutFrame::Binary(bytes))) => Ok(Message::Binary(bytes.to_vec())),
            Some(Outbound::Ready(frame)) if frame.is_text() => Ok(Message::Text(
                String::from_utf8_lossy(&frame.payload()).into_owned(),
            )),
            Some(Outbound::Ready(frame)) => Ok(Message::Binary(frame.payload().to_vec())),
            Some(Outbound::Close { code, reason }) => {
                let closed = Closed { code, reason };
                self.closed = Some(closed.clone());
                Err(CommunicatorError::Closed(closed))
            }
            None => Err(self
                .closed
                .clone()
                .map_or(CommunicatorError::Gone, CommunicatorError::Closed)),
        }
    }

    /// The next frame, which must be text holding JSON (Channels'
    /// `receive_json_from`).
    pub async fn receive_json_from(
        &mut self,
        timeout: Duration,
    ) -> Result<Value, CommunicatorError> {
        match self.receive_from(timeout).await? {
            Message::Text(text) => serde_json::from_str(&text)
                .map_err(|source| CommunicatorError::NotJson { text, source }),
            binary @ Message::Binary(_) => Err(CommunicatorError::NotText(binary)),
        }
    }

    /// Whether the consumer sends nothing (no frame, no close) within
    /// `timeout` (Channels' `receive_nothing`). What did arrive is kept for
    /// the next `receive_from`.
    pub async fn receive_nothing(&mut self, timeout: Duration) -> bool {
        if !self.pending.is_empty() {
            return false;
        }
        match tokio::time::timeout(timeout, self.outbound.recv()).await {
            Err(_) => true,
            Ok(Some(output)) => {
                self.pending.push_back(output);
                false
            }
            // Everything was received and the connection is gone.
            Ok(None) => true,
        }
    }

    /// The close the consumer sent, waiting up to `timeout` and skipping
    /// frames sent before it.
    pub async fn receive_close(&mut self, timeout: Duration) -> Result<Closed, CommunicatorError> {
        loop {
            match self.receive_from(timeout).await {
                Ok(_) => {}
                Err(CommunicatorError::Closed(closed)) => return Ok(closed),
                Err(err) => return Err(err),
            }
        }
    }

    /// The client closes with `code`: the consumer's `disconnect` runs and
    /// the connection leaves its groups. Returns once that is done. (A
    /// communicator dropped without it disconnects with 1006, as a client
    /// that vanished.)
    pub async fn disconnect(mut self, code: u16) {
        let _ = self.commands.send(Command::Disconnect(code));
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// The connection's task: client frames and layer events to the consumer,
/// one at a time and in order, until either side closes.
async fn serve(
    mut consumer: Consumer,
    mut inbox: Inbox,
    mut commands: mpsc::UnboundedReceiver<Command>,
    outbound: OutboundSender,
) {
    let code = loop {
        let result = tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(Command::Frame(frame, done)) => {
                    let result = consumer.receive(frame).await;
                    let _ = done.send(());
                    result
                }
                Some(Command::Disconnect(code)) => break code,
                None => break 1006,
            },
            event = inbox.recv() => match event {
                // A ready frame (host-side broadcast) goes to the client
                // without a consumer call, as on the server.
                Some(event) => match event.frame() {
                    Some(frame) => match outbound.try_send(Outbound::Ready(frame.clone())) {
                        Ok(()) => Ok(()),
                        Err(TrySendError::Full(_)) => {
                            let reason = "outbound queue full (slow reader)".to_owned();
                            let _ = outbound.try_send(Outbound::Close { code: 1008, reason });
                            break 1008;
                        }
                        Err(TrySendError::Closed(_)) => break 1006,
                    },
                    None => consumer.event(&event).await,
                },
                None => Ok(()),
            },
        };
        if let Some(code) = ending(&consumer, result, &outbound) {
            break code;
        }
        tokio::task::yield_now().await;
    };
    consumer.disconnect(code).await;
}

/// The disconnect code if the last call ended the connection, as the
/// server decides it.
fn ending(
    consumer: &Consumer,
    result: Result<(), GuestError>,
    outbound: &OutboundSender,
) -> Option<u16> {
    if let Err(err) = result {
        let reason = format!("consumer error: {err}");
        let reason = reason.chars().take(60).collect();
        let _ = outbound.try_send(Outbound::Close { code: 1011, reason });
        return Some(1011);
    }
    match consumer.status() {
        ConnectionStatus::Open => None,
        ConnectionStatus::Closed => Some(1000),
        ConnectionStatus::Overflowed(OutboundOverflow::QueueFull) => {
            let reason = "outbound queue full (slow reader)".to_owned();
            let _ = outbound.try_send(Outbound::Close { code: 1008, reason });
            Some(1008)
        }
        ConnectionStatus::Overflowed(OutboundOverflow::Gone) => Some(1006),
    }
}
