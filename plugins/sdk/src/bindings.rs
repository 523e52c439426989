//! The wit-bindgen bindings of the `migratable-consumer` world. Plugin code
//! never names anything here: [`crate::export!`] wires a consumer to the
//! generated exports.

#![allow(unsafe_code)] // wit-bindgen's canonical-ABI glue needs `unsafe`.
#![allow(missing_docs, unreachable_pub, clippy::all)]

wit_bindgen::generate!({
    path: "../../wit",
    world: "migratable-consumer",
    // The world includes the WASI interfaces the host links
    // (`wasi:cli/imports`); their bindings are generated too, and the ones
    // a plugin does not call cost nothing in the component.
    generate_all,
    // The export macro is invoked from the plugin crate (through
    // `switchyard_sdk::export!`), so it must be public and find the
    // generated types and the wit-bindgen runtime through this crate.
    pub_export_macro: true,
    export_macro_name: "__export_bindings",
    default_bindings_module: "::switchyard_sdk::bindings",
    runtime_path: "::switchyard_sdk::__private::wit_bindgen::rt",
});
