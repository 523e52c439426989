//! The channels_redis message encoding: a random prefix, then (optionally) a
//! Fernet token, around a msgpack map (`docs/channels_redis_wire.md` 1.4).
//!
//! Events cross the plugin boundary as JSON and Redis as msgpack. The mapping:
//!
//! | JSON                                   | msgpack (Python)                         |
//! |----------------------------------------|------------------------------------------|
//! | `null`, `true`/`false`                 | nil, bool                                |
//! | integer (i64 or u64 range)             | int, smallest encoding                   |
//! | number with a fraction or exponent     | float64 (`0xcb`); float32 is read too    |
//! | string                                 | str                                      |
//! | `{"__bytes__": "<standard base64>"}`   | bin (Python `bytes`)                     |
//! | array                                  | array (Python list; tuples arrive so)    |
//! | object                                 | map with str keys                        |
//!
//! A JSON object whose only key is `"__bytes__"` with a string value that is
//! valid standard base64 (with `=` padding) is a byte string; any other object
//! is a map. Msgpack bin values always come back in that form. A NaN or infinite
//! float (which Python can send, JSON cannot hold) becomes `null`.
//!
//! Reading is strict where Python is strict: map keys must be str (Python's
//! `strict_map_key` also allows bin keys; those, ext types and bad UTF-8 make the
//! entry malformed, and the receiver logs and skips it). Reading is also as
//! strict as JSON parsing: an entry nested deeper than 127 levels
//! (`MAX_NESTING`) is malformed, since its JSON text could not be parsed
//! again (by a plugin, or to send it on).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use rmpv::Value as Mp;
use serde_json::{Map, Number, Value};

use sha2::{Digest as _, Sha256};

use crate::frame::{FRAME_KEY, ReadyFrame};

/// The key channels_redis uses to route a message inside a process inbox.
pub(crate) const ASGI_CHANNEL: &str = "__asgi_channel__";
/// The JSON form of a msgpack bin value: `{"__bytes__": "<base64>"}`.
pub const BYTES_KEY: &str = "__bytes__";
/// The deepest nesting of arrays and maps in an event, the event's own map
/// included: serde_json refuses to parse 128 levels (its recursion limit), so
/// a deeper entry would decode to JSON text that no Rust plugin can read and
/// that could not be encoded again.
pub(crate) const MAX_NESTING: usize = 127;
/// The decoder's recursion budget: rmpv spends two units per array or map
/// level and three on a string leaf, so this admits every entry of
/// [`MAX_NESTING`] levels (checked exactly by `to_json`) and refuses one much
/// deeper before its recursion can exhaust a stack.
const MAX_DECODE_DEPTH: usize = 2 * MAX_NESTING + 8;

/// Why a stored entry could not be decoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("entry of {len} bytes is shorter than the random prefix of {prefix} bytes")]
    ShortPrefix { len: usize, prefix: usize },
    #[error("cannot decrypt (wrong key, tampered, or older than the expiry + 10 s)")]
    Decrypt,
    #[error("bad msgpack: {0}")]
    Msgpack(String),
    #[error("not channels_redis data: {0}")]
    Shape(String),
}

/// Where a decoded message goes, from its `__asgi_channel__`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// No `__asgi_channel__` (Python loses such messages; so do we, with a log).
    None,
    /// `send` to one `!` channel (a str).
    One(String),
    /// `group_send` to this process's members (a list of str).
    Many(Vec<String>),
}

/// The Fernet keys of `symmetric_encryption_keys`: encrypt with the first, try
/// each in order to decrypt (Python's `MultiFernet`).
struct Keys(Vec<fernet::Fernet>);

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} keys, redacted)", self.0.len())
    }
}

/// channels_redis's Fernet key for one configured key string:
/// `base64url(sha256(key))` (`docs/channels_redis_wire.md` 1.4.3).
fn derive_key(key: &str) -> Option<fernet::Fernet> {
    fernet::Fernet::new(&URL_SAFE.encode(Sha256::digest(key.as_bytes())))
}

/// Serializes and deserializes stored entries for one layer configuration.
#[derive(Debug)]
pub(crate) struct Codec {
    random_prefix_length: usize,
    keys: Option<Keys>,
    /// Fernet TTL when reading: the core layer's `expiry + 10`.
    ttl_secs: u64,
}

impl Codec {
    pub(crate) fn new(random_prefix_length: usize, keys: &[String], expiry_secs: u64) -> Self {
        let keys = (!keys.is_empty()).then(|| {
            // A SHA-256 digest is always 32 bytes, which is all `Fernet::new` checks.
            Keys(keys.iter().filter_map(|key| derive_key(key)).collect())
        });
        Self {
            random_prefix_length,
            keys,
            ttl_secs: expiry_secs.saturating_add(10),
        }
    }

    /// The msgpack map entries of an event's JSON text (everything after the map
    /// header), and their count, keeping the keys in the order written (as
    /// Python keeps dict order).
    ///
    /// # Errors
    /// The text is not a JSON object, or it has a `__asgi_channel__` key
    /// (reserved for routing, as in channels_redis).
    pub(crate) fn encode_entries(json: &str) -> Result<(Vec<u8>, u32), String> {
        let value: Mp = serde_json::from_str(json).map_err(|error| error.to_string())?;
        let Mp::Map(pairs) = value else {
            return Err("not a JSON object".to_owned());
        };
        let mut entries = Vec::with_capacity(json.len() + 16);
        for (key, value) in &pairs {
            if key.as_str() == Some(ASGI_CHANNEL) {
                return Err(format!(
                    "the key {ASGI_CHANNEL:?} is reserved for channels_redis routing"
                ));
            }
            write(&mut entries, key);
            write(&mut entries, &bytes_objects_to_bin(value.clone()));
        }
        Ok((entries, u32::try_from(pairs.len()).unwrap_or(u32::MAX)))
    }

    /// Appends a ready frame to map entries as the `__frame__` entry: a str
    /// for a text frame, a bin for a binary one (Python `str` and `bytes`).
    pub(crate) fn append_frame(entries: &mut Vec<u8>, frame: &ReadyFrame) {
        write(entries, &Mp::from(FRAME_KEY));
        // Writing into a Vec cannot fail.
        let _ = match frame.as_text() {
            Some(text) => rmp::encode::write_str(entries, text),
            None => rmp::encode::write_bin(entries, &frame.payload()),
        };
    }

    /// A stored entry: the map of `entries` plus `__asgi_channel__` = `target`,
    /// encrypted if configured, behind a fresh random prefix.
    pub(crate) fn seal(&self, entries: &[u8], count: u32, target: &Target) -> Vec<u8> {
        let mut body = Vec::with_capacity(entries.len() + 128);
        let extra = u32::from(!matches!(target, Target::None));
        // Writing into a Vec cannot fail.
        let _ = rmp::encode::write_map_len(&mut body, count + extra);
        body.extend_from_slice(entries);
        match target {
            Target::None => {}
            Target::One(name) => {
                write(&mut body, &Mp::from(ASGI_CHANNEL));
                write(&mut body, &Mp::from(name.as_str()));
            }
            Target::Many(names) => {
                write(&mut body, &Mp::from(ASGI_CHANNEL));
                let list = names.iter().map(|n| Mp::from(n.as_str())).collect();
                write(&mut body, &Mp::Array(list));
            }
        }
        let mut out = Vec::with_capacity(self.random_prefix_length + body.len() + 100);
        out.extend((0..self.random_prefix_length).map(|_| rand::random::<u8>()));
        match &self.keys {
            Some(Keys(keys)) if !keys.is_empty() => {
                out.extend_from_slice(keys[0].encrypt(&body).as_bytes());
            }
            _ => out.extend_from_slice(&body),
        }
        out
    }

    /// Decodes a stored entry into the event (a JSON object, `__asgi_channel__`
    /// removed) and its target.
    pub(crate) fn open(&self, entry: &[u8]) -> Result<(Map<String, Value>, Target), WireError> {
        let body = entry
            .get(self.random_prefix_length..)
            .ok_or(WireError::ShortPrefix {
                len: entry.len(),
                prefix: self.random_prefix_length,
            })?;
        let decrypted;
        let body = match &self.keys {
            Some(Keys(keys)) => {
                let token = std::str::from_utf8(body).map_err(|_| WireError::Decrypt)?;
                if fernet_expired(token, self.ttl_secs, unix_now_secs()) {
                    return Err(WireError::Decrypt);
                }
                decrypted = keys
                    .iter()
                    .find_map(|key| key.decrypt(token).ok())
                    .ok_or(WireError::Decrypt)?;
                &decrypted[..]
            }
            None => body,
        };
        let mut reader = body;
        // Bounded where events are: rmpv's own limit (1,024) lets an entry
        // nested ~1,000 deep overflow a tokio worker's stack in a debug build.
        let value = rmpv::decode::read_value_with_max_depth(&mut reader, MAX_DECODE_DEPTH)
            .map_err(|error| WireError::Msgpack(error.to_string()))?;
        let Mp::Map(pairs) = value else {
            return Err(WireError::Shape("the top level is not a map".into()));
        };
        let mut map = Map::with_capacity(pairs.len());
        let mut target = Target::None;
        for (key, value) in pairs {
            let key = map_key(key)?;
            if key == ASGI_CHANNEL {
                target = match value {
                    Mp::String(name) => Target::One(utf8(name)?),
                    Mp::Array(names) => Target::Many(
                        names
                            .into_iter()
                            .map(|name| match name {
                                Mp::String(name) => utf8(name),
                                _ => Err(WireError::Shape(
                                    "__asgi_channel__ list holds a non-string".into(),
                                )),
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    _ => {
                        return Err(WireError::Shape(
                            "__asgi_channel__ is neither a str nor a list".into(),
                        ));
                    }
                };
            } else {
                // The event's own map is the first level.
                map.insert(key, to_json(value, MAX_NESTING - 1)?);
            }
        }
        Ok((map, target))
    }
}

/// Whether a Fernet token is older than `ttl_secs` at `now` (Python's
/// `timestamp + ttl < current_time`); a token too short or malformed to have
/// a timestamp counts as expired.
///
/// The codec checks the TTL itself and asks `fernet` only to verify and
/// decrypt: fernet 0.2's own TTL check adds `timestamp + ttl` unchecked,
/// which overflows (a panic with overflow checks, a wrong answer without)
/// for a token claiming a far-future timestamp or for a huge `expiry`.
fn fernet_expired(token: &str, ttl_secs: u64, now: u64) -> bool {
    // A token is base64url of 0x80, an 8-byte big-endian timestamp, ...: its
    // first 12 characters are exactly those 9 bytes.
    let Some(Ok(head)) = token.get(..12).map(|head| URL_SAFE_NO_PAD.decode(head)) else {
        return true;
    };
    let Some((&0x80, timestamp)) = head.split_first() else {
        return true;
    };
    let Ok(timestamp) = <[u8; 8]>::try_from(timestamp) else {
        return true;
    };
    u64::from_be_bytes(timestamp).saturating_add(ttl_secs) < now
}

fn unix_now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn write(out: &mut Vec<u8>, value: &Mp) {
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(out, value);
}

fn utf8(s: rmpv::Utf8String) -> Result<String, WireError> {
    s.into_str()
        .ok_or_else(|| WireError::Shape("a str is not valid UTF-8".into()))
}

fn map_key(key: Mp) -> Result<String, WireError> {
    match key {
        Mp::String(key) => utf8(key),
        other => Err(WireError::Shape(format!(
            "map key {other} is not a str (channels_redis reads only str/bin keys; \
             Switchyard only str)"
        ))),
    }
}

/// A JSON value parsed into msgpack form, with each `{"__bytes__": "<base64>"}`
/// object turned into bin (see the module docs).
pub(crate) fn bytes_objects_to_bin(value: Mp) -> Mp {
    match value {
        Mp::Array(items) => Mp::Array(items.into_iter().map(bytes_objects_to_bin).collect()),
        Mp::Map(pairs) => {
            if let [(Mp::String(key), Mp::String(encoded))] = pairs.as_slice()
                && key.as_str() == Some(BYTES_KEY)
                && let Some(bytes) = encoded.as_str().and_then(|e| STANDARD.decode(e).ok())
            {
                return Mp::Binary(bytes);
            }
            Mp::Map(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k, bytes_objects_to_bin(v)))
                    .collect(),
            )
        }
        other => other,
    }
}

/// A msgpack value as JSON, by the table in the module docs, with at most
/// `levels` levels of arrays and maps.
pub(crate) fn to_json(value: Mp, levels: usize) -> Result<Value, WireError> {
    let inner = || {
        levels.checked_sub(1).ok_or_else(|| {
            WireError::Shape(format!(
                "nested deeper than {MAX_NESTING} levels (JSON's limit)"
            ))
        })
    };
    Ok(match value {
        Mp::Nil => Value::Null,
        Mp::Boolean(b) => Value::Bool(b),
        Mp::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(u)) => Value::from(u),
            (None, None) => return Err(WireError::Shape("integer out of range".into())),
        },
        Mp::F32(f) => Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number),
        Mp::F64(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        Mp::String(s) => Value::String(utf8(s)?),
        Mp::Binary(bytes) => {
            let mut map = Map::with_capacity(1);
            map.insert(BYTES_KEY.to_owned(), Value::String(STANDARD.encode(bytes)));
            Value::Object(map)
        }
        Mp::Array(items) => {
            let levels = inner()?;
            Value::Array(
                items
                    .into_iter()
                    .map(|item| to_json(item, levels))
                    .collect::<Result<_, _>>()?,
            )
        }
        Mp::Map(pairs) => {
            let levels = inner()?;
            let mut map = Map::with_capacity(pairs.len());
            for (key, value) in pairs {
                map.insert(map_key(key)?, to_json(value, levels)?);
            }
            Value::Object(map)
        }
        Mp::Ext(kind, _) => {
            return Err(WireError::Shape(format!(
                "msgpack ext type {kind} is not supported"
            )));
        }
    })
}

/// Seconds since the Unix epoch as a float, like Python's `time.time()`.
pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn body(event: &str, target: &Target) -> Vec<u8> {
        let codec = Codec::new(0, &[], 60);
        let (entries, count) = Codec::encode_entries(event).expect("an object");
        codec.seal(&entries, count, target)
    }

    fn from_json(value: &Value) -> Mp {
        bytes_objects_to_bin(serde_json::from_str(&value.to_string()).expect("JSON"))
    }

    /// The msgpack test vectors of the wire spec (`docs/channels_redis_wire.md` 1.4.1).
    #[test]
    fn matches_the_spec_test_vectors() {
        let plain = r#"{"type": "chat.message", "text": "hi"}"#;
        assert_eq!(
            hex(&body(plain, &Target::None)),
            "82a474797065ac636861742e6d657373616765a474657874a26869"
        );
        assert_eq!(
            hex(&body(plain, &Target::Many(vec!["specific.abc!x".into()]))),
            "83a474797065ac636861742e6d657373616765a474657874a26869\
             b05f5f617367695f6368616e6e656c5f5f91ae73706563696669632e6162632178"
        );
        let typed = r#"{"type": "chat.message", "bytes": {"__bytes__": "AP8="}, "n": -1,
            "big": 300, "f": 0.5, "none": null, "ok": false}"#;
        assert_eq!(
            hex(&body(typed, &Target::None)),
            "87a474797065ac636861742e6d657373616765a56279746573c40200ffa16effa3626967\
             cd012ca166cb3fe0000000000000a46e6f6e65c0a26f6bc2"
        );
    }

    /// A ready frame travels as `__frame__`: a str for text, a bin for
    /// bytes, and comes back as the event's frame.
    #[test]
    fn ready_frames_travel_as_str_and_bin() {
        let codec = Codec::new(0, &[], 60);
        for frame in [ReadyFrame::text("hé"), ReadyFrame::binary(vec![0u8, 255])] {
            let (mut entries, count) =
                Codec::encode_entries(r#"{"type": "t"}"#).expect("an object");
            Codec::append_frame(&mut entries, &frame);
            let sealed = codec.seal(&entries, count + 1, &Target::None);
            let tail = if frame.is_text() {
                "a368c3a9"
            } else {
                "c40200ff"
            };
            assert_eq!(
                hex(&sealed),
                format!("82a474797065a174a95f5f6672616d655f5f{tail}")
            );
            let (map, _) = codec.open(&sealed).expect("opens");
            let event = crate::Event::from_value(Value::Object(map)).expect("an event");
            assert_eq!(event.as_str(), r#"{"type":"t"}"#);
            assert_eq!(event.frame(), Some(&frame));
        }
    }

    #[test]
    fn round_trips_with_prefix_and_encryption() {
        let codec = Codec::new(12, &["secret".to_owned(), "old".to_owned()], 60);
        let event = json!({"type": "x", "b": {"__bytes__": "AAEC"}, "f": 2.0, "l": [1, "s", null],
            "m": {"k": true}, "big": u64::MAX});
        let (entries, count) = Codec::encode_entries(&event.to_string()).expect("an object");
        let sealed = codec.seal(&entries, count, &Target::One("specific.a!b".into()));
        let (map, target) = codec.open(&sealed).expect("opens");
        assert_eq!(Value::Object(map), event);
        assert_eq!(target, Target::One("specific.a!b".into()));

        // A reader with the old key second still decrypts; a wrong key does not.
        let rotated = Codec::new(12, &["new".to_owned(), "secret".to_owned()], 60);
        assert!(rotated.open(&sealed).is_ok());
        let wrong = Codec::new(12, &["wrong".to_owned()], 60);
        assert!(matches!(wrong.open(&sealed), Err(WireError::Decrypt)));
    }

    /// Fuzz crash (redis_entry, crash-b9b7a179…, bytes `ff` × 10, `df`): the
    /// input decoded to a codec with Fernet keys and an expiry near
    /// `u64::MAX` seconds; opening what it sealed overflowed fernet's
    /// `timestamp + ttl`.
    #[test]
    fn a_huge_expiry_still_opens_encrypted_entries() {
        let codec = Codec::new(24, &["secret".to_owned()], u64::MAX);
        let (entries, count) = Codec::encode_entries(r#"{"type": "x"}"#).expect("an object");
        let sealed = codec.seal(&entries, count, &Target::None);
        let (map, _) = codec.open(&sealed).expect("not expired");
        assert_eq!(Value::Object(map), json!({"type": "x"}));
    }

    /// A token whose timestamp is `u64::MAX` (anyone who can write to the
    /// inbox can store one) is refused, not overflowed on.
    #[test]
    fn a_token_from_the_far_future_is_refused() {
        let codec = Codec::new(0, &["secret".to_owned()], 60);
        let mut raw = vec![0x80];
        raw.extend_from_slice(&[0xff; 8]); // timestamp
        raw.extend_from_slice(&[0; 16 + 16 + 32]); // iv, one cipher block, hmac
        let token = URL_SAFE.encode(&raw);
        assert!(matches!(
            codec.open(token.as_bytes()),
            Err(WireError::Decrypt)
        ));
    }

    #[test]
    fn the_fernet_ttl_is_timestamp_plus_ttl() {
        let codec = Codec::new(0, &["secret".to_owned()], 60);
        let sealed = codec.seal(&[], 0, &Target::None);
        let token = std::str::from_utf8(&sealed).expect("a token is text");
        let now = unix_now_secs();
        assert!(!fernet_expired(token, 70, now));
        assert!(!fernet_expired(token, 70, now + 60));
        assert!(fernet_expired(token, 70, now + 100));
        assert!(!fernet_expired(token, u64::MAX, u64::MAX));
        assert!(
            fernet_expired("gAAAAA", 70, now),
            "too short for a timestamp"
        );
        assert!(
            fernet_expired("AAAAAAAAAAAAAAAA", 70, now),
            "not version 0x80"
        );
    }

    /// Fuzz crash (msgpack_json, crash-b85fef95…): a float64 read from Redis,
    /// written as JSON and encoded again, came back one ulp off, because
    /// serde_json parsed the JSON number without `float_roundtrip`.
    #[test]
    fn a_decoded_float_survives_json_and_back() {
        let codec = Codec::new(0, &[], 60);
        let entry = [129, 161, 6, 203, 203, 203, 203, 203, 203, 203, 1, 2];
        let (map, target) = codec.open(&entry).expect("a map of one float");
        let text = Value::Object(map).to_string();
        let (entries, count) = Codec::encode_entries(&text).expect("an object");
        assert_eq!(codec.seal(&entries, count, &target), entry);
        // And JSON text becomes the float64 Python's float() gives.
        let (entries, _) = Codec::encode_entries(r#"{"x": 0.1, "y": -1.3631157199793375e+57}"#)
            .expect("an object");
        assert_eq!(
            hex(&entries),
            "a178cb3fb999999999999aa179cbcbcbcbcbcbcb0102"
        );
    }

    /// An entry of `levels` levels: the event's map holding `"V"`, then
    /// arrays of one element down to a `0`.
    fn nested_entry(levels: usize) -> Vec<u8> {
        let mut entry = vec![0x81, 0xa1, b'V'];
        entry.extend(std::iter::repeat_n(0x91, levels - 1));
        entry.push(0);
        entry
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
            .collect()
    }

    /// Fuzz crash (msgpack_json, crash-3002eb6e…): an entry nested more than
    /// 128 levels deep decoded to JSON text that serde_json refuses to parse,
    /// so it could not be encoded again (and `Event::to_value` on it would
    /// panic). `nested_entry` is the same case, minimal.
    #[test]
    fn entries_nest_as_deep_as_json_and_no_deeper() {
        let codec = Codec::new(0, &[], 60);
        let found = unhex(concat!(
            "81a1569b1cd1919191919191919191919191919191919191919191919191919191919191",
            "91919191919191919191919191919191919191919191919191919191919181a1569b1cd1",
            "919191919191919191919191919191919191919191919191919191919191919191919191",
            "919191919191919191919191919191919191919191919191919191919191919191919191",
            "919191919191919191919191919191919191919191919191919191919191919191919191",
            "919191919191919191919191910000000091919191919191919191000000009191919191",
            "919191919191919191919191919191919191919191919191919191919191919191919191",
            "919191919191919191919191919191919191919191919191919191919191919191919191",
            "910000000091919191919191919191000000009191919191919191919191919191919191",
            "9191910000",
        ));
        let err = codec.open(&found).expect_err("too deep").to_string();
        // Refused by the decoder's depth bound or by the JSON limit after it.
        assert!(
            err.contains("nested deeper") || err.contains("depth limit"),
            "{err}"
        );

        let (map, target) = codec
            .open(&nested_entry(MAX_NESTING))
            .expect("at the limit");
        let text = Value::Object(map).to_string();
        let (entries, count) = Codec::encode_entries(&text).expect("parses again");
        assert_eq!(
            codec.seal(&entries, count, &target),
            nested_entry(MAX_NESTING)
        );

        let err = codec
            .open(&nested_entry(MAX_NESTING + 1))
            .expect_err("past the limit");
        assert!(err.to_string().contains("nested deeper"), "{err}");
        let deeper = format!(
            "{{\"V\":{}0{}}}",
            "[".repeat(MAX_NESTING),
            "]".repeat(MAX_NESTING)
        );
        assert!(
            Codec::encode_entries(&deeper).is_err(),
            "JSON has the same limit"
        );
    }

    /// An entry nested ~1,000 deep (under rmpv's own limit of 1,024) is
    /// refused by the decoder before its recursion can exhaust a stack; one at
    /// the event limit with a string leaf (the costliest) still decodes.
    #[test]
    fn the_decoder_stops_near_the_event_limit() {
        let codec = Codec::new(0, &[], 60);
        let mut at_limit = nested_entry(MAX_NESTING);
        at_limit.pop();
        at_limit.extend([0xa1, b'x']);
        codec.open(&at_limit).expect("a string leaf at the limit");
        // On 1 MiB, half a tokio worker's stack: the bounded decoder needs a
        // fraction of it, an unbounded one overflows it at 1,000 levels.
        let deep = nested_entry(1_000);
        let error = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(move || codec.open(&deep).map(|_| ()).map_err(|e| e.to_string()))
            .expect("spawn")
            .join()
            .expect("no stack overflow")
            .expect_err("too deep");
        assert!(error.contains("depth"), "{error}");
    }

    #[test]
    fn malformed_entries_are_errors() {
        let codec = Codec::new(12, &[], 60);
        assert!(matches!(
            codec.open(b"short"),
            Err(WireError::ShortPrefix { .. })
        ));
        let mut bad = vec![0; 12];
        bad.push(0x82); // a map of two entries, cut short
        assert!(matches!(codec.open(&bad), Err(WireError::Msgpack(_))));
        // {1: "x"}: an integer map key, which Python refuses too.
        let mut int_key = vec![0; 12];
        int_key.extend_from_slice(&[0x81, 0x01, 0xa1, b'x']);
        assert!(matches!(codec.open(&int_key), Err(WireError::Shape(_))));
        let mut not_map = vec![0; 12];
        not_map.push(0x01);
        assert!(matches!(codec.open(&not_map), Err(WireError::Shape(_))));
    }

    #[test]
    fn the_routing_key_is_reserved() {
        let err = Codec::encode_entries(r#"{"type": "x", "__asgi_channel__": "y"}"#)
            .expect_err("reserved");
        assert!(err.contains("reserved"), "{err}");
    }

    #[test]
    fn non_finite_floats_become_null_and_other_objects_stay_maps() {
        assert_eq!(to_json(Mp::F64(f64::NAN), 1).expect("ok"), Value::Null);
        let not_bytes = json!({"__bytes__": "not base64!"});
        assert!(matches!(from_json(&not_bytes), Mp::Map(_)));
        let two_keys = json!({"__bytes__": "AA==", "x": 1});
        assert!(matches!(from_json(&two_keys), Mp::Map(_)));
    }
}
