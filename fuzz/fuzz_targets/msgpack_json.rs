//! The JSON <-> msgpack event mapping of the Redis layer (see
//! `runtime/layer/src/redis/wire.rs`), both ways:
//!
//! - Any JSON object is accepted unless it uses the routing key, and decodes
//!   back to the same JSON: `{"__bytes__": "<base64>"}` travels as bin and
//!   returns in that form, numbers keep their value and kind.
//! - Any bytes read as an entry decode to an event or a clean error, and a
//!   decoded event encodes and decodes again to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchyard_layer::fuzzing::{EntryCodec, EntryTarget};

const ROUTING_KEY: &str = "__asgi_channel__";

fuzz_target!(|data: &[u8]| {
    let codec = EntryCodec::new(0, &[], 60);
    json_round_trip(&codec, data);
    entry_round_trip(&codec, data);
});

fn json_round_trip(codec: &EntryCodec, data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let target = EntryTarget::One("specific.abc!def".to_owned());
    let sealed = codec.seal(text, &target);
    let object = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) if !object.contains_key(ROUTING_KEY) => object,
        _ => {
            assert!(sealed.is_err(), "encoded a non-event: {text:?}");
            return;
        }
    };
    let sealed = sealed.unwrap_or_else(|error| panic!("refused {text:?}: {error}"));
    let (decoded, decoded_target) = codec.open(&sealed).expect("opens what it sealed");
    assert_eq!(decoded_target, target);
    assert_eq!(Value::Object(decoded), Value::Object(object), "{text:?}");
}

fn entry_round_trip(codec: &EntryCodec, data: &[u8]) {
    let Ok((decoded, target)) = codec.open(data) else {
        return;
    };
    let text = Value::Object(decoded.clone()).to_string();
    let sealed = codec
        .seal(&text, &target)
        .unwrap_or_else(|error| panic!("cannot re-encode a decoded entry {text:?}: {error}"));
    let (again, again_target) = codec.open(&sealed).expect("opens what it sealed");
    assert_eq!(again_target, target);
    assert_eq!(again, decoded);
}
