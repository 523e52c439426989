//! A stateful test plugin (not an example): it counts the text messages of
//! each connection and hands the count to the next version of itself when
//! it is hot-swapped with `on-replace = "migrate"`.
//!
//! Route: `test/counter/`. Every text frame `t` is answered with
//! `{"count": n, "version": "v1"|"v2", "echo": t}`, `n` counting from 1 per
//! connection. After the text `trap in snapshot`, `snapshot` panics; after
//! `slow snapshot <ms>`, it sleeps that long first (a migration that takes
//! a while). After `trap in restore`, the next snapshot is marked so that
//! `restore` panics on it (a wake from hibernation that fails). The text
//! `announce <group>` joins the group like `join` and has `disconnect`
//! send `{"message": "left <id>"}` to it, so a test sees that `disconnect`
//! ran (after a wake from hibernation, say). The text
//! `join <group>` joins the group, and each
//! `chat.message` event `{"message": m}` is sent on as `{"message": m,
//! "version": ...}`. The migration state is one format byte (1) and the
//! count as 8 little-endian bytes, then (format 2) the `announce` group.

#[allow(unsafe_code)] // wit-bindgen's canonical-ABI glue needs `unsafe`.
mod bindings {
    wit_bindgen::generate!({ path: "../../wit", world: "migratable-consumer" });

    use super::Counter;
    export!(Counter);
}

use std::cell::RefCell;
use std::collections::BTreeMap;

use bindings::exports::switchyard::consumer::migration::Guest as Migration;
use bindings::exports::switchyard::consumer::websocket_consumer::Guest;
use bindings::switchyard::consumer::host::Connection;
use bindings::switchyard::consumer::types::{Frame, Scope};
use serde_json::json;

const VERSION: &str = if cfg!(feature = "v2") { "v2" } else { "v1" };
const STATE_FORMAT: u8 = 1;
/// The format of a state that ends with the `announce` group.
const STATE_FORMAT_ANNOUNCE: u8 = 2;
/// The format byte of a state that `restore` panics on.
const STATE_TRAP_IN_RESTORE: u8 = 0xee;

thread_local! {
    /// Messages counted so far, by connection id.
    static COUNTS: RefCell<BTreeMap<u64, u64>> = const { RefCell::new(BTreeMap::new()) };
    /// Set by the text `trap in snapshot`.
    static TRAP_IN_SNAPSHOT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The `announce` group, by connection id.
    static ANNOUNCE: RefCell<BTreeMap<u64, String>> = const { RefCell::new(BTreeMap::new()) };
    /// Set by the text `trap in restore`.
    static TRAP_IN_RESTORE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set by the text `slow snapshot <ms>`.
    static SNAPSHOT_SLEEP_MS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

struct Counter;

impl Guest for Counter {
    fn connect(conn: &Connection, _scope: Scope) {
        COUNTS.with_borrow_mut(|counts| counts.insert(conn.id(), 0));
        conn.accept(None);
    }

    fn receive(conn: &Connection, message: Frame) {
        let Frame::Text(text) = message else {
            return;
        };
        if text == "trap in snapshot" {
            TRAP_IN_SNAPSHOT.set(true);
        }
        if text == "trap in restore" {
            TRAP_IN_RESTORE.set(true);
        }
        if let Some(ms) = text.strip_prefix("slow snapshot ") {
            SNAPSHOT_SLEEP_MS.set(ms.parse().unwrap_or(0));
        }
        if let Some(group) = text.strip_prefix("join ") {
            let _ = conn.group_add(group);
        }
        if let Some(group) = text.strip_prefix("announce ") {
            let _ = conn.group_add(group);
            ANNOUNCE.with_borrow_mut(|groups| groups.insert(conn.id(), group.to_owned()));
        }
        let count = COUNTS.with_borrow_mut(|counts| {
            let count = counts.entry(conn.id()).or_insert(0);
            *count += 1;
            *count
        });
        let reply = json!({"count": count, "version": VERSION, "echo": text});
        conn.send(&Frame::Text(reply.to_string()));
    }

    fn event(conn: &Connection, event: String) {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&event) else {
            return;
        };
        if event["type"] == "chat.message" {
            let frame = json!({"message": event["message"], "version": VERSION});
            conn.send(&Frame::Text(frame.to_string()));
        }
    }

    fn disconnect(conn: &Connection, _code: u16) {
        COUNTS.with_borrow_mut(|counts| counts.remove(&conn.id()));
        if let Some(group) = ANNOUNCE.with_borrow_mut(|groups| groups.remove(&conn.id())) {
            let event = json!({"type": "chat.message", "message": format!("left {}", conn.id())});
            let _ = bindings::switchyard::consumer::host::group_send(&group, &event.to_string());
        }
    }
}

impl Migration for Counter {
    fn snapshot(conn: &Connection) -> Vec<u8> {
        assert!(!TRAP_IN_SNAPSHOT.get(), "counter asked to trap in snapshot");
        std::thread::sleep(std::time::Duration::from_millis(SNAPSHOT_SLEEP_MS.get()));
        let count = COUNTS.with_borrow(|counts| counts.get(&conn.id()).copied().unwrap_or(0));
        let announce = ANNOUNCE.with_borrow(|groups| groups.get(&conn.id()).cloned());
        let format = if TRAP_IN_RESTORE.get() {
            STATE_TRAP_IN_RESTORE
        } else if announce.is_some() {
            STATE_FORMAT_ANNOUNCE
        } else {
            STATE_FORMAT
        };
        let mut state = vec![format];
        state.extend_from_slice(&count.to_le_bytes());
        state.extend_from_slice(announce.unwrap_or_default().as_bytes());
        state
    }

    fn restore(conn: &Connection, state: Vec<u8>) -> Result<(), String> {
        assert_ne!(
            state.first(),
            Some(&STATE_TRAP_IN_RESTORE),
            "counter asked to trap in restore"
        );
        let (count, announce) = match state.split_first() {
            Some((&STATE_FORMAT, count)) => (count, &[][..]),
            Some((&STATE_FORMAT_ANNOUNCE, rest)) if rest.len() >= 8 => rest.split_at(8),
            _ => return Err("unknown state format".to_owned()),
        };
        let count: [u8; 8] = count
            .try_into()
            .map_err(|_| format!("state has {} count bytes, expected 8", count.len()))?;
        if !announce.is_empty() {
            let group = String::from_utf8(announce.to_vec()).map_err(|_| "group is not UTF-8")?;
            ANNOUNCE.with_borrow_mut(|groups| groups.insert(conn.id(), group));
        }
        COUNTS.with_borrow_mut(|counts| counts.insert(conn.id(), u64::from_le_bytes(count)));
        Ok(())
    }
}
