//! `switchyard new` and `switchyard build`, from zero to a live plugin in
//! three commands, for each language: `new`, `build`, then `switchyard
//! serve --plugins DIR/dist` (the real binary on 127.0.0.1:0) with a real
//! WebSocket client chatting in a room; then the generated project's own
//! test (cargo test with switchyard-testing, pytest, node --test) must pass.
//!
//! The toolchains are the ones `cargo xtask plugins` installs:
//! componentize-py in `target/sdk-tools/venv` (put on PATH here, as a user's
//! venv would be), componentize-js in `sdk/js/node_modules`. Rust projects
//! build into the shared `target/templates/` so wasmtime (for the
//! generated test's harness) is compiled once, not per run.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::json;
use switchyard_tests::Client;
use switchyard_tests::redis_support::{repo_root as root, switchyard_bin};
use switchyard_tests::test_compile_cache;
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// Variables of the outer cargo that must not reach a nested cargo build
/// of a project that is not part of this workspace.
const LEAKY_VARS: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_MAKEFLAGS",
    "CARGO_TARGET_DIR",
];

/// A command with the environment of a plugin author: the sdk-tools venv
/// first on PATH, the shared target directory for Rust builds, a compile
/// cache for the servers the generated tests start.
fn command(program: &Path, config: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| n.starts_with("CARGO_PKG_")) {
            command.env_remove(name);
        }
    }
    for name in LEAKY_VARS {
        command.env_remove(name);
    }
    let venv = root().join("target/sdk-tools/venv/bin");
    let mut path = vec![venv];
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    command
        .env("PATH", std::env::join_paths(path).expect("a PATH"))
        .env("CARGO_TARGET_DIR", root().join("target/templates"))
        .env("SWITCHYARD_BIN", switchyard_bin())
        .env("SWITCHYARD_CONFIG", config)
        .env_remove("SWITCHYARD_SDK")
        .env_remove("SWITCHYARD_PLUGINS")
        .env_remove("REDIS_URL")
        .kill_on_drop(true);
    command
}

fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn run(mut command: tokio::process::Command, what: &str) -> Output {
    let output = command
        .output()
        .await
        .unwrap_or_else(|err| panic!("cannot run {what}: {err}"));
    assert!(output.status.success(), "{what}: {}", describe(&output));
    output
}

/// A scratch directory with the config file the servers share: the
/// in-process tests' compile cache, so a component compiles once.
struct Scratch {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = dir.path().join("switchyard.toml");
        let cache = test_compile_cache().display().to_string();
        std::fs::write(&config, format!("compile-cache = {cache:?}\n")).expect("config");
        Self { dir, config }
    }

    fn switchyard(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = command(&switchyard_bin(), &self.config);
        command.args(args).current_dir(self.dir.path());
        command
    }
}

/// `switchyard new NAME --lang LANG`, then `switchyard build NAME`: the
/// first two of the three commands. Returns the project directory.
async fn new_and_build(scratch: &Scratch, name: &str, lang: &str) -> PathBuf {
    run(
        scratch.switchyard(&["new", name, "--lang", lang]),
        "switchyard new",
    )
    .await;
    let project = scratch.dir.path().join(name);
    assert!(project.join(format!("{name}.toml")).is_file());
    run(scratch.switchyard(&["build", name]), "switchyard build").await;
    for file in [format!("{name}.wasm"), format!("{name}.toml")] {
        assert!(project.join("dist").join(&file).is_file(), "dist/{file}");
    }
    project
}

/// The third command, `switchyard serve --plugins NAME/dist` on a free
/// port; returns the process and the address it says it listens on.
async fn serve(scratch: &Scratch, name: &str) -> (tokio::process::Child, String) {
    let dist = format!("{name}/dist");
    let mut server = scratch
        .switchyard(&["serve", "-b", "127.0.0.1", "-p", "0", "--plugins", &dist])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("switchyard serve");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    let mut address = None;
    // The server binds first and compiles its plugins in the background:
    // it is ready once it says they are loaded.
    let address = loop {
        let line = lines
            .next_line()
            .await
            .expect("reading the server's output")
            .unwrap_or_else(|| panic!("switchyard serve exited; it said {seen:#?}"));
        if let Some(rest) = line.split("listening on http://").nth(1) {
            address = rest.split_whitespace().next().map(str::to_owned);
        } else if line.starts_with("  plugins loaded:")
            && let Some(address) = address.take()
        {
            break address;
        }
        seen.push(line);
    };
    // Keep reading so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (server, address)
}

/// Connects to `url` once the plugin answers: an interpreter's shared
/// instance can take seconds to make on a busy machine.
async fn first_client(url: &str) -> Client {
    for _ in 0..60 {
        let attempt = tokio::time::timeout(
            Duration::from_secs(2),
            tokio_tungstenite::connect_async(url),
        )
        .await;
        if let Ok(Ok((ws, _))) = attempt {
            drop(ws);
            break;
        }
    }
    Client::connect_url(url).await
}

/// Zero to live: new, build, serve; two members of a room hear each other,
/// a third room hears nothing of it.
async fn zero_to_live(scratch: &Scratch, name: &str, lang: &str) -> PathBuf {
    let project = new_and_build(scratch, name, lang).await;
    let (mut server, address) = serve(scratch, name).await;
    let url = |room: &str| format!("ws://{address}/ws/{name}/{room}/");
    let mut alice = first_client(&url("lobby")).await;
    let mut bob = Client::connect_url(&url("lobby")).await;
    let mut carol = Client::connect_url(&url("other")).await;
    alice.send_json(&json!({"message": "hello"})).await;
    assert_eq!(
        alice.recv_json().await,
        json!({"message": "hello"}),
        "{lang}"
    );
    assert_eq!(bob.recv_json().await, json!({"message": "hello"}), "{lang}");
    carol.send_json(&json!({"message": "marker"})).await;
    // Had alice's message reached carol, it would come before the marker.
    carol
        .expect_nothing_before(&[json!({"message": "marker"})])
        .await;
    for client in [alice, bob, carol] {
        client.close().await;
    }
    server.kill().await.expect("stop the server");
    project
}

#[tokio::test]
async fn a_rust_plugin_goes_live_in_three_commands_and_passes_its_own_test() {
    let scratch = Scratch::new();
    let project = zero_to_live(&scratch, "hello_rust", "rust").await;
    let cargo: PathBuf = std::env::var_os("CARGO")
        .unwrap_or_else(|| OsString::from("cargo"))
        .into();
    let mut test = command(&cargo, &scratch.config);
    test.args(["test", "--quiet"]).current_dir(&project);
    let output = run(test, "cargo test in the generated Rust project").await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{}",
        describe(&output)
    );
}

#[tokio::test]
async fn a_python_plugin_goes_live_in_three_commands_and_passes_its_own_test() {
    let scratch = Scratch::new();
    let project = zero_to_live(&scratch, "hello_py", "python").await;
    let python = root().join("target/sdk-tools/venv/bin/python");
    assert!(
        python.is_file(),
        "{} not found: run `cargo xtask plugins` (it makes the venv)",
        python.display()
    );
    let mut test = command(&python, &scratch.config);
    test.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .current_dir(&project);
    let output = run(test, "pytest in the generated Python project").await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("1 passed"), "{}", describe(&output));
}

#[tokio::test]
async fn a_javascript_plugin_goes_live_in_three_commands_and_passes_its_own_test() {
    let scratch = Scratch::new();
    let project = zero_to_live(&scratch, "hello_js", "js").await;
    let mut test = command(Path::new("node"), &scratch.config);
    test.arg("--test").current_dir(&project);
    let output = run(test, "node --test in the generated JavaScript project").await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("# pass 1") && stdout.contains("# fail 0"),
        "{}",
        describe(&output)
    );
}

#[tokio::test]
async fn bad_names_and_used_directories_are_refused_with_clear_errors() {
    let scratch = Scratch::new();
    let output = scratch
        .switchyard(&["new", "My-Plugin", "--lang", "rust"])
        .output()
        .await
        .expect("switchyard new");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(stderr.contains("\"My-Plugin\""), "{stderr}");
    std::fs::create_dir(scratch.dir.path().join("taken")).expect("mkdir");
    std::fs::write(scratch.dir.path().join("taken/file"), "x").expect("write");
    let output = scratch
        .switchyard(&["new", "taken", "--lang", "python"])
        .output()
        .await
        .expect("switchyard new");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(stderr.contains("not empty"), "{stderr}");
    let output = scratch
        .switchyard(&["build", "taken"])
        .output()
        .await
        .expect("switchyard build");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a plugin project"), "{stderr}");
}
