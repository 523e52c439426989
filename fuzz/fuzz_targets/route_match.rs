//! A pattern (first line) against a path (the rest): matching never
//! panics, and a match yields one kwarg per parameter, in pattern order.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod route_common;
use route_common::route::RoutePattern;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, path) = text.split_once('\n').unwrap_or((text, ""));
    let Ok(pattern) = RoutePattern::parse(pattern) else {
        return;
    };
    if let Some(kwargs) = pattern.matches(path) {
        let names: Vec<&str> = pattern.param_names().collect();
        let got: Vec<&str> = kwargs.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(got, names);
    }
});
