//! The chat example built with its `v2` feature: a second version of the
//! same plugin for the hot-swap tests (installed as `chat.wasm` over the
//! first). The source is the example's.

#[path = "../../chat/src/lib.rs"]
mod chat;
