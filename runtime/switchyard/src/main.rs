//! `switchyard serve`: parse the configuration, set up logging, bind, run.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use switchyard::Server;
use switchyard::cli::{Cli, Command, LogFormat};
use switchyard::shutdown::Signals;
use switchyard_host::Protocol;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // A missing .env is normal; a broken one is worth saying.
    let dotenv = dotenvy::dotenv();
    let cli = Cli::parse();
    init_logging(&cli);
    if let Err(err) = dotenv
        && !err.not_found()
    {
        tracing::error!("cannot read .env: {err}");
        return ExitCode::FAILURE;
    }
    // Project commands need no async runtime.
    let project = match &cli.command {
        Command::New(args) => Some(switchyard::scaffold::new_project(args)),
        Command::Build(args) => Some(switchyard::project_build::build_project(args).map(|_| ())),
        _ => None,
    };
    if let Some(result) = project {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Command::Serve(args) = &cli.command
        && let Some(workers) = args.workers
    {
        runtime.worker_threads(usize::from(workers));
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!("starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // `send` and `group-send` say how it went in their exit code.
    let cli = match cli.command {
        Command::Send(args) => {
            return ExitCode::from(runtime.block_on(switchyard::publish_cli::send(args)).code());
        }
        Command::GroupSend(args) => {
            let exit = runtime.block_on(switchyard::publish_cli::group_send(args));
            return ExitCode::from(exit.code());
        }
        command => Cli { command, ..cli },
    };
    let result = runtime.block_on(serve(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stdout for `serve` (info and up unless `RUST_LOG` says
/// otherwise), to stderr for the other commands (warnings and up), whose
/// stdout is their answer.
fn init_logging(cli: &Cli) {
    let serving = matches!(cli.command, Command::Serve(_));
    let default = if serving { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match (cli.log_format, serving) {
        (LogFormat::Json, true) => builder.json().flatten_event(true).init(),
        (LogFormat::Json, false) => builder
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .init(),
        // Colour codes only for a terminal, never in a file or a pipe.
        (LogFormat::Text, true) => builder.with_ansi(std::io::stdout().is_terminal()).init(),
        (LogFormat::Text, false) => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init(),
    }
}

/// A start-up line: as it is in text, or as a JSON object with a
/// `message` (like every log line) under `--log-format json`.
fn announce(format: LogFormat, line: &str) {
    match format {
        LogFormat::Text => println!("{line}"),
        LogFormat::Json => println!(
            "{}",
            serde_json::json!({"level": "INFO", "target": "switchyard", "message": line})
        ),
    }
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let format = cli.log_format;
    let args = match cli.command {
        Command::Serve(args) => args,
        Command::Plugins(args) => {
            return tokio::task::spawn_blocking(move || switchyard::admin::print_plugins(&args))
                .await?;
        }
        Command::Compile(args) => {
            return tokio::task::spawn_blocking(move || switchyard::compile_cli::run(&args))
                .await?;
        }
        Command::Send(_) | Command::GroupSend(_) | Command::New(_) | Command::Build(_) => {
            unreachable!("publish and project commands run in main")
        }
    };
    let config = args.into_config()?;
    let redis = config.redis_url.is_some();
    let addr = std::net::SocketAddr::new(config.bind, config.port);
    // Bind first; plugins compile in the background (their routes answer
    // 503 with Retry-After meanwhile, `/readyz` 503 until all are done).
    let mut server = Server::build_unloaded(config).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    let admin = server.bind_admin().await?;
    let layer = if redis { "Redis" } else { "in-memory" };
    // With `[tls]` the port serves https:// and wss:// only.
    let tls = server.is_tls();
    let http = if tls { "https" } else { "http" };
    announce(
        format,
        &format!("Switchyard listening on {http}://{local} ({layer} channel layer)"),
    );
    if let Some(admin) = admin {
        announce(
            format,
            &format!("  admin API and health on http://{admin} (not on the public port)"),
        );
    }
    let loading = server.load_in_background();
    let host = std::sync::Arc::clone(server.host());
    // Once the plugins are loaded, say what they serve.
    tokio::spawn(async move {
        let report = match loading.await {
            Ok(Ok(report)) => report,
            Ok(Err(err)) => return tracing::error!("loading plugins: {err:#}"),
            Err(err) => return tracing::error!("loading plugins: {err}"),
        };
        announce(
            format,
            &format!(
                "  plugins loaded: {} ready, {} failed",
                report.loaded.len() + report.unchanged.len(),
                report.failed.len()
            ),
        );
        let routes = host.routes();
        if routes.is_empty() {
            announce(
                format,
                "  no routes: the plugin directory has no loadable plugins",
            );
        }
        for route in routes {
            let scheme = match (route.protocol, tls) {
                (Protocol::Websocket, false) => "ws",
                (Protocol::Websocket, true) => "wss",
                (Protocol::Http, _) => http,
            };
            announce(
                format,
                &format!("  {scheme}://{local}/{}  ->  {}", route.route, route.plugin),
            );
        }
    });
    // A second signal during the drain exits at once.
    let signals = Signals::listen();
    let serving = server.serve(listener, signals.nth(1));
    tokio::pin!(serving);
    tokio::select! {
        result = &mut serving => result,
        () = signals.nth(2) => {
            tracing::warn!("second signal: exiting without waiting for sockets");
            Ok(())
        }
    }
}
