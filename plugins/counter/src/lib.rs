//! A stateful test plugin (not an example): it counts the text messages of
//! each connection and hands the count to the next version of itself when
//! it is hot-swapped with `on-replace = "migrate"`.
//!
//! Route: `test/counter/`. Every text frame `t` is answered with
//! `{"count": n, "version": "v1"|"v2", "echo": t}`, `n` counting from 1 per
//! connection. After the text `trap in snapshot`, `snapshot` panics; after
//! `slow snapshot <ms>`, it sleeps that long first (a migration that takes
//! a while). The text `join <group>` joins the group, and each
//! `chat.message` event `{"message": m}` is sent on as `{"message": m,
//! "version": ...}`.
//!
//! Written with the Rust SDK: the consumer value is one connection's state,
//! and its serde form (the count; the test switches are skipped) is the
//! migration state.

#![forbid(unsafe_code)]

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_sdk::{Frame, MigrationState, Socket, Value, WebsocketConsumer, json};

const VERSION: &str = if cfg!(feature = "v2") { "v2" } else { "v1" };

/// One connection: its message count, and the test switches of
/// `snapshot` (not migrated).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Counter {
    count: u64,
    /// Set by the text `trap in snapshot`.
    #[serde(skip)]
    trap_in_snapshot: bool,
    /// Set by the text `slow snapshot <ms>`.
    #[serde(skip)]
    snapshot_sleep_ms: u64,
}

impl WebsocketConsumer for Counter {
    fn receive(&mut self, socket: &Socket<'_>, frame: Frame) {
        let Frame::Text(text) = frame else {
            return;
        };
        if text == "trap in snapshot" {
            self.trap_in_snapshot = true;
        }
        if let Some(ms) = text.strip_prefix("slow snapshot ") {
            self.snapshot_sleep_ms = ms.parse().unwrap_or(0);
        }
        if let Some(group) = text.strip_prefix("join ") {
            let _ = socket.channel_layer().group_add(group);
        }
        self.count += 1;
        socket.send_json(&json!({"count": self.count, "version": VERSION, "echo": text}));
    }
}

/// A `chat.message` event (`message` is `null` when absent).
#[derive(Debug, Deserialize)]
struct ChatMessage {
    #[serde(default)]
    message: Value,
}

impl Counter {
    /// `chat.message` events are sent on, tagged with the version.
    fn chat_message(&mut self, socket: &Socket<'_>, ChatMessage { message }: ChatMessage) {
        socket.send_json(&json!({"message": message, "version": VERSION}));
    }
}

impl MigrationState for Counter {
    fn before_snapshot(&mut self) {
        assert!(!self.trap_in_snapshot, "counter asked to trap in snapshot");
        std::thread::sleep(Duration::from_millis(self.snapshot_sleep_ms));
    }
}

switchyard_sdk::export!(Counter, events[chat_message], migrate);
