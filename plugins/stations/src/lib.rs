//! The example app: a battery-swap network's station inventory, with a JSON
//! API, live WebSocket feeds and a dashboard page, over state in the
//! plugin's key-value store (see `store`) and changes published through the
//! channel layer, so every process sharing the layer (Django's included)
//! sees them.
//!
//! HTTP routes (`stations.toml`, `http-routes`):
//!
//! | route                                     | method | answer                                   |
//! | ----------------------------------------- | ------ | ---------------------------------------- |
//! | `` (the root, `/`)                        | GET    | the dashboard page (HTML)                |
//! | `api/stations/`                           | GET    | every station, in id order               |
//! | `api/stations/<int:station_id>/`          | GET    | one station                              |
//! | `api/stations/<int:station_id>/swaps/`    | POST   | charged battery out, depleted one in     |
//! | `api/stations/<int:station_id>/charging/` | POST   | a depleted battery goes on charge        |
//! | `api/stations/<int:station_id>/charged/`  | POST   | a charging battery is charged            |
//! | `api/stations/<int:station_id>/faults/`   | POST   | a battery is reported faulty             |
//! | `api/stations/<int:station_id>/restock/`  | POST   | faulty batteries replaced by charged ones|
//!
//! A write answers the station as changed (200), or `{"error", "detail"}`
//! with 400 (malformed body), 404 (unknown station), 409 (nothing to change,
//! e.g. no charged battery to swap), 403 (a token without the operator
//! claim) or 503 (store unavailable). When the request carries a verified
//! token (`[auth]`), writes need its claim `"operator": true`.
//!
//! WebSocket routes (`routes`): `ws/stations/` and
//! `ws/stations/<int:station_id>/`. On connect: `{"type": "snapshot",
//! "stations": [...]}`; then for each change `{"type": "update", "change":
//! "swap", "station": {...}}`. Changes reach sockets through the groups
//! `station_<id>`: a write sends `{"type": "station.update", "change": ...,
//! "station": ...}` there, and every feed socket joins the group of each
//! station it shows.

#[allow(unsafe_code)] // wit-bindgen's canonical-ABI glue needs `unsafe`.
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "keyvalue-consumer-and-http",
        generate_all,
    });

    use super::Stations;
    export!(Stations);
}

// The wasi:http plumbing the HTTP plugins share; it names `crate::bindings`,
// which each plugin generates for its own world.
#[path = "../../shared/http.rs"]
mod http;
mod model;
mod store;

use bindings::exports::switchyard::consumer::websocket_consumer::Guest as Consumer;
use bindings::exports::wasi::http::incoming_handler::Guest as HttpHandler;
use bindings::switchyard::consumer::host::{self, Connection, Level, Scope};
use bindings::switchyard::consumer::http_context;
use bindings::switchyard::consumer::types::{Frame, LayerError};
use bindings::wasi::http::types::{IncomingRequest, Method, ResponseOutparam};
use model::{Change, Refusal, Station};
use serde_json::{Value, json};

/// The dashboard page, served at `/`.
const DASHBOARD: &str = include_str!("dashboard.html");

/// Close code of a feed for a station that does not exist.
const UNKNOWN_STATION: u16 = 4404;

/// Seconds a client should wait before retrying when the store or the
/// layer is down.
const RETRY_AFTER_SECS: u32 = 5;

/// The route of one station; the write routes extend it.
const STATION_ROUTE: &str = "api/stations/<int:station_id>/";

/// The event type written changes are published as.
const UPDATE_EVENT: &str = "station.update";

struct Stations;

/// The group a station's changes go to.
fn group_of(id: u64) -> String {
    format!("station_{id}")
}

fn kwarg(pairs: &[(String, String)], key: &str) -> Option<u64> {
    pairs
        .iter()
        .find_map(|(name, value)| (name == key).then(|| value.parse().ok()))
        .flatten()
}

fn refuse(out: ResponseOutparam, refusal: &Refusal) {
    let retry = RETRY_AFTER_SECS.to_string();
    let extra: &[(&str, &str)] = if refusal.status == 503 {
        &[("retry-after", &retry)]
    } else {
        &[]
    };
    let writer = http::Writer::start(out, refusal.status, "application/json", extra);
    let _ = writer.write(refusal.body().to_string().as_bytes());
    writer.finish();
}

/// A verified token must carry `"operator": true`; with no token (no
/// `[auth]`, or the route not in `required-routes`) writes are open.
fn check_operator() -> Result<(), Refusal> {
    if http_context::user().is_none() && http_context::claims().is_none() {
        return Ok(());
    }
    let claims: Value = http_context::claims()
        .and_then(|claims| serde_json::from_str(&claims).ok())
        .unwrap_or(Value::Null);
    if claims["operator"] == Value::Bool(true) {
        Ok(())
    } else {
        Err(Refusal::new(
            403,
            "operator_required",
            "this token lacks the claim \"operator\": true",
        ))
    }
}

fn write(request: &IncomingRequest, id: u64, action: &str) -> Result<Station, Refusal> {
    check_operator()?;
    // An unknown station is 404 whatever the body.
    if !store::station_ids()?.contains(&id) {
        return Err(store::unknown(id));
    }
    let body = http::read_body(request).map_err(Refusal::bad_request)?;
    let change = Change::parse(action, &body)?;
    let station = store::update(id, &change)?;
    let event = json!({
        "type": UPDATE_EVENT,
        "change": change.name(),
        "station": station.to_json(),
    });
    // The change is stored: a layer that is down costs the live update,
    // not the write.
    if let Err(err) = host::group_send(&group_of(id), &event.to_string()) {
        host::log(
            Level::Warn,
            &format!("station {id} changed but not published: {err:?}"),
        );
    }
    Ok(station)
}

impl HttpHandler for Stations {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let route = http_context::route();
        let id = kwarg(&http_context::url_route(), "station_id");
        let method = request.method();
        // `swaps`, `charging`, ... for the write routes.
        let action = route
            .strip_prefix(STATION_ROUTE)
            .map(|action| action.trim_end_matches('/'))
            .filter(|action| !action.is_empty());
        let answer = match (route.as_str(), id, method, action) {
            ("", _, Method::Get, _) => {
                return http::respond(out, 200, "text/html; charset=utf-8", DASHBOARD.as_bytes());
            }
            ("api/stations/", _, Method::Get, _) => store::stations()
                .map(|stations| Value::from_iter(stations.iter().map(Station::to_json))),
            (STATION_ROUTE, Some(id), Method::Get, _) => {
                store::station(id).map(|station| station.to_json())
            }
            (_, Some(id), Method::Post, Some(action)) => {
                write(&request, id, action).map(|station| station.to_json())
            }
            ("" | "api/stations/" | STATION_ROUTE, ..) => {
                return http::method_not_allowed(out, "GET");
            }
            _ => return http::method_not_allowed(out, "POST"),
        };
        match answer {
            Ok(value) => http::json(out, 200, &value),
            Err(refusal) => refuse(out, &refusal),
        }
    }
}

impl Consumer for Stations {
    fn connect(conn: &Connection, scope: &Scope) {
        let only = kwarg(&scope.url_route(), "station_id");
        let ids = match only {
            Some(id) => store::station(id).map(|_| vec![id]),
            None => store::station_ids(),
        };
        let ids = match ids {
            Ok(ids) => ids,
            Err(refusal) if refusal.status == 404 => {
                conn.close(UNKNOWN_STATION, Some("unknown station"));
                return;
            }
            Err(refusal) => {
                host::log(Level::Warn, &format!("feed refused: {}", refusal.detail));
                conn.refuse(503, Some(RETRY_AFTER_SECS));
                return;
            }
        };
        // Join first, then read: a change made meanwhile arrives after the
        // snapshot (perhaps already in it; `version` tells).
        for id in &ids {
            if let Err(err) = conn.group_add(&group_of(*id)) {
                host::log(
                    Level::Warn,
                    &format!("cannot join a station group: {err:?}"),
                );
                if let LayerError::Unavailable(_) = err {
                    conn.refuse(503, Some(RETRY_AFTER_SECS));
                } else {
                    conn.close(UNKNOWN_STATION, Some("cannot join the station's group"));
                }
                return;
            }
        }
        let fresh = match only {
            Some(id) => store::station(id).map(|station| vec![station]),
            None => store::stations(),
        };
        let Ok(stations) = fresh else {
            conn.refuse(503, Some(RETRY_AFTER_SECS));
            return;
        };
        conn.accept(None);
        let snapshot = json!({
            "type": "snapshot",
            "stations": Value::from_iter(stations.iter().map(Station::to_json)),
        });
        conn.send(&Frame::Text(snapshot.to_string()));
    }

    fn receive(conn: &Connection, _message: Frame) {
        let error = json!({"error": "read_only", "detail": "this feed takes no messages"});
        conn.send(&Frame::Text(error.to_string()));
    }

    fn event(conn: &Connection, event: String) {
        // The station is passed on as the text it came in, unparsed: a
        // change reaches every feed socket of its station, so this runs
        // once per delivery.
        #[derive(serde::Deserialize)]
        struct Update<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            #[serde(default, borrow)]
            change: Option<&'a serde_json::value::RawValue>,
            #[serde(borrow)]
            station: &'a serde_json::value::RawValue,
        }
        let update = match serde_json::from_str::<Update<'_>>(&event) {
            Ok(update) if update.kind == UPDATE_EVENT && update.station.get().starts_with('{') => {
                update
            }
            _ => {
                host::log(Level::Warn, &format!("ignoring event {event}"));
                return;
            }
        };
        let change = update.change.map_or("null", |change| change.get());
        let frame = format!(
            r#"{{"type":"update","change":{change},"station":{}}}"#,
            update.station.get()
        );
        conn.send(&Frame::Text(frame));
    }

    fn disconnect(_conn: &Connection, _code: u16) {}
}
