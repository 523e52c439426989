//! [`Event`]: a channel-layer message, validated once and shared by every receiver.
//!
//! Channels' events are dicts with a `"type"` key that picks the consumer's
//! handler. Here an event is that dict as JSON text: it crosses the plugin boundary
//! as JSON, so keeping the text as given means a plugin's event reaches the other
//! plugins byte for byte, with no re-serialization on the way.
//!
//! An event may also carry a [`ReadyFrame`] (host-side broadcast): Switchyard
//! sockets write that frame instead of calling their consumer. The frame is
//! kept apart from the JSON text, which stays the plain Channels event that
//! every other receiver gets; on the wire it travels under the reserved key
//! [`FRAME_KEY`] (see [`crate::frame`]).

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::LayerError;
use crate::frame::{FRAME_KEY, ReadyFrame};

/// The largest event accepted, in bytes of JSON text (1 MiB).
///
/// Channels sets no limit of its own, but a channel holds up to its capacity of
/// events, so the limit bounds a channel's memory at capacity × 1 MiB.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// A validated event: a JSON object of at most [`MAX_EVENT_BYTES`] with a string
/// `"type"` key.
///
/// The text sits in an `Arc<str>`, so cloning an event for each member of a group
/// copies two pointers, not the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    text: Arc<str>,
    event_type: Arc<str>,
    /// The frame Switchyard sockets write instead of calling their consumer.
    frame: Option<ReadyFrame>,
}

impl Event {
    /// Validates JSON text as an event and keeps the text exactly as given.
    ///
    /// # Errors
    /// [`LayerError::InvalidEvent`] when the text is larger than
    /// [`MAX_EVENT_BYTES`], is not JSON, is not a JSON object, or has no string
    /// `"type"`. With duplicate `"type"` keys the last one counts, as in Python's
    /// `json.loads`.
    ///
    /// A [`FRAME_KEY`] (`"__frame__"`) key is taken out as the event's ready
    /// frame (a string: text; `{"__bytes__": "<base64>"}`: binary), and the
    /// rest is serialized again as the event's text; an event without it keeps
    /// its text exactly as given.
    pub fn from_json(text: &str) -> Result<Self, LayerError> {
        check_size(text.len())?;
        // A full parse (rather than skimming for "type") guarantees that
        // `to_value` can parse the same text again.
        let value: Value = serde_json::from_str(text)
            .map_err(|error| LayerError::InvalidEvent(format!("not valid JSON: {error}")))?;
        let map = into_object(value)?;
        if map.contains_key(FRAME_KEY) {
            return Self::from_map(map);
        }
        Ok(Self {
            text: Arc::from(text),
            event_type: Arc::from(event_type_of(&map)?),
            frame: None,
        })
    }

    /// An event whose Switchyard members' sockets get `frame` written by the
    /// host (no consumer call), while every other receiver gets `text`, the
    /// event as [`Event::from_json`] reads it.
    ///
    /// # Errors
    /// As [`Event::from_json`]; also when `text` has a [`FRAME_KEY`] of its
    /// own, or the text and the frame together are larger than
    /// [`MAX_EVENT_BYTES`].
    pub fn with_frame(text: &str, frame: ReadyFrame) -> Result<Self, LayerError> {
        let mut event = Self::from_json(text)?;
        if event.frame.is_some() {
            return Err(LayerError::InvalidEvent(format!(
                "the event has a \"{FRAME_KEY}\" key of its own; the frame is given separately"
            )));
        }
        check_size(event.text.len() + frame.len())?;
        event.frame = Some(frame);
        Ok(event)
    }

    /// Validates a JSON value as an event and serializes it compactly.
    ///
    /// # Errors
    /// As [`Event::from_json`].
    pub fn from_value(value: Value) -> Result<Self, LayerError> {
        Self::from_map(into_object(value)?)
    }

    fn from_map(mut map: Map<String, Value>) -> Result<Self, LayerError> {
        let event_type = Arc::from(event_type_of(&map)?);
        let frame = map
            .remove(FRAME_KEY)
            .map(ReadyFrame::from_json)
            .transpose()?;
        let text = serde_json::to_string(&map)
            .map_err(|error| LayerError::InvalidEvent(format!("cannot serialize: {error}")))?;
        check_size(text.len() + frame.as_ref().map_or(0, ReadyFrame::len))?;
        Ok(Self {
            text: Arc::from(text),
            event_type,
            frame,
        })
    }

    /// The event as JSON text, without its ready frame: what a consumer
    /// receives.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The event's `"type"`, e.g. `chat.message`.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The frame that Switchyard sockets write instead of calling their
    /// consumer, when the sender gave one.
    pub fn frame(&self) -> Option<&ReadyFrame> {
        self.frame.as_ref()
    }

    /// The event parsed into a JSON value, without its ready frame.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.text)
            .expect("an Event's text was parsed as JSON when the Event was built")
    }
}

fn check_size(len: usize) -> Result<(), LayerError> {
    if len > MAX_EVENT_BYTES {
        return Err(LayerError::InvalidEvent(format!(
            "{len} bytes of JSON, more than the limit of {MAX_EVENT_BYTES}"
        )));
    }
    Ok(())
}

fn into_object(value: Value) -> Result<Map<String, Value>, LayerError> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(LayerError::InvalidEvent(format!(
            "must be a JSON object, got {}",
            kind(&other)
        ))),
    }
}

fn event_type_of(map: &Map<String, Value>) -> Result<&str, LayerError> {
    match map.get("type") {
        Some(Value::String(event_type)) => Ok(event_type),
        Some(other) => Err(LayerError::InvalidEvent(format!(
            "\"type\" must be a string, got {}",
            kind(other)
        ))),
        None => Err(LayerError::InvalidEvent(
            "no \"type\" key (events are JSON objects like {\"type\": \"chat.message\", ...})"
                .to_owned(),
        )),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn invalid(text: &str) -> String {
        match Event::from_json(text) {
            Err(LayerError::InvalidEvent(reason)) => reason,
            other => panic!("expected InvalidEvent for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn from_json_keeps_the_text_as_given() {
        let text = r#"{ "type" : "chat.message",  "text": "hi", "n": 1.50 }"#;
        let event = Event::from_json(text).expect("valid event");
        assert_eq!(event.as_str(), text);
        assert_eq!(event.event_type(), "chat.message");
        assert_eq!(
            event.to_value(),
            json!({"type": "chat.message", "text": "hi", "n": 1.5})
        );
    }

    #[test]
    fn escaped_type_is_decoded() {
        let event = Event::from_json(r#"{"type":"chat\u002emessage"}"#).expect("valid event");
        assert_eq!(event.event_type(), "chat.message");
    }

    #[test]
    fn duplicate_type_keys_last_wins() {
        let event = Event::from_json(r#"{"type":1,"type":"b"}"#).expect("valid event");
        assert_eq!(event.event_type(), "b");
    }

    #[test]
    fn rejects_what_is_not_an_event() {
        assert!(invalid("").starts_with("not valid JSON"));
        assert!(invalid("{\"type\": \"x\"").starts_with("not valid JSON"));
        assert_eq!(invalid("[1]"), "must be a JSON object, got an array");
        assert_eq!(invalid("\"chat\""), "must be a JSON object, got a string");
        assert_eq!(invalid("null"), "must be a JSON object, got null");
        assert!(invalid("{\"text\": \"hi\"}").starts_with("no \"type\" key"));
        assert_eq!(
            invalid("{\"type\": 3}"),
            "\"type\" must be a string, got a number"
        );
        assert_eq!(
            invalid("{\"type\": null}"),
            "\"type\" must be a string, got null"
        );
    }

    #[test]
    fn size_limit() {
        let padding = MAX_EVENT_BYTES - r#"{"type":"t","p":""}"#.len();
        let at_limit = format!(r#"{{"type":"t","p":"{}"}}"#, "x".repeat(padding));
        assert_eq!(at_limit.len(), MAX_EVENT_BYTES);
        assert!(Event::from_json(&at_limit).is_ok());

        let over = format!(r#"{{"type":"t","p":"{}"}}"#, "x".repeat(padding + 1));
        assert_eq!(
            invalid(&over),
            format!(
                "{} bytes of JSON, more than the limit of {MAX_EVENT_BYTES}",
                MAX_EVENT_BYTES + 1
            )
        );
        let value = json!({"type": "t", "p": "x".repeat(MAX_EVENT_BYTES)});
        assert!(matches!(
            Event::from_value(value),
            Err(LayerError::InvalidEvent(_))
        ));
    }

    #[test]
    fn from_value_round_trips() {
        let value = json!({"type": "group.join", "room": "lobby", "users": [1, 2]});
        let event = Event::from_value(value.clone()).expect("valid event");
        assert_eq!(event.event_type(), "group.join");
        assert_eq!(event.to_value(), value);
        assert_eq!(
            Event::from_value(json!(["type"])),
            Err(LayerError::InvalidEvent(
                "must be a JSON object, got an array".to_owned()
            ))
        );
    }

    #[test]
    fn a_frame_key_becomes_the_ready_frame() {
        let event = Event::from_json(
            r#"{"type":"chat.message","message":"hi","__frame__":"{\"message\":\"hi\"}"}"#,
        )
        .expect("valid event");
        // Serialized again without the key (in the order serde_json keeps).
        assert_eq!(
            event.to_value(),
            json!({"type": "chat.message", "message": "hi"})
        );
        assert!(!event.as_str().contains("__frame__"));
        assert_eq!(
            event.frame(),
            Some(&ReadyFrame::text(r#"{"message":"hi"}"#))
        );
        let binary = Event::from_value(json!({"type": "b", "__frame__": {"__bytes__": "AQI="}}))
            .expect("valid event");
        assert_eq!(binary.as_str(), r#"{"type":"b"}"#);
        assert_eq!(binary.frame(), Some(&ReadyFrame::binary(vec![1u8, 2])));
        assert!(
            Event::from_json(r#"{"type":"a"}"#)
                .expect("plain")
                .frame()
                .is_none()
        );
        assert!(invalid(r#"{"type":"a","__frame__":1}"#).contains("__frame__"));
    }

    #[test]
    fn with_frame_keeps_the_frame_apart() {
        let event =
            Event::with_frame(r#"{"type":"chat.message"}"#, ReadyFrame::text("hi")).expect("valid");
        assert_eq!(event.as_str(), r#"{"type":"chat.message"}"#);
        assert_eq!(event.frame(), Some(&ReadyFrame::text("hi")));
        let twice = Event::with_frame(r#"{"type":"a","__frame__":"x"}"#, ReadyFrame::text("y"));
        assert!(matches!(twice, Err(LayerError::InvalidEvent(why)) if why.contains("__frame__")));
        let big = ReadyFrame::binary(vec![0u8; MAX_EVENT_BYTES]);
        assert!(matches!(
            Event::with_frame(r#"{"type":"a"}"#, big),
            Err(LayerError::InvalidEvent(_))
        ));
    }

    #[test]
    fn clones_share_the_text() {
        let event = Event::from_json(r#"{"type":"a"}"#).expect("valid event");
        let clone = event.clone();
        assert!(std::ptr::eq(event.as_str(), clone.as_str()));
    }
}
