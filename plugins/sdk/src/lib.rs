//! Write Switchyard consumers in Rust the way Django Channels consumers are
//! written.
//!
//! ```no_run
//! #![forbid(unsafe_code)]
//! use serde::{Deserialize, Serialize};
//! use switchyard_sdk::{JsonWebsocketConsumer, MigrationState, Scope, Socket, Value, json};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Chat {
//!     group: String,
//! }
//!
//! #[derive(Deserialize)]
//! struct ChatMessage {
//!     message: Value,
//! }
//!
//! impl JsonWebsocketConsumer for Chat {
//!     fn connect(&mut self, socket: &Socket<'_>, scope: &Scope) {
//!         self.group = format!("chat_{}", scope.kwarg("room_name").unwrap_or("lobby"));
//!         match socket.channel_layer().group_add(&self.group) {
//!             Ok(()) => socket.accept(),
//!             Err(_) => socket.close(4400, Some("cannot join the room")),
//!         }
//!     }
//!
//!     fn receive_json(&mut self, socket: &Socket<'_>, content: Value) {
//!         let event = json!({"type": "chat.message", "message": content["message"]});
//!         let _ = socket.channel_layer().group_send(&self.group, &event);
//!     }
//! }
//!
//! impl Chat {
//!     /// Events of type `chat.message`.
//!     fn chat_message(&mut self, socket: &Socket<'_>, event: ChatMessage) {
//!         socket.send_json(&json!({"message": event.message}));
//!     }
//! }
//!
//! impl MigrationState for Chat {}
//!
//! switchyard_sdk::export!(Chat, events[chat_message], migrate);
//! ```
//!
//! - [`WebsocketConsumer`] and [`JsonWebsocketConsumer`]: the handlers, with
//!   defaults (connect accepts; bad JSON and binary frames are answered
//!   with an error frame).
//! - The consumer type is the state of one connection: the SDK keeps one
//!   value per connection, in both instance modes.
//! - [`Socket`]: accept, send (`send_json`), close, refuse, and
//!   [`Socket::channel_layer`] for `group_add`, `group_discard`,
//!   `group_send` and `send`.
//! - Channel-layer events go to the handler named after their `type`
//!   (`chat.message` → `chat_message`), listed in [`export!`]; the
//!   handler's event parameter is any `Deserialize` type ([`Value`] takes
//!   anything). Events without a handler go to
//!   [`WebsocketConsumer::no_handler`], which logs "No handler for message
//!   type ...".
//! - [`MigrationState`]: the state moves to the next version on hot swap
//!   (`on-replace = "migrate"`), serialized with serde and versioned.
//!
//! # Panics
//!
//! A panic in a handler is a WebAssembly trap: `wasm32` cannot unwind, so
//! the SDK cannot catch it. In `per-connection` mode (the default) the
//! host closes that connection with 1011 (HTTP 500 during `connect`); the
//! other connections are not affected. In `shared` mode the one instance is
//! poisoned: every connection of that plugin version is closed with 1011.
//! Prefer returning and logging over panicking, above all in shared mode.

#![warn(missing_docs)]

extern crate self as switchyard_sdk;

#[doc(hidden)]
pub mod bindings;
mod consumer;
#[doc(hidden)]
pub mod runtime;
mod scope;
mod socket;

pub use bindings::switchyard::consumer::host::Level;
pub use bindings::switchyard::consumer::types::Frame;
pub use consumer::{JsonWebsocketConsumer, MigrationState, WebsocketConsumer};
pub use scope::Scope;
pub use serde_json::{Value, json};
pub use socket::{ChannelLayer, LayerError, Socket};

/// Lines in the host's log, tagged with the plugin and the connection.
pub mod log {
    use crate::bindings::switchyard::consumer::host;
    pub use crate::bindings::switchyard::consumer::host::Level;

    /// Writes `message` at `level`.
    pub fn log(level: Level, message: &str) {
        host::log(level, message);
    }

    /// Writes `message` at debug level.
    pub fn debug(message: &str) {
        host::log(Level::Debug, message);
    }

    /// Writes `message` at info level.
    pub fn info(message: &str) {
        host::log(Level::Info, message);
    }

    /// Writes `message` at warn level.
    pub fn warn(message: &str) {
        host::log(Level::Warn, message);
    }

    /// Writes `message` at error level.
    pub fn error(message: &str) {
        host::log(Level::Error, message);
    }
}

#[doc(hidden)]
pub mod __private {
    pub use crate::runtime::{Dispatch, Events, Migrating, Plain, from_event};
    pub use wit_bindgen;
}

/// Registers a consumer as the component's exports. Once per plugin, at
/// the crate root.
///
/// ```text
/// switchyard_sdk::export!(Echo);                                 // no events, no migration
/// switchyard_sdk::export!(Chat, events[chat_message]);           // handlers by event type
/// switchyard_sdk::export!(Chat, events[chat_message], migrate);  // and MigrationState
/// switchyard_sdk::export!(Counter, migrate);
/// ```
///
/// Each name in `events[...]` is a method of the consumer,
/// `fn name(&mut self, socket: &Socket<'_>, event: E)` with `E` any
/// `Deserialize` type; it gets the events whose `type` with `.` replaced
/// by `_` is its name. Without `migrate`, a hot swap with
/// `on-replace = "migrate"` keeps the connections on the old version.
///
/// The smallest consumer, an echo:
///
/// ```no_run
/// #![forbid(unsafe_code)]
/// use switchyard_sdk::{Frame, Socket, WebsocketConsumer};
///
/// #[derive(Default)]
/// struct Echo;
///
/// impl WebsocketConsumer for Echo {
///     fn receive(&mut self, socket: &Socket<'_>, frame: Frame) {
///         socket.send(&frame);
///     }
/// }
///
/// switchyard_sdk::export!(Echo);
/// ```
#[macro_export]
macro_rules! export {
    ($consumer:ty) => {
        $crate::export!($consumer, events[]);
    };
    ($consumer:ty, migrate) => {
        $crate::export!($consumer, events[], migrate);
    };
    ($consumer:ty, events[$($handler:ident),* $(,)?]) => {
        $crate::__events!($consumer, [$($handler),*]);
        type __SwitchyardExports = $crate::__private::Plain<$consumer>;
        $crate::bindings::__export_bindings!(__SwitchyardExports with_types_in $crate::bindings);
    };
    ($consumer:ty, events[$($handler:ident),* $(,)?], migrate) => {
        $crate::__events!($consumer, [$($handler),*]);
        type __SwitchyardExports = $crate::__private::Migrating<$consumer>;
        $crate::bindings::__export_bindings!(__SwitchyardExports with_types_in $crate::bindings);
    };
}

/// The event dispatch of [`export!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __events {
    ($consumer:ty, [$($handler:ident),*]) => {
        impl $crate::__private::Events for $consumer {
            fn dispatch(
                &mut self,
                socket: &$crate::Socket<'_>,
                handler: &str,
                event: $crate::Value,
            ) -> $crate::__private::Dispatch {
                $(
                    if handler == stringify!($handler) {
                        return match $crate::__private::from_event(event) {
                            Ok(event) => {
                                self.$handler(socket, event);
                                $crate::__private::Dispatch::Handled
                            }
                            Err(err) => $crate::__private::Dispatch::BadEvent(err.to_string()),
                        };
                    }
                )*
                let _ = (socket, handler);
                $crate::__private::Dispatch::NoHandler(event)
            }
        }
    };
}
