//! Switchyard: Django Channels rebuilt in Rust, with consumers as
//! WebAssembly components.
//!
//! This crate is the server: HTTP and WebSocket (axum), the handshake and
//! its answers, one task per socket, configuration and shutdown. It drives
//! [`switchyard_host`] (plugins) and builds a [`switchyard_layer`] channel
//! layer; dependencies run one way, server → host → layer.
//!
//! Modules:
//! - [`admin`]: the admin API (`/_switchyard/plugins`) and its client;
//!   every admin and health route, on the public port or the admin
//!   listener (`[admin] bind`).
//! - `access` (private): allowed origins and the client address behind
//!   trusted proxies.
//! - `auth` (private): JWT verification and which routes require it.
//! - [`cli`]: the `switchyard` command line.
//! - [`compile_cli`]: `switchyard compile`, components precompiled to
//!   `.cwasm`.
//! - [`config`]: the one strict configuration.
//! - [`counters`]: refusals and forced closes, counted.
//! - `metrics` (private): `/_switchyard/metrics`, the Prometheus
//!   text format.
//! - `ratelimit` (private): connection caps and rate limits.
//! - [`server`]: [`Server`] and [`run`]: build, serve, shut down.
//! - `handshake` (private): every request lands here; routing a WebSocket
//!   request and answering its handshake.
//! - `deflate` (private): permessage-deflate, negotiated per connection.
//! - `health` (private): `/healthz` and `/readyz` for load balancers.
//! - `http_consumer` (private): the `http` side of the protocol router,
//!   plain HTTP requests served by plugins' `wasi:http` handlers.
//! - `loading` (private): 503 with `Retry-After` for a path whose plugin is
//!   still compiling.
//! - `publish` (private): `POST /_switchyard/send` and `/group-send`.
//! - [`publish_cli`]: `switchyard send` and `switchyard group-send`.
//! - [`scaffold`]: `switchyard new`, plugin projects from templates.
//! - [`project_build`]: `switchyard build`, a project into `dist/`.
//! - `statics` (private): `[static]` files.
//! - `socket` (private): the task that owns one socket.
//! - `fastlane` (private): host-side broadcast on the socket: ready frames
//!   written without a guest call.
//! - `upgrade` (private): the WebSocket handshake's checks and answer, and
//!   the upgraded socket's metered reads.
//! - [`shutdown`]: SIGTERM and ctrl-c.
//! - `tls` (private): `https://` and `wss://` on the public listener, with
//!   certificate reload.

mod access;
pub mod admin;
mod auth;
pub mod cli;
pub mod compile_cli;
pub mod config;
pub mod counters;
mod deflate;
mod fastlane;
mod handshake;
mod health;
mod http_consumer;
mod loading;
mod metrics;
pub mod project_build;
mod publish;
pub mod publish_cli;
mod ratelimit;
pub mod scaffold;
pub mod server;
pub mod shutdown;
mod socket;
mod statics;
mod tls;
mod upgrade;

pub use config::Config;
pub use counters::Counters;
pub use server::{Server, run};
