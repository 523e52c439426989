//! Entry points for the fuzz targets in `fuzz/` (built only with the `fuzzing`
//! feature; not part of the supported API).
//!
//! The Redis wire codec is crate-private: nothing outside the layer needs it.
//! These thin wrappers expose exactly what the `msgpack_json` and `redis_entry`
//! targets drive, and change nothing about how the codec behaves.

use serde_json::{Map, Value};

use crate::redis::wire::{Codec, Target};

pub use crate::redis::wire::BYTES_KEY;

/// Where an entry is routed: the crate-private `wire::Target`, mirrored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryTarget {
    /// No `__asgi_channel__`.
    None,
    /// `send` to one channel.
    One(String),
    /// `group_send` to several channels.
    Many(Vec<String>),
}

/// The codec of one Redis layer configuration.
#[derive(Debug)]
pub struct EntryCodec(Codec);

impl EntryCodec {
    /// As the layer builds it: `random_prefix_length` bytes of prefix, Fernet
    /// `keys` (none: no encryption), and the message `expiry_secs`.
    pub fn new(random_prefix_length: usize, keys: &[String], expiry_secs: u64) -> Self {
        Self(Codec::new(random_prefix_length, keys, expiry_secs))
    }

    /// Encodes an event's JSON text as a stored entry routed to `target`.
    ///
    /// # Errors
    /// The text is not a JSON object, or it uses the reserved routing key.
    pub fn seal(&self, json: &str, target: &EntryTarget) -> Result<Vec<u8>, String> {
        let (entries, count) = Codec::encode_entries(json)?;
        let target = match target {
            EntryTarget::None => Target::None,
            EntryTarget::One(name) => Target::One(name.clone()),
            EntryTarget::Many(names) => Target::Many(names.clone()),
        };
        Ok(self.0.seal(&entries, count, &target))
    }

    /// Decodes a stored entry into its event object and target.
    ///
    /// # Errors
    /// The entry is malformed (the layer logs and skips such entries); the
    /// error is the layer's message for it.
    pub fn open(&self, entry: &[u8]) -> Result<(Map<String, Value>, EntryTarget), String> {
        let (map, target) = self.0.open(entry).map_err(|error| error.to_string())?;
        let target = match target {
            Target::None => EntryTarget::None,
            Target::One(name) => EntryTarget::One(name),
            Target::Many(names) => EntryTarget::Many(names),
        };
        Ok((map, target))
    }
}
