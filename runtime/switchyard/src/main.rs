//! `switchyard serve`: parse the configuration, set up logging, bind, run.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use switchyard::Server;
use switchyard::cli::{Cli, Command};
use switchyard::shutdown::Signals;
use switchyard_host::Protocol;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // A missing .env is normal; a broken one is worth saying.
    let dotenv = dotenvy::dotenv();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        // Colour codes only for a terminal, never in a file or a pipe.
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    if let Err(err) = dotenv
        && !err.not_found()
    {
        tracing::error!("cannot read .env: {err}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Command::Serve(args) = &cli.command
        && let Some(workers) = args.workers
    {
        runtime.worker_threads(usize::from(workers));
    }
    let result = runtime
        .build()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(serve(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let args = match cli.command {
        Command::Serve(args) => args,
        Command::Plugins(args) => {
            return tokio::task::spawn_blocking(move || switchyard::admin::print_plugins(&args))
                .await?;
        }
    };
    let config = args.into_config()?;
    let redis = config.redis_url.is_some();
    let addr = std::net::SocketAddr::new(config.bind, config.port);
    let server = Server::build(config).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    let layer = if redis { "Redis" } else { "in-memory" };
    // With `[tls]` the port serves https:// and wss:// only.
    let tls = server.is_tls();
    let http = if tls { "https" } else { "http" };
    println!("Switchyard listening on {http}://{local} ({layer} channel layer)");
    let routes = server.routes();
    if routes.is_empty() {
        println!("  no routes: the plugin directory has no loadable plugins");
    }
    for route in routes {
        let scheme = match (route.protocol, tls) {
            (Protocol::Websocket, false) => "ws",
            (Protocol::Websocket, true) => "wss",
            (Protocol::Http, _) => http,
        };
        println!("  {scheme}://{local}/{}  ->  {}", route.route, route.plugin);
    }
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
