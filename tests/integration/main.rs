//! End-to-end tests: the real server on 127.0.0.1:0, a real WebSocket
//! client, and the plugins built by `cargo xtask test`.

mod access;
mod admin_listener;
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
mod log_format;
mod metrics;
mod migration_load;
mod protocol;
mod publish;
mod redis;
mod redis_cluster;
mod redis_faults;
mod redis_hosts;
mod redis_sentinel;
mod refusal;
mod sdk_chats;
mod sdk_harness;
mod shared;
mod shutdown;
mod stations;
mod templates;
mod tls;
mod versions;
mod watcher;
mod wslimits;
