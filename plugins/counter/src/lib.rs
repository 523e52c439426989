//! A stateful test plugin (not an example): it counts the text messages of
//! each connection and hands the count to the next version of itself when
//! it is hot-swapped with `on-replace = "migrate"`.
//!
//! Route: `test/counter/`. Every text frame `t` is answered with
//! `{"count": n, "version": "v1"|"v2", "echo": t}`, `n` counting from 1 per
//! connection. After the text `trap in snapshot`, `snapshot` panics; after
//! `slow snapshot <ms>`, it sleeps that long first (a migration that takes
//! a while). After `trap in restore`, the state it hands over makes
//! `restore` panic (a wake from hibernation that fails). The text
//! `announce <group>` joins the group like `join` and has `disconnect`
//! send `{"message": "left <id>"}` to it, so a test sees that `disconnect`
//! ran (after a wake from hibernation, say). The text `join <group>` joins
//! the group, and each
//! `chat.message` event `{"message": m}` is sent on as `{"message": m,
//! "version": ...}`.
//!
//! Written with the Rust SDK: the consumer value is one connection's state,
//! and its serde form (the count, the `announce` group and the restore
//! switch; the snapshot switches are skipped) is the migration state.

#![forbid(unsafe_code)]

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
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
    /// The group `disconnect` tells that it ran (`announce <group>`).
    #[serde(default)]
    announce: Option<String>,
    /// Set by the text `trap in restore`: it travels in the state, and
    /// reading it back panics.
    #[serde(default, deserialize_with = "panic_if_set")]
    trap_in_restore: bool,
}

/// Reads the `trap_in_restore` switch, panicking (a trap in `restore`) when
/// it is set.
fn panic_if_set<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    let set = bool::deserialize(deserializer)?;
    assert!(!set, "counter asked to trap in restore");
    Ok(set)
}

impl WebsocketConsumer for Counter {
    fn receive(&mut self, socket: &Socket<'_>, frame: Frame) {
        let Frame::Text(text) = frame else {
            return;
        };
        if text == "trap in snapshot" {
            self.trap_in_snapshot = true;
        }
        if text == "trap in restore" {
            self.trap_in_restore = true;
        }
        if let Some(group) = text.strip_prefix("announce ") {
            let _ = socket.channel_layer().group_add(group);
            self.announce = Some(group.to_owned());
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

    fn disconnect(&mut self, socket: &Socket<'_>, _code: u16) {
        if let Some(group) = &self.announce {
            let left = format!("left {}", socket.id());
            let event = json!({"type": "chat.message", "message": left});
            let _ = socket.channel_layer().group_send(group, &event);
        }
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
