//! Real dependencies for the Redis layer tests: a `redis-server` on a unix
//! socket in a directory of its own (killed on drop), the real channels_redis
//! in a Python venv (created under `target/` on first use from
//! `tests/python/requirements.txt`), and separate `switchyard` server
//! processes on ports the kernel picks.
//!
//! No address is chosen by binding a port, releasing it and handing it on:
//! another process may take it in between. Redis listens on its own socket
//! file; a `switchyard` process binds port 0 and says which port it got.
//!
//! Nothing here skips: a missing `redis-server`, Python or binary fails the
//! test with a message saying what to install or build.

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader as AsyncBufReader, Lines};
use tokio::process::{ChildStdout, Command as AsyncCommand};

/// How long a process started here may take to be ready: generous, because it
/// only turns a hang into a failure on a slow machine.
const STARTUP_PATIENCE: Duration = Duration::from_secs(60);

/// A `redis-server` with no persistence (a restart loses everything, like a
/// crashed cache), listening on a unix socket in a temporary directory, and
/// on a loopback TCP port only when asked. Killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    dir: tempfile::TempDir,
    tcp_port: Option<u16>,
    /// More `redis-server` options (`--requirepass`, `--replicaof`).
    extra_args: Vec<String>,
    child: Option<Child>,
}

/// How one start of `redis-server` ended.
enum Started {
    Ready,
    /// Another process had the TCP port.
    PortTaken,
}

impl RedisServer {
    /// A server on a unix socket only (`--port 0` turns TCP off): its address
    /// is a file of its own, so nothing else can take it.
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// A server on a unix socket only, started with more options, e.g.
    /// `["--requirepass", "secret"]` or `["--replicaof", "127.0.0.1", port]`.
    /// Readiness is still a connectable socket, so [`connection`](Self::connection)
    /// may need a password in the URL.
    pub fn start_with_args(args: &[&str]) -> Self {
        let mut server = Self::new(None);
        server.extra_args = args.iter().map(|arg| (*arg).to_owned()).collect();
        server.spawn_ready();
        server
    }

    /// A server that also listens on a loopback TCP port, for what needs TCP
    /// (a TLS handshake). Redis cannot pick a free port itself, so it gets
    /// one the kernel just had free; should another process take that port
    /// first, Redis fails to bind it and is started again on another.
    pub fn start_with_tcp() -> Self {
        for _ in 0..20 {
            let mut server = Self::new(Some(free_port()));
            if let Started::Ready = server.spawn() {
                return server;
            }
        }
        panic!("redis-server found 20 free ports taken in turn");
    }

    /// A server on a loopback TCP port (and its socket) started with more
    /// options, e.g. `["--replicaof", "127.0.0.1", port]` for a replica.
    pub fn start_with_tcp_args(args: &[&str]) -> Self {
        for _ in 0..20 {
            let mut server = Self::new(Some(free_port()));
            server.extra_args = args.iter().map(|arg| (*arg).to_owned()).collect();
            if let Started::Ready = server.spawn() {
                return server;
            }
        }
        panic!("redis-server found 20 free ports taken in turn");
    }

    fn new(tcp_port: Option<u16>) -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("switchyard-redis-")
                .tempdir()
                .expect("a directory for the redis socket"),
            tcp_port,
            extra_args: Vec::new(),
            child: None,
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    fn spawn_ready(&mut self) {
        if let Started::PortTaken = self.spawn() {
            panic!(
                "redis-server cannot bind port {:?}: another process took it",
                self.tcp_port
            );
        }
    }

    /// Starts `redis-server` and waits until its socket accepts connections
    /// (by then any TCP port is bound too: Redis binds every listener before
    /// serving, and exits if one fails).
    fn spawn(&mut self) -> Started {
        let log = self.dir.path().join("redis.log");
        let _ = std::fs::remove_file(&log);
        let port = self.tcp_port.unwrap_or(0).to_string();
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port])
            .arg("--unixsocket")
            .arg(self.socket())
            .args(["--unixsocketperm", "700"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            // A replica's full sync writes dump.rdb into the working directory.
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start redis-server ({err}): the Redis layer tests need it on PATH \
                     (Debian/Ubuntu: apt-get install redis-server; .ci/run installs it)"
                )
            });
        let deadline = Instant::now() + STARTUP_PATIENCE;
        while UnixStream::connect(self.socket()).is_err() {
            if let Some(status) = child.try_wait().expect("redis-server's status") {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                if self.tcp_port.is_some() && log.contains("Address already in use") {
                    return Started::PortTaken;
                }
                panic!("redis-server exited ({status}) before serving:\n{log}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server did not serve within {STARTUP_PATIENCE:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child = Some(child);
        Started::Ready
    }

    /// The server's URL: its unix socket.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The TCP port of a server from [`RedisServer::start_with_tcp`].
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
            .expect("a redis-server started with start_with_tcp")
    }

    /// Kills the server (SIGKILL: no goodbye to clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server without closing anything (SIGSTOP): connections
    /// and connects hang unanswered until [`thaw`](Self::thaw).
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("a running redis-server");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Starts the server again at the same address, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn_ready();
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

/// A port the kernel just had free (a process started on it may still find
/// it taken, and must then try another).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A Redis Sentinel (`redis-server sentinel.conf --sentinel`) on a loopback
/// TCP port, monitoring one master as `mymaster` with quorum 1 and short
/// timeouts (down after 300 ms, failover timeout 2 s), so that a killed
/// master is replaced within seconds. Killed on drop.
#[derive(Debug)]
pub struct SentinelProcess {
    dir: tempfile::TempDir,
    port: u16,
    master_port: u16,
    child: Option<Child>,
}

impl SentinelProcess {
    /// The name the sentinel monitors the master under.
    pub const MASTER_NAME: &'static str = "mymaster";

    /// Starts a sentinel for the master on `127.0.0.1:master_port`.
    pub fn start(master_port: u16) -> Self {
        for _ in 0..20 {
            let mut sentinel = Self {
                dir: tempfile::Builder::new()
                    .prefix("switchyard-sentinel-")
                    .tempdir()
                    .expect("a directory for the sentinel"),
                port: free_port(),
                master_port,
                child: None,
            };
            if let Started::Ready = sentinel.spawn() {
                return sentinel;
            }
        }
        panic!("redis-server --sentinel found 20 free ports taken in turn");
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Writes a fresh config (Sentinel rewrites its file as it learns) and
    /// starts the sentinel, waiting until its port accepts connections.
    fn spawn(&mut self) -> Started {
        let conf = self.dir.path().join("sentinel.conf");
        let log = self.dir.path().join("sentinel.log");
        let _ = std::fs::remove_file(&log);
        let name = Self::MASTER_NAME;
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\nlogfile {log}\n\
                 sentinel monitor {name} 127.0.0.1 {master} 1\n\
                 sentinel down-after-milliseconds {name} 300\n\
                 sentinel failover-timeout {name} 2000\n\
                 sentinel parallel-syncs {name} 1\n",
                port = self.port,
                dir = self.dir.path().display(),
                log = log.display(),
                master = self.master_port,
            ),
        )
        .expect("write sentinel.conf");
        let mut child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start redis-server --sentinel ({err}): the Sentinel tests need \
                     redis-server on PATH (Debian/Ubuntu: apt-get install redis-server)"
                )
            });
        let deadline = Instant::now() + STARTUP_PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = child.try_wait().expect("the sentinel's status") {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                if log.contains("Address already in use") {
                    return Started::PortTaken;
                }
                panic!("redis-server --sentinel exited ({status}) before serving:\n{log}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the sentinel did not serve within {STARTUP_PATIENCE:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child = Some(child);
        Started::Ready
    }

    /// Kills the sentinel (SIGKILL); its port then refuses connections.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the sentinel again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        if let Started::PortTaken = self.spawn() {
            panic!("the sentinel's port {} was taken meanwhile", self.port);
        }
    }

    /// The master's `(host, port)` as this sentinel names it now.
    pub async fn master(&self) -> Option<(String, u16)> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let reply: Option<(String, String)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(Self::MASTER_NAME)
            .query_async(&mut conn)
            .await
            .ok()?;
        let (host, port) = reply?;
        Some((host, port.parse().ok()?))
    }
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `probe` every 20 ms until it gives `Some`; fails the test as hung
/// after `patience` (the Redis fault tests wait on reconnects and
/// failovers, far longer than a client's read).
pub async fn wait_for_within<T, F: Future<Output = Option<T>>>(
    patience: Duration,
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /_switchyard/layer` on `addr` with the admin `token`: the layer's
/// health as JSON.
pub async fn layer_health(addr: SocketAddr, token: &str) -> Value {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET /_switchyard/layer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).expect("JSON body")
}

/// A loopback port that refuses connections for as long as the returned
/// socket lives: bound but never listening, so no other process can take
/// the port and answer on it.
pub fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind a loopback port");
    let port = socket.local_addr().expect("the bound address").port();
    (socket, port)
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
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
    /// The Python channel's name.
    pub channel: String,
    lines: Lines<AsyncBufReader<ChildStdout>>,
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
        let mut lines = AsyncBufReader::new(stdout).lines();
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

async fn next_line(lines: &mut Lines<AsyncBufReader<ChildStdout>>) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("peer.py answered within 20 s")
        .expect("read peer.py output")
        .expect("peer.py ended early (see its stderr above)");
    serde_json::from_str(&line).unwrap_or_else(|err| panic!("peer.py printed {line:?}: {err}"))
}

/// The `switchyard` binary: `SWITCHYARD_BIN` if set, else `debug/switchyard`
/// in cargo's target directory (`CARGO_TARGET_DIR`, or `target/`), which
/// `cargo test --workspace` builds (the switchyard package has an integration
/// test).
pub fn switchyard_bin() -> PathBuf {
    let path = std::env::var_os("SWITCHYARD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| repo_root().join("target"), |dir| repo_root().join(dir));
            target.join("debug/switchyard")
        });
    assert!(
        path.is_file(),
        "switchyard binary not found at {}: run `cargo xtask test` or \
         `cargo test --workspace` (they build it), or set SWITCHYARD_BIN",
        path.display()
    );
    path
}

/// A separate `switchyard serve` process on a port the kernel picks, killed
/// on drop.
#[derive(Debug)]
pub struct ServerProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
}

impl ServerProcess {
    /// Starts the binary on port 0 and waits for the start-up line that says
    /// which address it bound.
    pub fn start(redis_url: &str) -> Self {
        Self::start_on(redis_url, 0, &[])
    }

    /// Starts the binary with more `serve` arguments (e.g. `-c FILE`).
    pub fn start_with_args(redis_url: &str, args: &[&str]) -> Self {
        Self::start_on(redis_url, 0, args)
    }

    /// Starts the binary on `port` (0: one the kernel picks), e.g. again on
    /// the port of a process that was killed, so its clients reconnect,
    /// with more `serve` arguments.
    pub fn start_on(redis_url: &str, port: u16, args: &[&str]) -> Self {
        let mut child = Command::new(switchyard_bin())
            .args([
                "serve",
                "-b",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--plugins",
            ])
            .arg(crate::test_plugins_dir())
            .args(args)
            .env("REDIS_URL", redis_url)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the switchyard binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // Reads up to the address and the line saying the plugins (which
        // load in the background once bound) are loaded, then keeps
        // draining so that the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let mut bound = None;
            while reader.read_line(&mut line).is_ok_and(|read| read > 0) {
                bound = bound.or_else(|| listening_addr(&line));
                if let Some(addr) = bound
                    && line.starts_with("  plugins loaded:")
                {
                    let _ = tx.send(addr);
                    break;
                }
                line.clear();
            }
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        match rx.recv_timeout(STARTUP_PATIENCE) {
            Ok(addr) => Self { addr, child },
            Err(err) => {
                let _ = child.kill();
                let status = child.wait().expect("the server's status");
                panic!("switchyard never said where it listens ({err}); it ended with {status}");
            }
        }
    }
}

impl ServerProcess {
    /// Stops the process without it knowing (SIGSTOP), until [`thaw`](Self::thaw).
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen process run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Kills the process with SIGKILL (`kill -9`: no shutdown, no goodbye to
    /// Redis) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in the server's start-up line
/// `Switchyard listening on http://ADDR (...)`.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix("Switchyard listening on http://")?;
    rest.split_whitespace().next()?.parse().ok()
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of masters with no replicas, each a `redis-server
/// --cluster-enabled yes` on loopback TCP ports (client and cluster bus)
/// in a directory of its own, joined with `redis-cli --cluster create`.
/// The nodes run with `cluster-require-full-coverage no`, so the live
/// masters keep serving their slots when one dies. Killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    /// The masters, in the order `redis-cli` gave them slots.
    pub nodes: Vec<RedisServer>,
    /// Each master's slot ranges, read once the cluster is up.
    slots: Vec<Vec<(u16, u16)>>,
}

impl RedisCluster {
    /// Starts `masters` nodes, joins them and waits until every node says
    /// `cluster_state:ok`.
    pub fn start(masters: usize) -> Self {
        let mut cluster = Self::start_unjoined(masters);
        cluster.join();
        cluster
    }

    /// Starts `masters` cluster-enabled nodes that are not a cluster yet
    /// (they serve no slot) until [`join`](Self::join).
    pub fn start_unjoined(masters: usize) -> Self {
        Self {
            nodes: (0..masters).map(|_| Self::start_node()).collect(),
            slots: Vec::new(),
        }
    }

    /// Joins the nodes (`redis-cli --cluster create`, no replicas) and
    /// waits until every node says `cluster_state:ok`.
    pub fn join(&mut self) {
        let nodes = &self.nodes;
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.tcp_port()))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|err| {
                panic!("cannot run redis-cli ({err}): install redis-tools (.ci/run does)")
            });
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let deadline = Instant::now() + STARTUP_PATIENCE;
        for index in 0..self.nodes.len() {
            while !self
                .cli(index, &["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
            {
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not reach cluster_state:ok within {STARTUP_PATIENCE:?}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.slots = (0..self.nodes.len())
            .map(|index| self.own_slots(index))
            .collect();
    }

    /// The slot ranges node `index` serves, from its `CLUSTER NODES` line.
    fn own_slots(&self, index: usize) -> Vec<(u16, u16)> {
        let nodes = self.cli(index, &["CLUSTER", "NODES"]);
        let me = nodes
            .lines()
            .find(|line| line.contains("myself"))
            .expect("a myself line");
        me.split_whitespace()
            .skip(8)
            .filter_map(|range| {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                Some((low.parse().ok()?, high.parse().ok()?))
            })
            .collect()
    }

    /// One cluster node on a free client port and a free bus port; started
    /// again on others should another process take one first.
    fn start_node() -> RedisServer {
        let free_port = || {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free loopback port")
                .port()
        };
        for _ in 0..20 {
            let mut server = RedisServer::new(Some(free_port()));
            let nodes_file = server.dir.path().join("nodes.conf");
            server.extra_args = vec![
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                nodes_file.display().to_string(),
                "--cluster-port".into(),
                free_port().to_string(),
                "--cluster-node-timeout".into(),
                "2000".into(),
                "--cluster-require-full-coverage".into(),
                "no".into(),
            ];
            if let Started::Ready = server.spawn() {
                return server;
            }
        }
        panic!("redis-server found 20 free ports taken in turn");
    }

    /// The seed URLs for `[redis] cluster`.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("redis://127.0.0.1:{}", node.tcp_port()))
            .collect()
    }

    /// `redis-cli` on node `index`'s unix socket; its output.
    pub fn cli(&self, index: usize, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .arg("-s")
            .arg(self.nodes[index].socket())
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`, asked of a live node by an
    /// async `redis-cli`, so a server on the test's runtime keeps running).
    pub async fn keyslot(&self, key: &str) -> u16 {
        let index = (0..self.nodes.len())
            .find(|&i| self.nodes[i].child.is_some())
            .expect("a live node");
        let output = AsyncCommand::new("redis-cli")
            .arg("-s")
            .arg(self.nodes[index].socket())
            .args(["CLUSTER", "KEYSLOT", key])
            .output()
            .await
            .expect("run redis-cli");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("a slot number")
    }

    /// The index of the master that serves `key` (by the slot map read at
    /// start: no resharding happens in the tests).
    pub async fn master_of(&self, key: &str) -> usize {
        let slot = self.keyslot(key).await;
        self.slots
            .iter()
            .position(|ranges| {
                ranges
                    .iter()
                    .any(|&(low, high)| (low..=high).contains(&slot))
            })
            .unwrap_or_else(|| panic!("no master serves slot {slot} ({key})"))
    }

    /// Kills master `index` (SIGKILL).
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// An async cluster connection, for looking at the data.
    pub async fn connection(&self) -> redis::cluster_async::ClusterConnection {
        redis::cluster::ClusterClient::new(self.seeds())
            .expect("valid seeds")
            .get_async_connection()
            .await
            .expect("connect to the test cluster")
    }
}
