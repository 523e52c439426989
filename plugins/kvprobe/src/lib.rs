//! A test plugin (not an example): each text frame is one `wasi:keyvalue`
//! command on the connection's open bucket (the empty identifier until
//! `bucket` opens another), answered with `{"ok": result}` or
//! `{"err": message}`.
//!
//! Route: `test/kv/`. Commands (arguments split on single spaces; a value
//! is the rest of the frame):
//! - `bucket <id>`: open bucket `<id>` (no argument: the empty identifier)
//! - `get <key>` → the value as text, or null
//! - `set <key> <value>`, `setn <key> <n>` (a value of `n` bytes `x`)
//! - `del <key>`, `exists <key>` → bool, `keys` → every key (all pages)
//! - `incr <key> <delta>` → the new value
//! - `setmany <k>=<v> ...`, `getmany <k> ...` → `[[k, v] | null, ...]`,
//!   `delmany <k> ...`
//!
//! And through `wasi:keyvalue@0.2.0-draft2` (compare-and-swap), on the
//! bucket of the same identifier:
//! - `casbegin <key>`: make a `cas` handle (kept) → the value it read
//! - `casswap <value>`: swap the kept handle → null, or the error
//!   `cas-failed` with `"current"`, the value the fresh handle (kept for a
//!   retry) read
//! - `casincr <key>`: add 1 to a decimal value by a CAS retry loop → the
//!   new value
//! - `incr2 <key> <delta>`: draft2's signed `increment`

#[allow(unsafe_code)] // wit-bindgen's canonical-ABI glue needs `unsafe`.
mod bindings {
    wit_bindgen::generate!({ path: "../../wit", world: "keyvalue-draft2-consumer", generate_all });

    use super::KvProbe;
    export!(KvProbe);
}

use std::cell::RefCell;

use bindings::exports::switchyard::consumer::websocket_consumer::Guest;
use bindings::switchyard::consumer::host::{Connection, Scope};
use bindings::switchyard::consumer::types::Frame;
use bindings::wasi::keyvalue0_2_0_draft::store::{Bucket, Error};
use bindings::wasi::keyvalue0_2_0_draft::{atomics, batch, store};
use bindings::wasi::keyvalue0_2_0_draft2 as draft2;
use serde_json::{Value, json};

thread_local! {
    /// The bucket commands act on (each connection has its own instance).
    static BUCKET: RefCell<Option<Bucket>> = const { RefCell::new(None) };
    /// The identifier of that bucket, for draft2 commands.
    static BUCKET_ID: RefCell<String> = const { RefCell::new(String::new()) };
    /// The `cas` handle of `casbegin`, for `casswap`.
    static CAS: RefCell<Option<draft2::atomics::Cas>> = const { RefCell::new(None) };
}

fn describe2(err: draft2::store::Error) -> String {
    match err {
        draft2::store::Error::NoSuchStore => "no-such-store".to_owned(),
        draft2::store::Error::AccessDenied => "access-denied".to_owned(),
        draft2::store::Error::Other(message) => format!("other: {message}"),
    }
}

fn value_of(current: Option<Vec<u8>>) -> Value {
    current.map_or(Value::Null, text)
}

/// Run one draft2 command; `None` if `command` is not one.
fn run_draft2(command: &str, rest: &str) -> Option<Value> {
    use draft2::atomics::{self, Cas, CasError};
    if !matches!(command, "casbegin" | "casswap" | "casincr" | "incr2") {
        return None;
    }
    let bucket = match draft2::store::open(&BUCKET_ID.with_borrow(String::clone)) {
        Ok(bucket) => bucket,
        Err(err) => return Some(json!({"err": describe2(err)})),
    };
    let (first, second) = rest.split_once(' ').unwrap_or((rest, ""));
    let reply = match command {
        "casbegin" => match Cas::new(&bucket, first) {
            Ok(cas) => {
                let current = cas.current().map(value_of);
                CAS.set(Some(cas));
                match current {
                    Ok(value) => json!({"ok": value}),
                    Err(err) => json!({"err": describe2(err)}),
                }
            }
            Err(err) => json!({"err": describe2(err)}),
        },
        "casswap" => match CAS.take() {
            None => json!({"err": "no cas handle"}),
            Some(cas) => match atomics::swap(cas, rest.as_bytes()) {
                Ok(()) => json!({"ok": null}),
                Err(CasError::CasFailed(fresh)) => {
                    let current = fresh.current().map(value_of).unwrap_or(Value::Null);
                    CAS.set(Some(fresh));
                    json!({"err": "cas-failed", "current": current})
                }
                Err(CasError::StoreError(err)) => json!({"err": describe2(err)}),
            },
        },
        "casincr" => {
            let mut attempt = Cas::new(&bucket, first);
            loop {
                let cas = match attempt {
                    Ok(cas) => cas,
                    Err(err) => break json!({"err": describe2(err)}),
                };
                let current = match cas.current() {
                    Ok(current) => current,
                    Err(err) => break json!({"err": describe2(err)}),
                };
                let n = current
                    .and_then(|v| String::from_utf8(v).ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
                    + 1;
                match atomics::swap(cas, n.to_string().as_bytes()) {
                    Ok(()) => break json!({"ok": n}),
                    Err(CasError::CasFailed(fresh)) => attempt = Ok(fresh),
                    Err(CasError::StoreError(err)) => break json!({"err": describe2(err)}),
                }
            }
        }
        // `incr2`
        _ => match atomics::increment(&bucket, first, second.parse().unwrap_or(1)) {
            Ok(value) => json!({"ok": value}),
            Err(err) => json!({"err": describe2(err)}),
        },
    };
    Some(reply)
}

struct KvProbe;

fn describe(err: Error) -> String {
    match err {
        Error::NoSuchStore => "no-such-store".to_owned(),
        Error::AccessDenied => "access-denied".to_owned(),
        Error::Other(message) => format!("other: {message}"),
    }
}

fn text(bytes: Vec<u8>) -> Value {
    Value::String(
        String::from_utf8(bytes)
            .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned()),
    )
}

/// Run one command on `bucket`.
fn run(bucket: &Bucket, command: &str, rest: &str) -> Result<Value, Error> {
    let mut args = rest.splitn(2, ' ');
    let first = args.next().unwrap_or_default();
    let second = args.next().unwrap_or_default();
    Ok(match command {
        "get" => bucket.get(first)?.map_or(Value::Null, text),
        "set" => {
            bucket.set(first, second.as_bytes())?;
            Value::Null
        }
        "setn" => {
            let n = second.parse::<usize>().unwrap_or(0);
            bucket.set(first, &vec![b'x'; n])?;
            Value::Null
        }
        "del" => {
            bucket.delete(first)?;
            Value::Null
        }
        "exists" => Value::Bool(bucket.exists(first)?),
        "keys" => {
            let mut keys = Vec::new();
            let mut cursor = None;
            loop {
                let page = bucket.list_keys(cursor)?;
                keys.extend(page.keys);
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            keys.sort();
            keys.dedup();
            json!(keys)
        }
        "incr" => json!(atomics::increment(
            bucket,
            first,
            second.parse().unwrap_or(1)
        )?),
        "setmany" => {
            let pairs: Vec<(String, Vec<u8>)> = rest
                .split(' ')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
                .collect();
            batch::set_many(bucket, &pairs)?;
            Value::Null
        }
        "getmany" => {
            let keys: Vec<String> = rest.split(' ').map(str::to_owned).collect();
            let found = batch::get_many(bucket, &keys)?;
            Value::Array(
                found
                    .into_iter()
                    .map(|entry| entry.map_or(Value::Null, |(k, v)| json!([k, text(v)])))
                    .collect(),
            )
        }
        "delmany" => {
            let keys: Vec<String> = rest.split(' ').map(str::to_owned).collect();
            batch::delete_many(bucket, &keys)?;
            Value::Null
        }
        other => Value::String(format!("unknown command {other}")),
    })
}

impl Guest for KvProbe {
    fn connect(conn: &Connection, _scope: &Scope) {
        conn.accept(None);
    }

    fn receive(conn: &Connection, message: Frame) {
        let Frame::Text(frame) = message else {
            return;
        };
        let (command, rest) = frame.split_once(' ').unwrap_or((frame.as_str(), ""));
        let reply = if command == "bucket" {
            match store::open(rest) {
                Ok(bucket) => {
                    BUCKET.set(Some(bucket));
                    BUCKET_ID.set(rest.to_owned());
                    json!({"ok": null})
                }
                Err(err) => json!({"err": describe(err)}),
            }
        } else if let Some(reply) = run_draft2(command, rest) {
            reply
        } else {
            if BUCKET.with_borrow(Option::is_none) {
                match store::open("") {
                    Ok(bucket) => BUCKET.set(Some(bucket)),
                    Err(err) => {
                        let reply = json!({"err": describe(err)});
                        conn.send(&Frame::Text(reply.to_string()));
                        return;
                    }
                }
            }
            BUCKET.with_borrow(|bucket| match bucket {
                Some(bucket) => match run(bucket, command, rest) {
                    Ok(value) => json!({"ok": value}),
                    Err(err) => json!({"err": describe(err)}),
                },
                None => json!({"err": "no bucket"}),
            })
        };
        conn.send(&Frame::Text(reply.to_string()));
    }

    fn event(_conn: &Connection, _event: String) {}

    fn disconnect(_conn: &Connection, _code: u16) {}
}
