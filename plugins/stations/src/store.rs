//! The inventory in the plugin's key-value store (`wasi:keyvalue`
//! draft2), bucket `inventory`:
//!
//! - `station:<id>`: one [`Station`] as JSON, replaced whole by
//!   compare-and-swap, so every change is atomic and no count ever goes
//!   below zero, however many requests (in however many processes) change
//!   the station at once;
//! - `index`: the station ids as a JSON array, written last when seeding,
//!   so once it exists every station in it does.
//!
//! Seeding happens on the first request that finds no `index`, in any
//! process, and is idempotent: each key is written only if still absent
//! (compare-and-swap against "no value"), so concurrent first requests
//! agree on one set of stations.

use crate::bindings::wasi::keyvalue0_2_0_draft2::atomics::{self, Cas, CasError};
use crate::bindings::wasi::keyvalue0_2_0_draft2::store::{self, Bucket, Error};
use crate::model::{self, Change, Refusal, Station};

const BUCKET: &str = "inventory";
const INDEX: &str = "index";

fn key(id: u64) -> String {
    format!("station:{id}")
}

fn unavailable(err: Error) -> Refusal {
    let detail = match err {
        Error::NoSuchStore => "no such store".to_owned(),
        Error::AccessDenied => "access denied".to_owned(),
        Error::Other(message) => message,
    };
    Refusal::new(503, "store_unavailable", detail)
}

fn corrupt(what: &str, err: &serde_json::Error) -> Refusal {
    Refusal::new(
        500,
        "store_corrupt",
        format!("{what} does not parse: {err}"),
    )
}

fn open() -> Result<Bucket, Refusal> {
    store::open(BUCKET).map_err(unavailable)
}

/// Store `value` under `key` only if the key has no value yet.
fn put_if_absent(bucket: &Bucket, key: &str, value: &[u8]) -> Result<(), Refusal> {
    let cas = Cas::new(bucket, key).map_err(unavailable)?;
    if cas.current().map_err(unavailable)?.is_some() {
        return Ok(());
    }
    match atomics::swap(cas, value) {
        // Someone else seeded it first: theirs stands.
        Ok(()) | Err(CasError::CasFailed(_)) => Ok(()),
        Err(CasError::StoreError(err)) => Err(unavailable(err)),
    }
}

/// The station ids, seeding the stations first if nobody has.
pub(crate) fn station_ids() -> Result<Vec<u64>, Refusal> {
    let bucket = open()?;
    if let Some(index) = bucket.get(INDEX).map_err(unavailable)? {
        return serde_json::from_slice(&index).map_err(|err| corrupt(INDEX, &err));
    }
    let seeds = model::seeds();
    for station in &seeds {
        let json = serde_json::to_vec(station).map_err(|err| corrupt("a seed", &err))?;
        put_if_absent(&bucket, &key(station.id), &json)?;
    }
    let ids: Vec<u64> = seeds.iter().map(|station| station.id).collect();
    let json = serde_json::to_vec(&ids).map_err(|err| corrupt(INDEX, &err))?;
    put_if_absent(&bucket, INDEX, &json)?;
    Ok(ids)
}

fn parse(id: u64, bytes: &[u8]) -> Result<Station, Refusal> {
    serde_json::from_slice(bytes).map_err(|err| corrupt(&key(id), &err))
}

pub(crate) fn unknown(id: u64) -> Refusal {
    Refusal::new(404, "unknown_station", format!("no station {id}"))
}

/// Station `id`; 404 when there is none.
pub(crate) fn station(id: u64) -> Result<Station, Refusal> {
    let ids = station_ids()?;
    if !ids.contains(&id) {
        return Err(unknown(id));
    }
    let bucket = open()?;
    match bucket.get(&key(id)).map_err(unavailable)? {
        Some(bytes) => parse(id, &bytes),
        None => Err(unknown(id)),
    }
}

/// Every station, in id order.
pub(crate) fn stations() -> Result<Vec<Station>, Refusal> {
    let ids = station_ids()?;
    let bucket = open()?;
    let mut stations = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(bytes) = bucket.get(&key(id)).map_err(unavailable)? {
            stations.push(parse(id, &bytes)?);
        }
    }
    Ok(stations)
}

/// Apply `change` to station `id` atomically: read, change, and swap in
/// only if nobody changed the station meanwhile; otherwise again from the
/// fresh value. Returns the station as stored.
/// The caller has checked (with [`station_ids`], which seeds) that the
/// station exists.
pub(crate) fn update(id: u64, change: &Change) -> Result<Station, Refusal> {
    let bucket = open()?;
    let mut cas = Cas::new(&bucket, &key(id)).map_err(unavailable)?;
    loop {
        let Some(current) = cas.current().map_err(unavailable)? else {
            return Err(unknown(id));
        };
        let mut station = parse(id, &current)?;
        station.apply(change)?;
        let json = serde_json::to_vec(&station).map_err(|err| corrupt(&key(id), &err))?;
        match atomics::swap(cas, &json) {
            Ok(()) => return Ok(station),
            Err(CasError::CasFailed(fresh)) => cas = fresh,
            Err(CasError::StoreError(err)) => return Err(unavailable(err)),
        }
    }
}
