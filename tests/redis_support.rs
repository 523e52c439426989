//! Real dependencies for the Redis layer tests: a `redis-server` on a free
//! loopback port (killed on drop), the real channels_redis in a Python venv
//! (created under `target/` on first use from `tests/python/requirements.txt`),
//! and separate `switchyard` server processes.
//!
//! Nothing here skips: a missing `redis-server`, Python or binary fails the
//! test with a message saying what to install or build.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{ChildStdout, Command as AsyncCommand};

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on port {port} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `redis-server` on a free loopback port, with no persistence (a restart
/// loses everything, like a crashed cache). Killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        let port = free_port();
        let mut server = Self { port, child: None };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start redis-server ({err}): the Redis layer tests need it on PATH \
                     (Debian/Ubuntu: apt-get install redis-server; .ci/run installs it)"
                )
            });
        self.child = Some(child);
        wait_for_port(self.port, "redis-server");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A plain client for looking at or planting raw data.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("valid URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis-server")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lies inside the repository")
        .to_path_buf()
}

/// The venv's python, created with the pinned packages on first use.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(make_venv)
        .clone()
        .unwrap_or_else(|err| panic!("{err}"))
}

fn make_venv() -> Result<PathBuf, String> {
    let root = repo_root();
    let requirements = root.join("tests/python/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .map_err(|err| format!("cannot read {}: {err}", requirements.display()))?;
    let venv = root.join("target/redis-interop-venv");
    let marker = venv.join("switchyard-requirements.txt");
    let python = venv.join("bin/python");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) && python.exists()
    {
        return Ok(python);
    }
    let base = ["python3.11", "python3"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .ok_or_else(|| {
            "the Redis interop tests need python3.11 (or python3) with venv and pip on PATH"
                .to_owned()
        })?;
    let run = |command: &mut Command, what: &str| -> Result<(), String> {
        let output = command
            .output()
            .map_err(|err| format!("cannot run {what}: {err}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed: {}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    };
    let _ = std::fs::remove_dir_all(&venv);
    run(
        Command::new(base).args(["-m", "venv"]).arg(&venv),
        "creating the Python venv",
    )?;
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements),
        "pip install -r tests/python/requirements.txt (needs PyPI)",
    )?;
    std::fs::write(&marker, wanted).map_err(|err| format!("cannot write {marker:?}: {err}"))?;
    Ok(python)
}

/// The channels_redis CONFIG for the peer script. The host is a dict with no
/// socket timeout: redis-py 8's default of 5 s equals the 5 s BZPOPMIN and
/// makes idle receivers fail (channels_redis#422).
pub fn python_config(redis_url: &str, keys: &[&str]) -> Value {
    let mut config =
        serde_json::json!({ "hosts": [{"address": redis_url, "socket_timeout": null}] });
    if !keys.is_empty() {
        config["symmetric_encryption_keys"] = serde_json::json!(keys);
    }
    config
}

fn peer_script() -> PathBuf {
    repo_root().join("tests/python/peer.py")
}

/// Runs `peer.py` to completion (`send`, `group_send`), failing with its stderr.
pub async fn python_run(config: &Value, args: &[&str]) {
    let output = AsyncCommand::new(python())
        .arg(peer_script())
        .arg(config.to_string())
        .args(args)
        .output()
        .await
        .expect("run peer.py");
    assert!(
        output.status.success(),
        "peer.py {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A running `peer.py listen`: a Python channel in a group.
#[derive(Debug)]
pub struct PythonListener {
    pub channel: String,
    lines: Lines<BufReader<ChildStdout>>,
    _child: tokio::process::Child,
}

impl PythonListener {
    /// Starts a listener that joins `group` and waits for `count` messages.
    pub async fn start(config: &Value, group: &str, count: usize) -> Self {
        let mut child = AsyncCommand::new(python())
            .arg(peer_script())
            .arg(config.to_string())
            .args(["listen", group, &count.to_string(), "20"])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start peer.py listen");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = next_line(&mut lines).await;
        let channel = first["channel"]
            .as_str()
            .unwrap_or_else(|| panic!("peer.py listen said {first}"))
            .to_owned();
        Self {
            channel,
            lines,
            _child: child,
        }
    }

    /// The next message: `{"message": ..., "bytes_keys": [...]}`.
    pub async fn next(&mut self) -> Value {
        next_line(&mut self.lines).await
    }
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("peer.py answered within 20 s")
        .expect("read peer.py output")
        .expect("peer.py ended early (see its stderr above)");
    serde_json::from_str(&line).unwrap_or_else(|err| panic!("peer.py printed {line:?}: {err}"))
}

/// The `switchyard` binary: `SWITCHYARD_BIN` if set, else
/// `target/debug/switchyard`, which `cargo test --workspace` builds (the
/// switchyard package has an integration test).
pub fn switchyard_bin() -> PathBuf {
    let path = std::env::var_os("SWITCHYARD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug/switchyard"));
    assert!(
        path.is_file(),
        "switchyard binary not found at {}: run `cargo xtask test` or \
         `cargo test --workspace` (they build it), or set SWITCHYARD_BIN",
        path.display()
    );
    path
}

/// A separate `switchyard serve` process on a free port, killed on drop.
#[derive(Debug)]
pub struct ServerProcess {
    pub addr: SocketAddr,
    child: Child,
}

impl ServerProcess {
    pub fn start(redis_url: &str) -> Self {
        let port = free_port();
        let child = Command::new(switchyard_bin())
            .args([
                "serve",
                "-b",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--plugins",
            ])
            .arg(crate::test_plugins_dir())
            .env("REDIS_URL", redis_url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start the switchyard binary");
        wait_for_port(port, "switchyard");
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
