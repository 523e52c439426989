//! The Python and JavaScript test harnesses (`sdk/python/switchyard_testing.py`,
//! `sdk/js/testing.js`) run the chats' own tests (`plugins/chat_py/tests`
//! with pytest, `plugins/chat_js/chat.test.mjs` with node:test) against the
//! built `switchyard` binary and the components in `target/test-plugins/sdk/`;
//! this checks that every one of them ran and passed. pytest and websockets
//! come from `cargo xtask plugins` (target/sdk-tools/venv), `ws` from
//! `npm ci` in sdk/js.

use std::path::Path;
use std::process::Output;

use switchyard_tests::redis_support::{repo_root as root, switchyard_bin};
use switchyard_tests::{test_compile_cache, test_plugins_dir};

/// Runs `program args` at the repository root with the harness's
/// environment; never blocks the test's runtime.
async fn run(program: &Path, args: &[&str]) -> Output {
    let sdk_plugins = test_plugins_dir().join("sdk");
    assert!(
        sdk_plugins.join("chat_py.wasm").is_file() && sdk_plugins.join("chat_js.wasm").is_file(),
        "chat_py/chat_js not built in {}: run `cargo xtask plugins`",
        sdk_plugins.display()
    );
    // The servers share the in-process tests' compile cache, so the
    // components compile once for the whole suite.
    let config = tempfile::tempdir().expect("a temporary directory");
    let config_file = config.path().join("switchyard.toml");
    let cache = test_compile_cache().display().to_string();
    std::fs::write(&config_file, format!("compile-cache = {cache:?}\n"))
        .expect("write the config file");
    tokio::process::Command::new(program)
        .args(args)
        .current_dir(root())
        .env("SWITCHYARD_BIN", switchyard_bin())
        .env("SWITCHYARD_PLUGINS", sdk_plugins)
        .env("SWITCHYARD_CONFIG", &config_file)
        .env_remove("REDIS_URL")
        .output()
        .await
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", program.display()))
}

fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn the_python_chat_passes_its_pytest_suite() {
    let python = root().join("target/sdk-tools/venv/bin/python");
    assert!(
        python.is_file(),
        "{} not found: run `cargo xtask plugins` (it makes the venv)",
        python.display()
    );
    let output = run(
        &python,
        &[
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "plugins/chat_py",
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(stdout.contains("5 passed"), "{}", describe(&output));
}

#[tokio::test]
async fn the_javascript_chat_passes_its_node_test_suite() {
    let output = run(
        Path::new("node"),
        &["--test", "plugins/chat_js/chat.test.mjs"],
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        stdout.contains("# pass 5") && stdout.contains("# fail 0"),
        "{}",
        describe(&output)
    );
}
