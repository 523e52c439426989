//! The `switchyard` binary itself. Having an integration test here also makes
//! `cargo test --workspace` build the binary (with the test build's features),
//! which the multi-process Redis tests in `tests/` run.

use std::io::Read as _;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// With Redis unreachable the server still starts, and logs an error naming
/// the Redis URL with its password redacted, then keeps retrying.
#[test]
fn unreachable_redis_is_logged_with_the_url_redacted_and_the_server_serves() {
    let redis_port = free_port();
    let port = free_port();
    let plugins = std::env::temp_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "serve",
            "-b",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--plugins",
        ])
        .arg(&plugins)
        .env(
            "REDIS_URL",
            format!("redis://user:hunter2@127.0.0.1:{redis_port}/0"),
        )
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchyard");
    // Serving: the port accepts connections while Redis is down.
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = child.kill();
    let _ = child.wait();
    let mut output = String::new();
    for mut stream in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let _ = stream.read_to_string(&mut output);
    }
    assert!(
        output.contains("cannot connect to Redis")
            && output.contains(&format!("redis://user:***@127.0.0.1:{redis_port}/0")),
        "{output}"
    );
    assert!(!output.contains("hunter2"), "{output}");
}
