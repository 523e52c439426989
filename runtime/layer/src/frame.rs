//! [`ReadyFrame`]: a WebSocket frame that travels with an event, so the
//! members' sockets get it from the host without a guest call (host-side
//! broadcast, "fastlane").
//!
//! A group send with a ready frame (`host.group-send-frame`) carries the
//! frame beside the event. Switchyard sockets that receive the event write
//! the frame to their client as it is, without calling their consumer; every
//! other receiver (an HTTP request's channel, a Django consumer through
//! channels_redis) gets the event as an ordinary Channels event.
//!
//! On the Redis wire (and in the JSON that the publish API and `Event::from_json`
//! read) the frame sits under the reserved key [`FRAME_KEY`] of the event
//! dict: a str for a text frame, bytes (msgpack bin; in JSON
//! `{"__bytes__": "<base64>"}`) for a binary one. A Django consumer on the same
//! group sees an ordinary event with that one extra key, which Channels'
//! dispatch ignores. Inside a Switchyard process the frame is kept out of the
//! event's JSON text and held once in [`Bytes`], shared by every member it
//! is delivered to.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::LayerError;

/// The event key that carries a ready frame on the wire: `"__frame__"`.
pub const FRAME_KEY: &str = "__frame__";

/// The JSON form of bytes inside an event: `{"__bytes__": "<base64>"}`.
const BYTES_KEY: &str = "__bytes__";

/// A WebSocket frame, encoded once and shared: cloning it copies a pointer,
/// not the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyFrame {
    /// The payload; valid UTF-8 when `text`.
    payload: Bytes,
    text: bool,
}

impl ReadyFrame {
    /// A text frame.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            payload: Bytes::from(text.into()),
            text: true,
        }
    }

    /// A binary frame.
    pub fn binary(bytes: impl Into<Bytes>) -> Self {
        Self {
            payload: bytes.into(),
            text: false,
        }
    }

    /// Whether this is a text frame (its payload is UTF-8).
    pub fn is_text(&self) -> bool {
        self.text
    }

    /// The payload, shared (a clone of the [`Bytes`] handle). A text frame's
    /// payload is valid UTF-8.
    pub fn payload(&self) -> Bytes {
        self.payload.clone()
    }

    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        self.payload.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }

    /// The frame as the value of [`FRAME_KEY`] in an event's JSON form: a
    /// string, or `{"__bytes__": "<base64>"}` for a binary frame.
    pub fn to_json(&self) -> Value {
        match self.as_text() {
            Some(text) => Value::String(text.to_owned()),
            None => {
                let mut bytes = Map::new();
                bytes.insert(
                    BYTES_KEY.to_owned(),
                    Value::String(STANDARD.encode(&self.payload)),
                );
                Value::Object(bytes)
            }
        }
    }

    /// The text of a text frame.
    pub fn as_text(&self) -> Option<&str> {
        // Checked again rather than trusted: `ReadyFrame::text` built it
        // from a `String`, so this cannot fail, and no `unsafe` is needed.
        self.text
            .then(|| std::str::from_utf8(&self.payload).ok())
            .flatten()
    }

    /// Reads the value of [`FRAME_KEY`] from an event's JSON form.
    ///
    /// # Errors
    /// [`LayerError::InvalidEvent`] naming the key when the value is neither
    /// a string nor `{"__bytes__": "<standard base64>"}`.
    pub(crate) fn from_json(value: Value) -> Result<Self, LayerError> {
        match value {
            Value::String(text) => Ok(Self::text(text)),
            Value::Object(map) if map.len() == 1 => match map.get(BYTES_KEY) {
                Some(Value::String(encoded)) => STANDARD
                    .decode(encoded)
                    .map(Self::binary)
                    .map_err(|error| {
                        LayerError::InvalidEvent(format!(
                            "\"{FRAME_KEY}\" holds {{\"{BYTES_KEY}\": ...}} that is not standard base64: {error}"
                        ))
                    }),
                _ => Err(bad_frame()),
            },
            _ => Err(bad_frame()),
        }
    }
}

fn bad_frame() -> LayerError {
    LayerError::InvalidEvent(format!(
        "\"{FRAME_KEY}\" is reserved for a ready WebSocket frame: a string (text frame) \
         or {{\"{BYTES_KEY}\": \"<base64>\"}} (binary frame)"
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_forms_round_trip() {
        let text = ReadyFrame::text("{\"message\": \"hi\"}");
        assert!(text.is_text());
        assert_eq!(text.to_json(), json!("{\"message\": \"hi\"}"));
        assert_eq!(ReadyFrame::from_json(text.to_json()).expect("text"), text);

        let binary = ReadyFrame::binary(vec![0u8, 255, 0]);
        assert!(!binary.is_text());
        assert_eq!(binary.as_text(), None);
        assert_eq!(binary.to_json(), json!({"__bytes__": "AP8A"}));
        assert_eq!(
            ReadyFrame::from_json(binary.to_json()).expect("bin"),
            binary
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        for bad in [
            json!(1),
            json!(null),
            json!(["x"]),
            json!({"__bytes__": 3}),
            json!({"__bytes__": "AP8A", "x": 1}),
            json!({"__bytes__": "not base64!"}),
        ] {
            match ReadyFrame::from_json(bad.clone()) {
                Err(LayerError::InvalidEvent(why)) => {
                    assert!(why.contains("__frame__"), "{bad}: {why}");
                }
                other => panic!("{bad}: expected InvalidEvent, got {other:?}"),
            }
        }
    }

    #[test]
    fn clones_share_the_payload() {
        let frame = ReadyFrame::text("x".repeat(100));
        let clone = frame.clone();
        assert_eq!(frame.payload().as_ptr(), clone.payload().as_ptr());
    }
}
