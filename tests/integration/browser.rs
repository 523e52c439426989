//! The stations dashboard in a real browser: Debian's Chromium, headless,
//! driven by playwright-core (`tests/browser/dashboard.mjs`, pinned in
//! `tests/browser/package-lock.json`). The page at `/` shows a swap
//! recorded through the API without a reload, and after the server is
//! killed and started again it reconnects and shows the current data.
//!
//! Needs `chromium` (Debian: `apt-get install chromium`; or `$CHROMIUM`),
//! `node` and `npm ci` in `tests/browser/` (`cargo xtask test` runs it).
//! Nothing here skips: a missing piece fails the test saying what to
//! install.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use switchyard_tests::PATIENCE;
use switchyard_tests::http_client::request_at;
use switchyard_tests::redis_support::{RedisServer, ServerProcess};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{ChildStdin, Command};

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Fails the test, saying what to install, if a piece is missing.
fn check_prerequisites() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "the browser test needs Chromium at {chromium} (Debian: apt-get install chromium; \
         or set CHROMIUM to its path); .ci/run installs it"
    );
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|out| out.status.success()),
        "the browser test needs `node` on PATH (Debian: apt-get install nodejs npm)"
    );
    assert!(
        browser_dir().join("node_modules/playwright-core").is_dir(),
        "the browser test needs playwright-core: run `npm ci` in tests/browser/ \
         (`cargo xtask test` does)"
    );
}

/// The script's next step line, checked to be `step`.
async fn expect_step(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    step: &str,
) -> Value {
    // The script's own waits bound each step; this only turns a hang of the
    // script itself into a failure.
    let line = tokio::time::timeout(PATIENCE * 24, lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("the browser script never reached {step:?}"))
        .expect("read the script's output")
        .unwrap_or_else(|| {
            panic!("the browser script ended before {step:?} (its stderr is above)")
        });
    let got: Value =
        serde_json::from_str(&line).unwrap_or_else(|err| panic!("script printed {line:?}: {err}"));
    assert_eq!(got["step"], step, "{got}");
    got
}

async fn tell(stdin: &mut ChildStdin, word: &str) {
    stdin
        .write_all(format!("{word}\n").as_bytes())
        .await
        .expect("write to the browser script");
}

#[tokio::test]
async fn the_dashboard_shows_swaps_live_and_reconnects_after_a_restart() {
    check_prerequisites();
    // Redis keeps the inventory across the restart; a second process on it
    // takes a swap while the page's server is down.
    let redis = RedisServer::start();
    let mut server = ServerProcess::start(&redis.url());
    let other = ServerProcess::start(&redis.url());
    let port = server.addr.port();

    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser/dashboard.png");
    std::fs::create_dir_all(screenshot.parent().expect("a parent")).expect("target/browser/");
    let mut script = Command::new("node")
        .arg(browser_dir().join("dashboard.mjs"))
        .arg(format!("http://{}", server.addr))
        .arg(&screenshot)
        .current_dir(browser_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node");
    let mut stdin = script.stdin.take().expect("piped stdin");
    let mut lines = BufReader::new(script.stdout.take().expect("piped stdout")).lines();

    let swapped = expect_step(&mut lines, "swapped").await;
    println!(
        "browser: the swap showed on the page {} ms after the POST was sent",
        swapped["latency_ms"]
    );
    assert!(
        screenshot.is_file(),
        "a screenshot at {}",
        screenshot.display()
    );

    server.kill();
    tell(&mut stdin, "killed").await;
    expect_step(&mut lines, "disconnected").await;

    let reply = request_at(other.addr, "POST", "/api/stations/2/swaps/", &[], b"{}").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let _restarted = ServerProcess::start_on(&redis.url(), port, &[]);
    tell(&mut stdin, "restarted").await;
    expect_step(&mut lines, "reconnected").await;

    let status = tokio::time::timeout(PATIENCE, script.wait())
        .await
        .expect("the script ends")
        .expect("the script's status");
    assert!(status.success(), "the browser script failed: {status}");
}
