// The host's route module, compiled on its own (it needs only regex, serde
// and thiserror), so the fuzz build stays small.
#[allow(dead_code, unused_imports)] // Not every item is used by every target.
#[path = "../../runtime/host/src/route.rs"]
pub mod route;
