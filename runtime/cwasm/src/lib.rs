//! The one `unsafe` call of Switchyard, fenced in a crate of its own
//! because the rest of the workspace forbids `unsafe_code`: turning the
//! bytes of a precompiled component (`.cwasm`, wasmtime's serialised form)
//! back into a [`Component`].
//!
//! `Component::deserialize` is `unsafe` because wasmtime maps the bytes as
//! executable machine code: bytes that did not come from wasmtime's own
//! `precompile_component` could do anything. It does check a version and
//! configuration header itself, but not the code. The caller
//! (`switchyard_host`'s loader) only passes bytes that
//! - come from a `.cwasm` file in the operator's plugin directory, beside
//!   the plugin's `.wasm` (the directory is trusted exactly as much as the
//!   `.wasm` files it holds, which the server runs anyway);
//! - carry the header that `switchyard compile` writes, with the SHA-256 of
//!   the `.wasm` they were compiled from, equal to the `.wasm` now there
//!   (a stale file is refused);
//! - pass [`Engine::detect_precompiled`] as a component.

use wasmtime::component::Component;
use wasmtime::{Engine, Precompiled};

/// Deserialize a precompiled component for `engine`. Refuses bytes that
/// [`Engine::detect_precompiled`] does not take for a component, and
/// returns wasmtime's error when they were compiled by another wasmtime
/// version or engine configuration.
///
/// Only for bytes written by `switchyard compile` (see the crate docs).
pub fn deserialize_component(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    if Engine::detect_precompiled(bytes) != Some(Precompiled::Component) {
        wasmtime::bail!("not a precompiled wasmtime component");
    }
    // SAFETY: the bytes are the output of `Engine::precompile_component`,
    // as the crate docs say: written by `switchyard compile` into the
    // operator's plugin directory, checked by the caller against the hash
    // of the `.wasm` beside them, and recognised above as a precompiled
    // component. wasmtime checks its own version and the engine's
    // configuration before using them.
    #[allow(unsafe_code)]
    unsafe {
        Component::deserialize(engine, bytes)
    }
}
