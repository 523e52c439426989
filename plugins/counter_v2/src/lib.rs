//! The counter test plugin built with its `v2` feature: a second version for
//! the hot-swap tests (installed as `counter.wasm` over the first).

#[path = "../../counter/src/lib.rs"]
mod counter;
