//! The echo consumer: sends every frame back to the client that sent it.
//!
//! Route: `ws/echo/`. Wire protocol: the server accepts every connection
//! without a subprotocol; a text frame comes back as the same text frame, a
//! binary frame as the same binary frame. Channel-layer events are logged at
//! debug level and otherwise ignored.

#[allow(unsafe_code)] // wit-bindgen's canonical-ABI glue needs `unsafe`.
mod bindings {
    wit_bindgen::generate!({ path: "../../wit", world: "consumer", generate_all });

    use super::Echo;
    export!(Echo);
}

use bindings::exports::switchyard::consumer::websocket_consumer::Guest;
use bindings::switchyard::consumer::host::{self, Connection, Level, Scope};
use bindings::switchyard::consumer::types::Frame;

struct Echo;

impl Guest for Echo {
    fn connect(conn: &Connection, _scope: &Scope) {
        conn.accept(None);
    }

    fn receive(conn: &Connection, message: Frame) {
        conn.send(&message);
    }

    fn event(_conn: &Connection, event: String) {
        host::log(
            Level::Debug,
            &format!("ignoring channel-layer event {event}"),
        );
    }

    fn disconnect(_conn: &Connection, _code: u16) {}
}
