//! Decoding an entry read from Redis (see `runtime/layer/src/redis/wire.rs`):
//!
//! - Any bytes, opened with and without a random prefix and with and without
//!   Fernet keys, give an event or a clean error: no panic, overflow or hang.
//! - Structured: an event sealed by a codec (any prefix length, keys and
//!   expiry) opens with that codec to the same event and target, opens with
//!   rotated keys, and does not open with a wrong key.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Number, Value};
use switchyard_layer::fuzzing::{BYTES_KEY, EntryCodec, EntryTarget};

const ROUTING_KEY: &str = "__asgi_channel__";

fuzz_target!(|data: &[u8]| {
    open_anything(data);
    let _ = seal_then_open(&mut Unstructured::new(data));
});

fn open_anything(data: &[u8]) {
    let keys = ["secret".to_owned(), "old".to_owned()];
    for codec in [
        EntryCodec::new(0, &[], 60),
        EntryCodec::new(12, &[], 60),
        EntryCodec::new(0, &keys, 60),
        EntryCodec::new(12, &keys, 60),
    ] {
        let _ = codec.open(data);
    }
}

fn seal_then_open(u: &mut Unstructured<'_>) -> Result<()> {
    let prefix = usize::from(u.int_in_range(0u8..=32)?);
    let expiry: u64 = u.arbitrary()?;
    let key_count = u.int_in_range(0u8..=3)?;
    let keys = (0..key_count)
        .map(|_| u.arbitrary::<String>())
        .collect::<Result<Vec<_>>>()?;
    let target = match u.int_in_range(0u8..=2)? {
        0 => EntryTarget::None,
        1 => EntryTarget::One(u.arbitrary()?),
        _ => EntryTarget::Many(u.arbitrary()?),
    };
    let (text, expected) = event(u)?;

    let codec = EntryCodec::new(prefix, &keys, expiry);
    let sealed = codec.seal(&text, &target).expect("an event without the routing key");
    let (decoded, decoded_target) = codec.open(&sealed).expect("opens what it sealed");
    assert_eq!(Value::Object(decoded), Value::Object(expected), "{text}");
    assert_eq!(decoded_target, target);

    if let Some(first) = keys.first() {
        // A reader that also knows a newer key still reads it (key rotation).
        let rotated = EntryCodec::new(prefix, &["newer".to_owned(), first.clone()], expiry);
        assert!(rotated.open(&sealed).is_ok());
        if !keys.iter().any(|key| key == "wrong") {
            let wrong = EntryCodec::new(prefix, &["wrong".to_owned()], expiry);
            assert!(wrong.open(&sealed).is_err());
        }
    }
    // A tampered entry opens or fails cleanly.
    let mut tampered = sealed;
    if !tampered.is_empty() {
        let at = u.choose_index(tampered.len())?;
        tampered[at] ^= u.int_in_range(1u8..=255)?;
        let _ = codec.open(&tampered);
    }
    Ok(())
}

/// An event's JSON text and the object it should decode to.
fn event(u: &mut Unstructured<'_>) -> Result<(String, Map<String, Value>)> {
    let mut object = Map::new();
    object.insert("type".to_owned(), Value::String(u.arbitrary()?));
    for _ in 0..u.int_in_range(0u8..=8)? {
        let key: String = u.arbitrary()?;
        if key != ROUTING_KEY {
            object.insert(key, value(u, 4)?);
        }
    }
    let text = Value::Object(object.clone()).to_string();
    Ok((text, object))
}

/// A JSON value of at most `depth` levels, including `{"__bytes__": ...}`.
fn value(u: &mut Unstructured<'_>, depth: u8) -> Result<Value> {
    let kinds = if depth == 0 { 7 } else { 9 };
    Ok(match u.choose_index(kinds)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => Value::from(u.arbitrary::<u64>()?),
        // NaN and infinities have no JSON form.
        4 => Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        5 => Value::String(u.arbitrary()?),
        6 => {
            let bytes: Vec<u8> = u.arbitrary()?;
            let mut map = Map::new();
            map.insert(BYTES_KEY.to_owned(), Value::String(STANDARD.encode(bytes)));
            Value::Object(map)
        }
        7 => Value::Array(
            (0..u.int_in_range(0u8..=4)?)
                .map(|_| value(u, depth - 1))
                .collect::<Result<_>>()?,
        ),
        _ => {
            let mut map = Map::new();
            for _ in 0..u.int_in_range(0u8..=4)? {
                map.insert(u.arbitrary()?, value(u, depth - 1)?);
            }
            Value::Object(map)
        }
    })
}
