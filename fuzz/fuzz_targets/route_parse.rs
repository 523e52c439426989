//! Any text given to `RoutePattern::parse` either fails with an error or
//! gives a pattern that keeps its text, parses again, and matches paths
//! built from it without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod route_common;
use route_common::route::RoutePattern;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pattern) = RoutePattern::parse(text) else {
        return;
    };
    assert_eq!(pattern.as_str(), text);
    let again = RoutePattern::parse(pattern.as_str()).expect("a parsed pattern parses again");
    assert_eq!(again.shape(), pattern.shape());
    // The pattern's own text and its shape as paths: no panic either way.
    let _ = pattern.matches(text);
    let _ = pattern.matches(pattern.shape());
    let names: Vec<&str> = pattern.param_names().collect();
    if let Some(kwargs) = pattern.matches(text) {
        assert_eq!(kwargs.len(), names.len());
    }
});
