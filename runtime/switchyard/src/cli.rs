//! The command line: `switchyard serve`, with Daphne's `-b/--bind` and
//! `-p/--port`. Flags win over the environment, which wins over the config
//! file, which wins over the defaults. A `.env` file in the working
//! directory is read first when present (without overriding variables that
//! are already set).
//!
//! `switchyard send` and `switchyard group-send` publish an event from
//! outside (see [`crate::publish_cli`]). `switchyard new` and `switchyard
//! build` make and build plugin projects ([`crate::scaffold`],
//! [`crate::project_build`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, ConfigError};

/// The `switchyard` command line.
#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Django Channels rebuilt in Rust: WebSocket consumers as WebAssembly components",
    long_about = None
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as plain text or as one JSON object per line
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SWITCHYARD_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (tracing-subscriber's JSON format), with
    /// the connection's span (plugin, route, connection id) under `span`.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the plugins in a directory over HTTP and WebSocket.
    Serve(ServeArgs),
    /// Show the plugins of a running server (its admin API).
    Plugins(PluginsArgs),
    /// Send an event to a channel (Channels' `channel_layer.send`).
    Send(SendArgs),
    /// Send an event to a group (Channels' `channel_layer.group_send`).
    GroupSend(GroupSendArgs),
    /// Precompile components to `.cwasm` (wasmtime's serialised form, for
    /// this server's engine), so the server neither compiles them at start
    /// nor keeps the memory compiling takes.
    Compile(CompileArgs),
    /// Write a new plugin project (Rust, Python or JavaScript).
    New(crate::scaffold::NewArgs),
    /// Build a plugin project into DIR/dist/NAME.wasm and NAME.toml.
    Build(crate::project_build::BuildArgs),
}

/// `switchyard compile [FILE.wasm...]`.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// Components to precompile [default: every `*.wasm` in the plugin directory]
    pub files: Vec<PathBuf>,
    /// Write the `.cwasm` files here [default: beside each `.wasm`, where the server looks]
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Plugin directory [default: plugins]
    #[arg(long, env = "SWITCHYARD_PLUGINS")]
    pub plugins: Option<PathBuf>,
    /// Config file (TOML) of the server that will load them: its `[guest]`
    /// settings shape the engine
    #[arg(short = 'c', long, env = "SWITCHYARD_CONFIG")]
    pub config: Option<PathBuf>,
}

/// `switchyard send CHANNEL EVENT_JSON`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The channel name (as `self.channel_name` in a consumer)
    pub channel: String,
    /// The event: a JSON object with a string "type", e.g. '{"type": "chat.message", "message": "hi"}'
    pub event: String,
    /// How to reach the layer.
    #[command(flatten)]
    pub via: PublishVia,
}

/// `switchyard group-send GROUP EVENT_JSON`.
#[derive(Debug, Args)]
pub struct GroupSendArgs {
    /// The group name
    pub group: String,
    /// The event: a JSON object with a string "type", e.g. '{"type": "chat.message", "message": "hi"}'
    pub event: String,
    /// How to reach the layer.
    #[command(flatten)]
    pub via: PublishVia,
}

/// Where `send` and `group-send` publish: through a running server's admin
/// API (`--url`, `--token`), or straight into Redis (`--redis-url`, or a
/// config file naming Redis hosts). `--url` wins when both are given.
#[derive(Debug, Args)]
pub struct PublishVia {
    /// A running server's base URL (its admin listener when `[admin] bind` is set)
    #[arg(long, env = "SWITCHYARD_URL")]
    pub url: Option<String>,
    /// The admin token (the server's `admin.token`), with --url
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Publish straight into this Redis (the channels_redis layer), no server needed
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Config file whose `[redis]` and `[layer]` sections say how to reach Redis
    #[arg(short = 'c', long, env = "SWITCHYARD_CONFIG")]
    pub config: Option<PathBuf>,
}

/// `switchyard plugins`: the admin API's plugin list.
#[derive(Debug, Args)]
pub struct PluginsArgs {
    /// The server's base URL
    #[arg(long, default_value = "http://127.0.0.1:8000", env = "SWITCHYARD_URL")]
    pub url: String,
    /// The admin token (the server's `admin.token`)
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Print the raw JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// `switchyard serve`: the flags and environment of a server; they win
/// over the config file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to bind [default: 127.0.0.1]
    #[arg(short = 'b', long, env = "SWITCHYARD_BIND")]
    pub bind: Option<IpAddr>,
    /// Port to bind; 0 picks a free one [default: 8000]
    #[arg(short = 'p', long, env = "SWITCHYARD_PORT")]
    pub port: Option<u16>,
    /// Plugin directory: `<name>.wasm` components with optional `<name>.toml`
    /// manifests [default: plugins]
    #[arg(long, env = "SWITCHYARD_PLUGINS")]
    pub plugins: Option<PathBuf>,
    /// Config file (TOML); see docs/configuration.md for its keys
    #[arg(short = 'c', long, env = "SWITCHYARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Redis URL: use the Redis channel layer (channels_redis-compatible) with
    /// this one host; replaces `[redis] hosts`
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Token that enables the admin API (GET /_switchyard/plugins)
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Serve the admin API and health on this address only (`[admin] bind`)
    #[arg(long, env = "SWITCHYARD_ADMIN_BIND")]
    pub admin_bind: Option<SocketAddr>,
    /// Worker threads of the async runtime [default: one per core]. Several
    /// processes sharing a machine (scaled out on one Redis) do best with
    /// their cores split between them.
    #[arg(long, env = "SWITCHYARD_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    /// TLS certificate chain (PEM): serve https:// and wss:// only; needs
    /// --tls-key. Reloaded when the file changes
    #[arg(long, env = "SWITCHYARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM, unencrypted) of --tls-cert
    #[arg(long, env = "SWITCHYARD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

impl ServeArgs {
    /// The validated configuration these arguments describe.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(bind) = self.bind {
            config.bind = bind;
        }
        if let Some(port) = self.port {
            config.port = port;
        }
        if let Some(plugins) = self.plugins {
            config.plugins = plugins;
        }
        if let Some(url) = self.redis_url.filter(|url| !url.is_empty()) {
            config.redis_url = Some(url);
        }
        if let Some(token) = self.admin_token.filter(|token| !token.is_empty()) {
            config.admin.token = Some(token);
        }
        if let Some(admin) = self.admin_bind {
            config.admin.bind = Some(admin);
        }
        if let Some(cert) = self.tls_cert.filter(|p| !p.as_os_str().is_empty()) {
            config.tls.cert = Some(cert);
        }
        if let Some(key) = self.tls_key.filter(|p| !p.as_os_str().is_empty()) {
            config.tls.key = Some(key);
        }
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daphne_style_flags_parse() {
        let cli = Cli::try_parse_from([
            "switchyard",
            "serve",
            "-b",
            "0.0.0.0",
            "-p",
            "9001",
            "--plugins",
            "/tmp",
        ])
        .expect("valid flags");
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        assert_eq!(args.bind, Some(IpAddr::from([0, 0, 0, 0])));
        assert_eq!(args.port, Some(9001));
        let config = args.into_config().expect("valid config");
        assert_eq!(config.port, 9001);
        assert_eq!(config.plugins, PathBuf::from("/tmp"));
    }

    #[test]
    fn publish_commands_and_log_format_parse() {
        let cli = Cli::try_parse_from([
            "switchyard",
            "--log-format",
            "json",
            "group-send",
            "chat_lobby",
            r#"{"type": "chat.message"}"#,
            "--redis-url",
            "redis://127.0.0.1:6379",
        ])
        .expect("valid flags");
        assert_eq!(cli.log_format, LogFormat::Json);
        let Command::GroupSend(args) = cli.command else {
            panic!("expected group-send");
        };
        assert_eq!(args.group, "chat_lobby");
        assert_eq!(
            args.via.redis_url.as_deref(),
            Some("redis://127.0.0.1:6379")
        );
        let err = Cli::try_parse_from(["switchyard", "--log-format", "xml", "serve"])
            .expect_err("unknown format");
        assert!(err.to_string().contains("xml"), "{err}");
    }

    #[test]
    fn admin_bind_flag_sets_the_admin_listener() {
        let cli = Cli::try_parse_from([
            "switchyard",
            "serve",
            "--plugins",
            "/tmp",
            "--admin-bind",
            "127.0.0.1:9100",
        ])
        .expect("valid flags");
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        let config = args.into_config().expect("valid config");
        assert_eq!(
            config.admin.bind,
            Some(SocketAddr::from(([127, 0, 0, 1], 9100)))
        );
        let err = Cli::try_parse_from(["switchyard", "serve", "--admin-bind", "nowhere"])
            .expect_err("not an address");
        assert!(err.to_string().contains("nowhere"), "{err}");
    }

    #[test]
    fn bad_port_is_a_clear_error() {
        let err = Cli::try_parse_from(["switchyard", "serve", "-p", "99999"]).expect_err("bad");
        assert!(err.to_string().contains("99999"), "{err}");
    }

    #[test]
    fn a_tls_cert_without_its_key_is_an_error_naming_the_key() {
        let cli = Cli::try_parse_from([
            "switchyard",
            "serve",
            "--plugins",
            "/tmp",
            "--tls-cert",
            "/tmp/cert.pem",
        ])
        .expect("valid flags");
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        let err = args.into_config().expect_err("no key").to_string();
        assert!(err.contains("tls.key"), "{err}");
    }

    #[test]
    fn workers_are_one_or_more() {
        let cli = Cli::try_parse_from(["switchyard", "serve", "--workers", "1"]).expect("valid");
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        assert_eq!(args.workers, Some(1));
        let err = Cli::try_parse_from(["switchyard", "serve", "--workers", "0"]).expect_err("zero");
        assert!(err.to_string().contains("--workers"), "{err}");
    }
}
