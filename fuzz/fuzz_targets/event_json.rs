//! `Event::from_json` agrees with serde_json: it accepts exactly the JSON
//! objects (within the size limit) with a string `type`, keeps the text,
//! and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_layer::Event;
use switchyard_layer::event::MAX_EVENT_BYTES;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let event = Event::from_json(text);
    let parsed: Option<serde_json::Value> = serde_json::from_str(text).ok();
    let expected_type = parsed
        .as_ref()
        .and_then(|v| v.as_object())
        .and_then(|map| map.get("type"))
        .and_then(|t| t.as_str());
    match (&event, expected_type) {
        (Ok(event), Some(event_type)) => {
            assert_eq!(event.as_str(), text);
            assert_eq!(event.event_type(), event_type);
        }
        (Err(_), None) => {}
        (Ok(event), None) => panic!("accepted a non-event: {:?}", event.as_str()),
        (Err(err), Some(_)) => {
            // Only the size limit may refuse a well-formed event.
            assert!(text.len() > MAX_EVENT_BYTES, "refused a valid event: {err}");
        }
    }
});
