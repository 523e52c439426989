//! End-to-end tests: the real server on 127.0.0.1:0, a real WebSocket
//! client, and the plugins built by `cargo xtask test`.

mod access;
mod browser;
mod cancellation;
mod chat;
mod deflate;
mod echo;
mod fairness;
mod handshake;
mod hotswap;
mod http;
mod isolation;
mod keyvalue;
mod layer;
mod migration_load;
mod protocol;
mod redis;
mod redis_faults;
mod refusal;
mod shared;
mod shutdown;
mod stations;
mod versions;
mod watcher;
mod wslimits;
