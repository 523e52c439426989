//! {{name}}: a room consumer on the Switchyard Rust SDK.
//!
//! Route `ws/{{name}}/<str:room_name>/` (`{{name}}.toml`). A text frame
//! `{"message": m}` reaches every socket of the room, the sender's too, as
//! `{"message": m}`; bad JSON is answered with an error frame by the SDK.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use switchyard_sdk::{JsonWebsocketConsumer, MigrationState, Scope, Socket, Value, json};

/// The state of one connection.
#[derive(Default, Serialize, Deserialize)]
struct Room {
    group: String,
}

/// An event of type `room.message`.
#[derive(Deserialize)]
struct RoomMessage {
    message: Value,
}

impl JsonWebsocketConsumer for Room {
    fn connect(&mut self, socket: &Socket<'_>, scope: &Scope) {
        let room = scope.kwarg("room_name").unwrap_or("lobby");
        self.group = format!("{{name}}_{room}");
        match socket.channel_layer().group_add(&self.group) {
            Ok(()) => socket.accept(),
            // A room name that cannot be part of a group name: HTTP 403.
            Err(_) => socket.close(4400, Some("invalid room name")),
        }
    }

    fn receive_json(&mut self, socket: &Socket<'_>, content: Value) {
        let event = json!({"type": "room.message", "message": content["message"]});
        if let Err(err) = socket.channel_layer().group_send(&self.group, &event) {
            socket.send_json(&json!({"error": "group_send_failed", "detail": err.to_string()}));
        }
    }
}

impl Room {
    /// Events of type `room.message`, from the room's group.
    fn room_message(&mut self, socket: &Socket<'_>, event: RoomMessage) {
        socket.send_json(&json!({"message": event.message}));
    }
}

impl MigrationState for Room {}

switchyard_sdk::export!(Room, events[room_message], migrate);
